"""Stage retries inside an image's task: transient faults are tried again, bad input is not."""

from __future__ import annotations

import pytest

from segpipe.errors import InputError, TrackingError
from segpipe.stages.retry import is_transient, retrying


class Flaky:
    """A stage that raises each of ``faults`` in turn, then returns how many calls it took."""

    def __init__(self, *faults: Exception) -> None:
        self.faults = list(faults)
        self.calls = 0

    def __call__(self, value: int) -> int:
        self.calls += 1
        if self.faults:
            raise self.faults.pop(0)
        return value + self.calls


def test_a_transient_fault_is_tried_again_with_the_same_arguments() -> None:
    stage = Flaky(OSError("connection reset"), ConnectionError("dropped"))
    assert retrying(stage, 2, delay_seconds=0)(10) == 13


def test_bad_input_is_not_tried_again() -> None:
    stage = Flaky(InputError("scene.tif: not a TIFF"))
    with pytest.raises(InputError):
        retrying(stage, 2, delay_seconds=0)(1)
    assert stage.calls == 1


def test_a_tracking_outage_is_tried_again() -> None:
    stage = Flaky(TrackingError("MLflow at http://127.0.0.1:5000: unreachable"))
    assert retrying(stage, 1, delay_seconds=0)(0) == 2


def test_the_last_fault_is_raised_when_the_tries_run_out() -> None:
    stage = Flaky(OSError("first"), OSError("second"), OSError("third"))
    with pytest.raises(OSError, match="second"):
        retrying(stage, 1, delay_seconds=0)(0)
    assert stage.calls == 2


@pytest.mark.parametrize(
    ("fault", "transient"),
    [(OSError("x"), True), (RuntimeError("x"), True), (InputError("x"), False), (TrackingError("x"), True)],
)
def test_is_transient(fault: Exception, transient: bool) -> None:
    assert is_transient(fault) is transient
