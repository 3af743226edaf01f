"""The ``segpipe`` command: ``demo``, ``run``, ``eval``, ``report``, ``model register`` and ``runs show``.

Inputs are validated before Prefect, Dask or MLflow start, so bad input costs one line and writes nothing:
``segpipe: error: <file>: <fault>`` on stderr, and the exit code of the error's class (see segpipe.errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.config import (
    PAD_MODES,
    PRECISIONS,
    STITCH_MODES,
    EvalConfig,
    InferenceConfig,
    LeaseConfig,
    TilingConfig,
)
from segpipe.errors import SegpipeError, SegpipeWarning

if TYPE_CHECKING:
    from segpipe.metrics import Scores
    from segpipe.stages.results import BatchResult
    from segpipe.stages.settings import RunSettings

DEMO_SIZE = 4096
TRACKING_HELP = "MLflow URI (default: $MLFLOW_TRACKING_URI, else mlflow.db in $SEGPIPE_HOME)"


MALLOC_ARENAS = 2  # glibc's default is 8 per core; bench: 8192^2 peak RSS 1020-1037 -> 965 MiB, same speed


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads this process starts (its Dask workers are threads): each thread
    otherwise gets its own arena, whose freed memory stays in the process. No-op without glibc, or when
    ``MALLOC_ARENA_MAX`` is set (glibc read it already). Returns whether the cap was set."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX in malloc.h
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the ephemeral server
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # MLflow's run URLs would show user:password@
    parser = _parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.handler(args) or 0)
    except SegpipeError as exc:
        print(f"segpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segpipe: interrupted", file=sys.stderr)
        return 130


RUN_EPILOG = """\
examples:
  segpipe run scene.tif --truth scene_labels.tif --out results/
  segpipe run s3://bucket/in/a.tif s3://bucket/in/b.tif --out s3://bucket/out/ --json > report.json

outputs (under --out, one folder per image):
  NAME/NAME.ome.zarr            OME-Zarr: the input (0, 1, ...) and the mask (labels/mask/0, 1, ...)
  NAME/metrics.json             per-class IoU/Dice (with --truth), seconds per stage
  NAME/preview.png              image | prediction | truth
  report/, batch.json           batch report and metrics
The run is logged to MLflow: --tracking-uri, else $MLFLOW_TRACKING_URI, else {home}/mlflow.db.

exit codes:
  0 done   2 bad input or parameter   3 model   4 output location   5 tracking server   130 interrupted
"""


def _parser() -> argparse.ArgumentParser:
    from segpipe import __version__

    parser = argparse.ArgumentParser(prog="segpipe", description="Batch semantic segmentation of large images.")
    parser.add_argument("--version", action="version", version=f"segpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a sample image with truth and run the batch flow on it")
    demo.add_argument("--size", type=int, default=DEMO_SIZE, help="edge of the square sample (default 4096)")
    demo.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    demo.add_argument("--workdir", default="segpipe-demo", help="where the sample and outputs go")
    _add_run_options(demo, with_io=False)
    demo.set_defaults(handler=_demo)

    run = commands.add_parser(
        "run",
        help="run the batch flow on your images",
        description="Segment IMAGEs with a model, stitch full-size masks, score them against --truth.",
        epilog=RUN_EPILOG.format(home=_home_hint()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "images", nargs="+", metavar="IMAGE", help="TIFF/BigTIFF files or Zarr arrays: paths, URLs (s3://...) or globs"
    )
    run.add_argument("--truth", nargs="+", metavar="TRUTH", help="one label image per IMAGE, in order")
    run.add_argument(
        "--truth-pattern",
        metavar="PATTERN",
        help="find each image's truth by name instead, e.g. '{dir}/{stem}_truth.tif' ({dir}, {stem}, {name})",
    )
    run.add_argument("--out", default="segpipe-out", help="output folder or URL (default ./segpipe-out)")
    run.add_argument(
        "--model",
        default="builtin",
        help="builtin, baseline[:otsu|:T], a TorchScript/ONNX/state_dict file or URL, or models:/NAME@ALIAS",
    )
    _add_run_options(run, with_io=True)
    run.set_defaults(handler=_run)

    evaluate = commands.add_parser("eval", help="IoU/Dice of a predicted label image against truth")
    evaluate.add_argument(
        "prediction", metavar="PRED", help="predicted labels: a segpipe .ome.zarr folder, a Zarr array or a TIFF"
    )
    evaluate.add_argument("truth", metavar="TRUTH", help="true labels (TIFF or Zarr), same height and width")
    evaluate.add_argument("--num-classes", type=int, help="default: largest label in either image + 1")
    evaluate.add_argument("--ignore-index", type=int, help="truth label left out of every metric")
    evaluate.add_argument("--truth-instances", action="store_true", help="truth holds instance ids: id>0 = class 1")
    evaluate.add_argument("--truth-mapping", metavar="FILE", help="JSON {instance id: class} for instance truth")
    evaluate.add_argument("--chunk", type=int, default=1024, help="pixels per chunk edge read at a time")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_eval)

    report = commands.add_parser("report", help="compare MLflow batch runs side by side (which model won)")
    report.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="batch runs to compare (default: latest)")
    report.add_argument("--tracking-uri", help=TRACKING_HELP)
    report.add_argument("--experiment", default="segpipe", help="with no RUN_ID: its latest batch runs")
    report.add_argument("--last", type=int, default=5, help="with no RUN_ID: how many runs (default 5)")
    report.add_argument("--json", action="store_true", help="print the runs as JSON")
    report.set_defaults(handler=_report)
    _add_model_commands(commands)
    _add_runs_commands(commands)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, with_io: bool) -> None:
    tiling, inference = TilingConfig(), InferenceConfig()
    parser.add_argument(
        "--chunk",
        type=int,
        default=tiling.chunk,
        help=f"Zarr chunk edge: the unit written and resumed ({tiling.chunk})",
    )
    parser.add_argument("--tile", type=int, default=tiling.tile, help=f"model input edge in a chunk ({tiling.tile})")
    parser.add_argument("--halo", type=int, help="trim: context pixels per side, trimmed after (default: model's)")
    parser.add_argument(
        "--stitch",
        choices=STITCH_MODES,
        default="trim",
        help="trim: keep tile centres (default); gaussian: blend overlapping windows",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="gaussian: window overlap in [0, 1) (0.5)")
    parser.add_argument(
        "--pad-mode",
        choices=PAD_MODES,
        default="symmetric",
        help="how the image is extended past its border (default symmetric mirror)",
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=inference.batch_size,
        help="tiles per forward pass, or auto: 1 on a CPU, on a GPU what its free memory holds (default auto)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="fp32 (default), or bf16/fp16 autocast (GPUs)"
    )
    parser.add_argument(
        "--cluster",
        default="local",
        metavar="KIND",
        help="local (default), cuda (a worker per GPU), slurm, kubernetes, or a scheduler address tcp://HOST:PORT",
    )
    parser.add_argument("--workers", type=int, help="workers (local: threads, default one per core), GPUs, jobs, pods")
    parser.add_argument("--tracking-uri", help=TRACKING_HELP)
    parser.add_argument("--experiment", default="segpipe", help="MLflow experiment name (default segpipe)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--export-tiff",
        action="store_true",
        help="also write each mask as a tiled (Geo)TIFF, with the input's georeferencing",
    )
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also store class probabilities (K, Y, X) float16 in the OME-Zarr",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace masks in the output made with another model, input or settings",
    )
    _add_lease_options(parser)
    if with_io:
        parser.add_argument(
            "--trust-model-pickle",
            action="store_true",
            help="allow a fully pickled torch model (runs its code: only for files you made)",
        )
        parser.add_argument("--ignore-index", type=int, help="truth label left out of every metric")
        parser.add_argument("--truth-mapping", metavar="FILE", help="JSON {instance id: class} for instance truth")
        parser.add_argument("--truth-instances", action="store_true", help="truth holds instance ids: id>0 = 1")


def _add_lease_options(parser: argparse.ArgumentParser) -> None:
    """``--wait``, ``--no-lease``, ``--lease-seconds``: how a run claims its outputs against other runs."""
    lease = LeaseConfig()
    parser.add_argument(
        "--wait", action="store_true", help="wait for another run writing the same output instead of refusing"
    )
    parser.add_argument(
        "--no-lease",
        action="store_true",
        help="take no lease on the outputs (for stores without conditional writes; only one run may write there)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=lease.seconds,
        help=f"how long an output's lease lasts unless renewed: a killed run's outputs free then ({lease.seconds:g})",
    )


def _batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a number (InferenceConfig checks that it is positive)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}") from None


def _settings(args: argparse.Namespace, model: str, out: str) -> RunSettings:
    """The run's settings from the command line, validated now, before anything starts."""
    from segpipe.stages.settings import RunSettings

    tiling = TilingConfig(
        chunk=args.chunk,
        tile=args.tile,
        halo=args.halo,
        stitch=args.stitch,
        overlap=args.overlap,
        pad_mode=args.pad_mode,
    )
    inference = InferenceConfig(batch_size=args.batch_size, device=args.device, precision=args.precision)
    if args.workers is not None and args.workers <= 0:
        from segpipe.errors import ConfigError

        raise ConfigError(f"--workers must be a positive integer, got {args.workers}")
    mapping = _read_mapping(getattr(args, "truth_mapping", None))
    return RunSettings(
        model=model,
        out=_absolute(out),  # reports and MLflow params name absolute paths
        tiling=tiling,
        inference=inference,
        evaluation=EvalConfig(getattr(args, "ignore_index", None), getattr(args, "truth_instances", False), mapping),
        overwrite=args.overwrite,
        trust_model_pickle=getattr(args, "trust_model_pickle", False),
        export_tiff=args.export_tiff,
        save_probabilities=args.save_probabilities,
        lease=LeaseConfig(enabled=not args.no_lease, wait=args.wait, seconds=args.lease_seconds),
    )


def _read_mapping(path: str | None) -> tuple[tuple[int, int], ...] | None:
    """``--truth-mapping FILE``: a JSON object from instance id to class, e.g. ``{"17": 1, "18": 2}``."""
    if path is None:
        return None
    from segpipe.errors import InputError

    try:
        raw = json.loads(Path(path).read_text())
        return tuple(sorted((int(i), int(c)) for i, c in raw.items()))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise InputError(f"{path}: not a JSON object from instance id to class ({exc})") from None


def _demo(args: argparse.Namespace) -> int:
    from segpipe.synthetic import write_sample

    if args.size <= 0:
        from segpipe.errors import ConfigError

        raise ConfigError(f"--size must be a positive integer, got {args.size}")
    workdir = Path(args.workdir)
    settings = _settings(args, "builtin", str(workdir / "out"))
    _log(args, f"generating a {args.size} x {args.size} sample (seed {args.seed}) in {workdir / 'sample'}")
    image, truth = write_sample(workdir / "sample", args.size, args.seed)
    return _launch(args, [str(image)], [str(truth)], settings)


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args, args.model, args.out)
    images, truths = _inputs(args)
    return _launch(args, images, truths, settings)


def _inputs(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """IMAGE arguments with globs expanded (``s3://bucket/in/*.tif``), and truths from --truth or --truth-pattern."""
    from segpipe.errors import ConfigError, InputError
    from segpipe.storage.listing import expand_inputs, is_glob, pair_truths

    images: list[str] = []
    for item in args.images:
        found = expand_inputs(item) if is_glob(item) else [item]
        if not found:
            raise InputError(f"{item}: matches no image")
        images += found
    if args.truth_pattern is None:
        return images, args.truth
    if args.truth:
        raise ConfigError("give --truth or --truth-pattern, not both")
    pairs = pair_truths(images, args.truth_pattern, require=True)
    return [image for image, _ in pairs], [str(truth) for _, truth in pairs]


def _launch(args: argparse.Namespace, images: list[str], truths: list[str] | None, settings: RunSettings) -> int:
    from flows.prefect_api import early_prefect

    with early_prefect() as prefect:  # its server starts once the inputs open, while the model loads
        result, wall_seconds = _plan_and_segment(args, images, truths, settings, prefect)
    if args.json:
        print(json.dumps({**result.to_json(), "wall_seconds": wall_seconds}, indent=2))
    else:
        _print_table(result, wall_seconds)
    for failure in result.failures:
        print(f"segpipe: error: {failure.error}", file=sys.stderr)
    return result.failures[0].exit_code if result.failures else 0


def _plan_and_segment(
    args: argparse.Namespace, images: list[str], truths: list[str] | None, settings: RunSettings, prefect: Any
) -> tuple[BatchResult, float]:
    """Plan (every input checked, nothing written), then run the plan as a flow; returns its result and the
    flow's wall time."""
    from segpipe.runs import check_reachable
    from segpipe.stages.plan import plan_batch
    from segpipe.storage import public_url
    from segpipe.tracking import check_tracking_uri, default_tracking_uri

    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    check_reachable(tracking_uri)  # a down server: exit 5 now, not after MLflow's minutes of retries
    plan = plan_batch(images, truths, settings, tracking_uri, inputs_readable=prefect.start)  # writes nothing
    from segpipe.cluster import ClusterSpec

    ClusterSpec.parse(args.cluster, args.workers)  # a bad --cluster fails here, before anything starts
    _log(
        args,
        f"{len(plan.jobs)} image(s), model {plan.model.card.name}, chunk {plan.chunk}, tile {plan.tile}, "
        f"halo {plan.halo}, cluster {args.cluster}; MLflow at {public_url(tracking_uri)}",
    )
    from flows.segment_batch import run_plan

    _quiet_service_logs()  # after Prefect's import, which configures its loggers
    started = time.perf_counter()
    with prefect.api():
        result = run_plan(
            plan,
            settings,
            cluster=args.cluster,
            workers=args.workers,
            tracking_uri=tracking_uri,
            experiment=args.experiment,
            show_progress=not args.json and sys.stderr.isatty(),
        )
    return result, time.perf_counter() - started


def _absolute(url: str) -> str:
    """A local path made absolute; a URL (``s3://...``) as given."""
    from segpipe.storage import location

    return location(url).url


def _eval(args: argparse.Namespace) -> int:
    from segpipe.io.images import open_image
    from segpipe.io.labels import resolve_label_image
    from segpipe.metrics import scores
    from segpipe.scoring import evaluate

    TilingConfig(chunk=args.chunk)
    labels = resolve_label_image(args.prediction)
    prediction, truth = open_image(labels.path), open_image(args.truth)
    if (prediction.height, prediction.width) != (truth.height, truth.width):
        from segpipe.errors import InputError

        raise InputError(
            f"{args.truth}: truth is {truth.height} x {truth.width} but prediction "
            f"{args.prediction} is {prediction.height} x {prediction.width}"
        )
    config = EvalConfig(args.ignore_index, args.truth_instances, _read_mapping(args.truth_mapping))
    classes = args.num_classes or _largest_label(prediction, truth, args.chunk, config) + 1
    result = scores(evaluate(prediction, truth, max(classes, 2), config, args.chunk))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_scores("eval", result, labels.names_for(len(result.iou)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from segpipe.runs import compare_runs
    from segpipe.tracking import default_tracking_uri, fetch_runs

    tracking_uri = args.tracking_uri or default_tracking_uri()
    runs = fetch_runs(tracking_uri, args.run_ids, args.experiment, args.last)
    print(json.dumps(runs, indent=2) if args.json else compare_runs(runs))
    return 0


def _largest_label(prediction: Any, truth: Any, chunk: int, config: EvalConfig) -> int:
    """The largest class id in the prediction and the (mapped) truth, read chunk by chunk."""
    from segpipe.scoring import truth_classes
    from segpipe.tiling import chunk_grid

    largest = 0
    for region in chunk_grid(prediction.height, prediction.width, chunk):
        largest = max(largest, int(prediction.read(*region).max()))
        labels = truth.read(*region)[0]
        if config.ignore_index is not None:
            labels = labels[labels != config.ignore_index]
        classes = truth_classes(labels, config)
        largest = max(largest, int(classes.max()) if classes.size else 0)
    return largest


_WARNED: set[str] = set()


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Print segpipe's own warnings once each."""
    if issubclass(category, SegpipeWarning) and str(message) not in _WARNED:
        _WARNED.add(str(message))
        print(f"segpipe: warning: {message}", file=sys.stderr)


def _log(args: argparse.Namespace, message: str) -> None:
    if not args.json:
        print(f"segpipe: {message}", file=sys.stderr)


def _print_table(result: BatchResult, wall_seconds: float) -> None:
    from segpipe.stages.report import ImageReport

    names = list(result.batch.class_names)
    blocks = []
    for image in result.images:
        if not isinstance(image, ImageReport):
            blocks.append([f"{image.image}  FAILED: {image.error}"])
            continue
        lines = [f"{image.image}  ({image.megapixels:.1f} Mpx, {_throughput(image.megapixels_per_second)})"]
        lines.append(f"  mask: {image.mask}" + ("  (finished earlier: skipped)" if image.skipped else ""))
        if image.evaluation is not None:
            lines += _score_lines(image.evaluation.scores, names)
        blocks.append(lines)
    if result.batch.scores is not None:
        blocks.append(["batch (all pixels)", *_score_lines(result.batch.scores.aggregates.micro, names)])
    blocks.append(
        [
            f"MLflow run: {result.mlflow_run_id}  ({result.tracking_uri})",
            f"outputs:    {result.out}   wall time {wall_seconds:.1f} s",
        ]
    )
    print("\n\n".join("\n".join(block) for block in blocks))


def _throughput(rate: float | None) -> str:
    return "nothing computed" if rate is None else f"{rate:.2f} Mpx/s"


def _score_lines(scores: Scores, names: list[str]) -> list[str]:
    lines = [f"  {'class':<14}{'IoU':>8}{'Dice':>8}"]
    for name, iou, dice in zip(names, scores.iou, scores.dice, strict=True):
        lines.append(f"  {name:<14}{_fmt(iou):>8}{_fmt(dice):>8}")
    lines.append(f"  {'mean':<14}{_fmt(scores.mean_iou):>8}{_fmt(scores.mean_dice):>8}")
    return lines


def _print_scores(title: str, scores: Scores, names: list[str]) -> None:
    print("\n".join([title, *_score_lines(scores, names)]))


def _quiet_service_logs() -> None:
    """Keep the terminal for segpipe's own lines: no INFO chatter from Prefect's temporary server or MLflow's
    database set-up (warnings and errors still show)."""
    import logging

    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prefect").addFilter(_DropTemporaryServerLines())


class _DropTemporaryServerLines:
    """A logging filter for Prefect's 'Starting/Stopping temporary server' lines."""

    def filter(self, record: Any) -> bool:
        return "temporary server" not in str(record.msg)


def _home_hint() -> str:
    from segpipe.tracking import segpipe_home

    return str(segpipe_home())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _add_model_commands(commands: Any) -> None:
    """``segpipe model register FILE --name NAME [--alias A]``."""
    model = commands.add_parser("model", help="the MLflow model registry: register a model file")
    actions = model.add_subparsers(dest="model_command", required=True)
    register = actions.add_parser(
        "register",
        help="register a model file (with its card beside it) as a new version",
        description="Validate FILE like `segpipe run --model FILE` would, then register it as a new version of "
        "NAME in the MLflow model registry; run it later with --model models:/NAME@ALIAS or models:/NAME/VERSION.",
        epilog="exit codes: 0 registered   2 bad parameter   3 bad model file   5 tracking server unreachable",
    )
    register.add_argument("file", metavar="FILE", help="a TorchScript, ONNX or state_dict file (card beside it)")
    register.add_argument("--name", required=True, help="registered model name")
    register.add_argument("--alias", help="point this alias (e.g. champion) at the new version")
    register.add_argument("--channels", type=int, help="band count to probe a model that has no card with")
    register.add_argument("--tracking-uri", help=TRACKING_HELP)
    register.add_argument("--json", action="store_true", help="print one JSON object")
    register.set_defaults(handler=_model_register)


def _model_register(args: argparse.Namespace) -> int:
    from segpipe.models import resolve_model
    from segpipe.models.register import EXPERIMENT
    from segpipe.runs import check_reachable
    from segpipe.storage import public_url
    from segpipe.tracking import MlflowTracker, check_tracking_uri, default_tracking_uri

    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    _quiet_service_logs()
    ref = resolve_model(args.file, channels=args.channels)  # a bad file fails here (exit 3), before any server
    check_reachable(tracking_uri)
    MlflowTracker(tracking_uri, EXPERIMENT)  # opens the experiment (artifacts beside a sqlite store); exit 5 if down
    model = _register(args, tracking_uri)
    if args.json:
        values = {**dataclasses.asdict(model), "alias": args.alias, "format": ref.format, "sha256": ref.sha256}
        print(json.dumps({**values, "tracking_uri": public_url(tracking_uri)}, indent=2))
    else:
        alias = f", alias {args.alias}" if args.alias else ""
        print(f"registered {model.name} version {model.version} ({model.uri}){alias}")
    return 0


def _register(args: argparse.Namespace, tracking_uri: str) -> Any:
    """``register_model`` for ``model register``; MLflow's own failures become one line and exit 5."""
    from mlflow.exceptions import MlflowException

    from segpipe.errors import TrackingError
    from segpipe.models.register import register_model
    from segpipe.storage import public_url

    try:
        return register_model(args.file, args.name, args.alias, tracking_uri, channels=args.channels)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TrackingError(f"MLflow at {public_url(tracking_uri)}: cannot register {args.name} ({first})") from None


def _add_runs_commands(commands: Any) -> None:
    """``segpipe runs show RUN_ID``."""
    runs = commands.add_parser("runs", help="read batch runs back from MLflow")
    actions = runs.add_subparsers(dest="runs_command", required=True)
    show = actions.add_parser(
        "show",
        help="a run's lineage: inputs, model version and bytes, code, Prefect flow run, cluster",
        description="Print where batch run RUN_ID's result came from (an image run's id shows its batch).",
        epilog="exit codes: 0 shown   2 no such run   5 tracking server unreachable",
    )
    show.add_argument("run_id", metavar="RUN_ID", help="an MLflow batch (or image) run id")
    show.add_argument("--tracking-uri", help=TRACKING_HELP)
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=_runs_show)


def _runs_show(args: argparse.Namespace) -> int:
    from segpipe.runs import read_lineage, render_lineage
    from segpipe.tracking import default_tracking_uri

    _quiet_service_logs()
    lineage = read_lineage(args.run_id, args.tracking_uri or default_tracking_uri())
    print(json.dumps(lineage.to_json(), indent=2) if args.json else render_lineage(lineage))
    return 0


def run_and_exit() -> None:
    """The ``segpipe`` command: ``main``, then exit without tearing the interpreter down.

    Every output is committed before ``main`` returns, and the atexit handlers still run (Prefect drains its
    queues, temporary folders go); what is skipped is Python's module-by-module finalisation of torch, MLflow,
    Prefect and Dask, which took 1.1-1.6 s after every run on the bench machine."""
    limit_malloc_arenas()
    code = main()
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_and_exit()
