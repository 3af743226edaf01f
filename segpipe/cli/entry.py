"""The entry point: parse, dispatch to the command, turn segpipe's errors into one line and an exit code."""

from __future__ import annotations

import os
import sys
import warnings

from segpipe.cli.output import show_warning
from segpipe.cli.parser import build_parser
from segpipe.cli.process import limit_malloc_arenas
from segpipe.errors import SegpipeError


def main(argv: list[str] | None = None) -> int:
    """Run the ``segpipe`` command line ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the ephemeral server
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # MLflow's run URLs would show user:password@
    args = build_parser().parse_args(argv)
    warnings.showwarning = show_warning
    try:
        return int(args.handler(args) or 0)
    except SegpipeError as exc:
        print(f"segpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segpipe: interrupted", file=sys.stderr)
        return 130


def run_and_exit() -> None:
    """The ``segpipe`` command: ``main``, then exit without tearing the interpreter down.

    Every output is committed before ``main`` returns, and the atexit handlers still run (Prefect drains its
    queues, temporary folders go); what is skipped is Python's module-by-module finalisation of torch, MLflow,
    Prefect and Dask, which costs a second or more after every run.
    """
    limit_malloc_arenas()
    code = main()
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
