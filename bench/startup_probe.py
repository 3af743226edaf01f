"""What ``segpipe run`` does besides the pixels, step by step in one process, each step timed by name.

    python -m bench.startup_probe IMAGE ... --truth TRUTH ... --out OUT --tracking-uri URI

The steps are the command's own calls in its order (imports, plan, Prefect's temporary server, the flow and task
runs, MLflow's store, the cluster, the stages, then each image's fixed work and the batch's), made directly so each
is timed alone. Prints one JSON object: ``steps`` (seconds per step), ``per_image`` (seconds per image of the
fixed work over ``count`` images) and ``stages`` (the images' stage seconds, for scale).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

STEPS: dict[str, float] = {}


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time the block as ``name`` (added to what that name already has)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STEPS[name] = STEPS.get(name, 0.0) + time.perf_counter() - started


def timed_each(name: str, items: list[Any], call: Callable[[Any], Any]) -> list[Any]:
    """``call`` on every item, all the calls timed together as ``name``."""
    with step(name):
        return [call(item) for item in items]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.startup_probe")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--truth", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="segpipe-startup")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with step("import segpipe.cli"):
        from segpipe.cli.parser import build_parser

        build_parser()
    with step("import torch"):
        import torch  # noqa: F401
    with step("import segpipe stages"):
        from segpipe.stages.plan import plan_batch
        from segpipe.stages.settings import RunSettings
    settings = RunSettings(out=args.out)
    with step("plan (inputs opened, model resolved)"):
        plan = plan_batch(args.images, args.truth, settings, args.tracking_uri)
    with step("model load (predictor)"):
        from segpipe.models import load_predictor

        load_predictor(plan.model, settings.inference.device)
    with step("import prefect + flow module"):
        import flows.segment_batch  # noqa: F401  (the flow path's import cost)
    prefect_runs = prefect_steps(len(plan.jobs))
    with step("import mlflow"):
        from mlflow.tracking import MlflowClient
    with step("mlflow store open"):
        from segpipe.tracking import create_sqlite_store

        create_sqlite_store(args.tracking_uri)
        MlflowClient(tracking_uri=args.tracking_uri).get_experiment_by_name(args.experiment)
    reports, stages = pixels(plan, settings)
    per_image = fixed_work(plan, settings, reports, args)
    print(
        json.dumps({"steps": STEPS, "per_image": per_image, "count": len(plan.jobs), "stages": stages, **prefect_runs})
    )
    return 0


def prefect_steps(count: int) -> dict[str, Any]:
    """Prefect's temporary server, an empty flow run and one with ``count`` no-op task runs."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.prefect_api import drain_prefect_workers, launch_server, wait_until_healthy

    with step("prefect server start"):
        server = wait_until_healthy(launch_server(), 60)

    @task(name="noop", cache_policy=NO_CACHE)
    def noop(index: int) -> int:
        return index

    @flow(name="startup-probe", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
    def probe(tasks: int) -> int:
        return sum(future.result() for future in [noop.submit(i) for i in range(tasks)])

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        probe(0)  # the first flow run of a process pays for its client's set-up
        with step("prefect flow run (empty)"):
            probe(0)
        started = time.perf_counter()
        probe(count)
        with_tasks = time.perf_counter() - started
        with step("prefect drain"):
            drain_prefect_workers()
    with step("prefect server stop"):
        server.stop()
    return {"prefect_task_run_each": max(0.0, with_tasks - STEPS["prefect flow run (empty)"]) / max(1, count)}


def pixels(plan: Any, settings: Any) -> tuple[list[Any], list[dict[str, float]]]:
    """The images' stages on a local cluster, as the flow's image task runs them (without Prefect)."""
    from segpipe.cluster import ClusterSpec, distributed_executor, open_cluster, register_model
    from segpipe.models import model_payload

    cluster = open_cluster(ClusterSpec.parse("local", None))
    with step("cluster start"):
        handle = cluster.__enter__()
    try:
        with step("model sent to workers"):
            register_model(handle.client, plan.model, model_payload(plan.model))
        executor = distributed_executor(handle.client, False, handle.task_resources, min_slots=handle.workers)
        from flows import batch

        run_settings = batch._with_torch_threads(settings, handle)
        with step("stages and image commit (pixels)"):
            reports = [batch.segment_one_image(job, plan, run_settings, executor) for job in plan.jobs]
    finally:
        with step("cluster stop"):
            cluster.__exit__(None, None, None)
    return reports, [dict(report.seconds) for report in reports]


def fixed_work(plan: Any, settings: Any, reports: list[Any], args: argparse.Namespace) -> dict[str, float]:
    """Each image's fixed work and the batch's, redone on the finished images; per-image seconds by name."""
    from segpipe.io.images import open_image
    from segpipe.io.ledger import write_commit
    from segpipe.preview import render_preview
    from segpipe.stages.ingest import stored_stats
    from segpipe.stages.report import finished_report, write_batch_report, write_json
    from segpipe.stages.results import RunInfo, append_results, summarize_run, write_batch_json
    from segpipe.storage import location
    from segpipe.tracking import batch_log, tracker_for
    from segpipe.tracking.live_log import LiveBatchLog

    jobs, names = list(plan.jobs), plan.model.card.class_names
    pairs = list(zip(jobs, reports, strict=True))

    def preview(pair: tuple[Any, Any]) -> None:
        job, report = pair
        png = render_preview(
            open_image(job.image.path), open_image(report.mask), job.truth, stored_stats(job.store), class_names=names
        )
        location(job.path("preview.png")).write_bytes(png)

    timed_each("preview.png", pairs, preview)
    timed_each("metrics.json", pairs, lambda pair: write_json(pair[0].path("metrics.json"), pair[1].to_json()))
    timed_each(
        "done.json", pairs, lambda pair: write_commit(location(pair[0].out_dir), pair[0].done_key, pair[1].to_json())
    )
    timed_each("done.json read back (resume check)", jobs, finished_report)
    run = RunInfo(uuid.uuid4().hex, datetime.now(UTC), plan.model)
    with step("batch report files"):
        files = write_batch_report(plan, settings.out, reports, settings.evaluation)
    with step("batch.json"):
        summary = summarize_run(settings.out, plan, run, tuple(reports), 1.0, None)
        write_batch_json(settings.out, summary, tuple(reports))
    with step("results table"):
        append_results(settings.out, run, reports, names)
    with step("mlflow log batch"):  # as a run logs it: each image's run in the background, then the batch's end
        params = batch_log.batch_params(plan, settings, "probe", run.run_id)
        lineage = batch_log.batch_lineage(plan, params)
        live = LiveBatchLog(lambda: tracker_for(args.tracking_uri, args.experiment), plan, params, lineage)
        try:
            for report in reports:
                live.log_image(report)
            live.finish(summary, reports, files)
        finally:
            live.close()
    count = max(1, len(jobs))
    fixed = ("preview.png", "metrics.json", "done.json", "done.json read back (resume check)")
    batch = ("batch report files", "batch.json", "results table", "mlflow log batch")
    return {name: STEPS[name] / count for name in (*fixed, *batch)}


if __name__ == "__main__":
    raise SystemExit(main())
