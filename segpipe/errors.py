"""One error hierarchy; every message names the file (or parameter) and the fault.

The command line prints ``segpipe: error: <message>`` and exits with the class's ``exit_code``.
"""

from __future__ import annotations

MAX_ERROR_CHARS = 300  # the longest cause ``one_line`` quotes; longer ones end in "..."


class SegpipeError(Exception):
    """Base class of every error segpipe raises on purpose."""

    exit_code = 1


class InputError(SegpipeError, ValueError):
    """An input image, ground truth or Zarr array is missing, unreadable or inconsistent."""

    exit_code = 2


class ConfigError(SegpipeError, ValueError):
    """A parameter has a value segpipe cannot work with."""

    exit_code = 2


class ModelError(SegpipeError, ValueError):
    """A model file cannot be loaded safely, or does not behave like a segmentation model."""

    exit_code = 3


class OutputError(SegpipeError, OSError):
    """An output location cannot be written."""

    exit_code = 4


class TrackingError(SegpipeError, RuntimeError):
    """The experiment tracker (MLflow) cannot be reached or refused a write."""

    exit_code = 5


class SegpipeWarning(UserWarning):
    """Something works but not as well as it could (e.g. a halo below the receptive field)."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its last line after any (TorchScript) traceback, whitespace collapsed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    if not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
