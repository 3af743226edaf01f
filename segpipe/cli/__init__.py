"""The ``segpipe`` command: ``demo``, ``run``, ``eval``, ``report``, ``model register`` and ``runs show``.

Inputs are validated before Prefect, Dask or MLflow start, so bad input costs one line and writes nothing:
``segpipe: error: <file>: <fault>`` on stderr, and the exit code of the error's class (see segpipe.errors).

``parser`` defines every option, ``settings`` turns them into ``RunSettings``, one module per command
(``run``, ``evaluate``, ``compare``, ``model``, ``runs``) does its work, ``output`` prints, and ``entry`` and
``process`` hold what the process itself needs (the entry point, malloc arenas, quiet service logs).
"""

from segpipe.cli.entry import main, run_and_exit
from segpipe.cli.parser import build_parser

__all__ = ["build_parser", "main", "run_and_exit"]
