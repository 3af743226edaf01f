"""``segpipe run`` and ``segpipe demo``: plan the batch, run it (as the batch flow or in process), print its result.

Planning checks every input and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.cli.output import log, print_table
from segpipe.cli.process import quiet_service_logs
from segpipe.cli.settings import run_settings

if TYPE_CHECKING:
    from segpipe.stages.results import BatchResult
    from segpipe.stages.settings import RunSettings

DEMO_SIZE = 4096


def demo_command(args: argparse.Namespace) -> int:
    """``segpipe demo``: write a synthetic sample with its truth, then segment and score it."""
    from segpipe.synthetic import write_sample

    if args.size <= 0:
        from segpipe.errors import ConfigError

        raise ConfigError(f"--size must be a positive integer, got {args.size}")
    workdir = Path(args.workdir)
    settings = run_settings(args, "builtin", str(workdir / "out"))
    log(args, f"generating a {args.size} x {args.size} sample (seed {args.seed}) in {workdir / 'sample'}")
    image, truth = write_sample(workdir / "sample", args.size, args.seed)
    return _launch(args, [str(image)], [str(truth)], settings)


def run_command(args: argparse.Namespace) -> int:
    """``segpipe run``: segment the given images (and score them against their truth)."""
    settings = run_settings(args, args.model, args.out)
    images, truths = expand_images(args)
    return _launch(args, images, truths, settings)


def expand_images(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """IMAGE arguments with globs and folders expanded, and truths from --truth or --truth-pattern."""
    from segpipe.errors import ConfigError
    from segpipe.storage.listing import expand_image_args, pair_truths

    images = expand_image_args(args.images)
    if args.truth_pattern is None:
        return images, args.truth
    if args.truth:
        raise ConfigError("give --truth or --truth-pattern, not both")
    pairs = pair_truths(images, args.truth_pattern, require=True)
    return [image for image, _ in pairs], [str(truth) for _, truth in pairs]


def _launch(args: argparse.Namespace, images: list[str], truths: list[str] | None, settings: RunSettings) -> int:
    from flows.prefect_api import early_prefect, uses_prefect
    from segpipe.tracking import start_importing

    start_importing()  # MLflow's import in a child, beside torch's here

    with early_prefect(uses_prefect(args.prefect)) as prefect:  # a server starts once the inputs open, if needed
        result, wall_seconds = _plan_and_segment(args, images, truths, settings, prefect)
    if args.json:
        print(json.dumps({**result.to_json(), "wall_seconds": wall_seconds}, indent=2))
    else:
        print_table(result, wall_seconds)
    for failure in result.failures:
        print(f"segpipe: error: {failure.error}", file=sys.stderr)
    return result.failures[0].exit_code if result.failures else 0


def _plan_and_segment(
    args: argparse.Namespace, images: list[str], truths: list[str] | None, settings: RunSettings, prefect: Any
) -> tuple[BatchResult, float]:
    """Plan (every input checked, nothing written), then run the plan (as a flow where Prefect is used).

    Returns its result and the flow's wall time.
    """
    from segpipe.stages.plan import plan_batch
    from segpipe.storage import public_url
    from segpipe.tracking import check_reachable, check_tracking_uri, default_tracking_uri, warm_up

    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    check_reachable(tracking_uri)  # a down server: exit 5 now, not after MLflow's minutes of retries

    # Prefect's temporary server (if needed) comes up while the model loads
    plan = plan_batch(images, truths, settings, tracking_uri, inputs_readable=prefect.start)  # writes nothing
    from segpipe.cluster import ClusterSpec

    ClusterSpec.parse(args.cluster, args.workers)  # a bad --cluster fails here, before anything starts
    # only now may MLflow's child open (create) the store: a run refused above leaves no mlflow.db behind, however
    # far the child's import got meanwhile (it has been importing MLflow since the command started)
    warm_up(tracking_uri, args.experiment)
    log(
        args,
        f"{len(plan.jobs)} image(s), model {plan.model.card.name}, chunk {plan.chunk}, tile {plan.tile}, "
        f"halo {plan.halo}, cluster {args.cluster}; MLflow at {public_url(tracking_uri)}",
    )
    from flows.batch import run_plan

    started = time.perf_counter()
    with prefect.api():
        quiet_service_logs()  # after Prefect's import (if any), which configures its loggers
        result = run_plan(
            plan,
            settings,
            prefect=prefect.enabled,
            cluster=args.cluster,
            workers=args.workers,
            tracking_uri=tracking_uri,
            experiment=args.experiment,
            show_progress=not args.json and sys.stderr.isatty(),
        )
    return result, time.perf_counter() - started
