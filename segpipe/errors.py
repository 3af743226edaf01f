"""One error hierarchy; every message names the file (or parameter) and the fault.

The command line prints ``segpipe: error: <message>`` and exits with the class's ``exit_code``.
"""

from __future__ import annotations


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
