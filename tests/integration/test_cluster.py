"""The distributed executor the flows use, against a real scheduler."""

from __future__ import annotations

import dask
import pytest
from distributed import Client

from segpipe.cluster import distributed_executor

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("show_progress", [False, True])
def test_executor_returns_results_in_order_with_or_without_a_progress_bar(
    dask_cluster: str, show_progress: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: with a terminal the progress bar used distributed.as_completed, which needs a *default*
    client; segpipe's client is not the default, so ``segpipe demo`` crashed on a TTY."""
    with Client(dask_cluster, set_as_default=False) as client:
        run = distributed_executor(client, show_progress=show_progress)
        square = dask.delayed(lambda x: x * x, pure=True)
        assert run([square(i) for i in range(12)], "test") == [i * i for i in range(12)]
