"""Serve the nightly flow from one machine, without a work pool or a worker.

This process registers the deployment, keeps its schedule and runs each flow run itself (until interrupted).

    python -m flows.serve --input s3://bucket/in/ --out s3://bucket/out [--cron "0 2 * * *"] [--truth-pattern ...]

It needs a Prefect server to talk to (``infra/prefect/server.sh`` and ``PREFECT_PROFILE=segpipe-server``, or
``PREFECT_API_URL``). For a team, ``prefect deploy`` on ``prefect.yaml`` and a worker are the way (README).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from flows.nightly import nightly

DEFAULT_CRON = "0 2 * * *"
DESCRIPTION = "Serve the nightly flow (segment-nightly) on a schedule from this process, without a work pool or worker."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: the nightly flow's parameters, the schedule and the deployment's name."""
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=DESCRIPTION)
    parser.add_argument("--input", required=True, help="glob, folder/prefix or image URL")
    parser.add_argument("--out", required=True, help="output folder or prefix")
    parser.add_argument("--truth-pattern", help="e.g. '{dir}/{stem}_truth.tif' (default: no truths)")
    parser.add_argument("--model", default="builtin", help="builtin, a model file or models:/NAME@ALIAS")
    parser.add_argument("--cluster", default="local", help="local, cuda, slurm, kubernetes or tcp://HOST:PORT")
    parser.add_argument("--workers", type=int, help="worker processes, GPUs, jobs or pods")
    parser.add_argument("--chunk", type=int, default=1024, help="Zarr chunk edge (default: 1024)")
    parser.add_argument("--halo", type=int, help="trim halo (default: the model's)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: no tracking)")
    parser.add_argument("--experiment", default="segpipe-nightly", help="MLflow experiment")
    parser.add_argument(
        "--settings", type=json.loads, help="other RunSettings fields as JSON, e.g. '{\"export_tiff\": true}'"
    )
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule, UTC (default: {DEFAULT_CRON!r})")
    parser.add_argument("--name", default="segment-nightly-served", help="deployment name")
    return parser.parse_args(argv)


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The nightly flow's parameters from the command line (unset optional ones left to the flow's defaults)."""
    values = {
        "input": args.input,
        "out": args.out,
        "truth_pattern": args.truth_pattern,
        "model": args.model,
        "cluster": args.cluster,
        "workers": args.workers,
        "chunk": args.chunk,
        "halo": args.halo,
        "tracking_uri": args.tracking_uri,
        "experiment": args.experiment,
        "settings": args.settings,
    }
    return {key: value for key, value in values.items() if value is not None}


def main(argv: list[str] | None = None) -> None:
    """Serve ``segment-nightly`` on ``--cron`` (UTC), one flow run at a time."""
    args = parse_args(argv)
    nightly.serve(
        name=args.name, cron=args.cron, parameters=parameters(args), global_limit=1, tags=["segpipe", "nightly"]
    )


if __name__ == "__main__":  # the guard also keeps Dask's spawned worker processes from serving again
    main()
