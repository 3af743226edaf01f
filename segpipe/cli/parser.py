"""The ``segpipe`` argument parser: every subcommand and option, with its default and help."""

from __future__ import annotations

import argparse
from typing import Any

from segpipe.cli.compare import compare_command
from segpipe.cli.evaluate import evaluate_command
from segpipe.cli.model import check_command, register_command
from segpipe.cli.run import DEMO_SIZE, demo_command, run_command
from segpipe.cli.runs import show_command
from segpipe.config import (
    COMPILE_MODES,
    PAD_MODES,
    PRECISIONS,
    STITCH_MODES,
    TTA_MODES,
    InferenceConfig,
    LeaseConfig,
    ObjectsConfig,
    TilingConfig,
)

TRUST_CODE_HELP = "allow a bioimage.io package's architecture code (for its pytorch_state_dict weights)"
TRACKING_HELP = "MLflow URI (default: $MLFLOW_TRACKING_URI, else mlflow.db in $SEGPIPE_HOME)"

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


def build_parser() -> argparse.ArgumentParser:
    """The parser; each subcommand sets ``handler``, the function that runs it."""
    from segpipe import __version__

    parser = argparse.ArgumentParser(prog="segpipe", description="Batch semantic segmentation of large images.")
    parser.add_argument("--version", action="version", version=f"segpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a sample image with truth and run the batch flow on it")
    demo.add_argument("--size", type=int, default=DEMO_SIZE, help="edge of the square sample (default 4096)")
    demo.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    demo.add_argument("--workdir", default="segpipe-demo", help="where the sample and outputs go")
    _add_run_options(demo, with_io=False)
    demo.set_defaults(handler=demo_command)

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
        help="builtin, builtin:boundary, baseline[:otsu|:T], a TorchScript/ONNX/state_dict file or URL, "
        "a bioimage.io package (rdf.yaml or .zip), or models:/NAME@ALIAS",
    )
    _add_run_options(run, with_io=True)
    run.set_defaults(handler=run_command)

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
    evaluate.set_defaults(handler=evaluate_command)

    report = commands.add_parser("report", help="compare MLflow batch runs side by side (which model won)")
    report.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="batch runs to compare (default: latest)")
    report.add_argument("--tracking-uri", help=TRACKING_HELP)
    report.add_argument("--experiment", default="segpipe", help="with no RUN_ID: its latest batch runs")
    report.add_argument("--last", type=int, default=5, help="with no RUN_ID: how many runs (default 5)")
    report.add_argument("--json", action="store_true", help="print the runs as JSON")
    report.set_defaults(handler=compare_command)
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
        "--compile",
        choices=COMPILE_MODES,
        default=inference.compile,
        help="fold: merge conv + batch norm (default); eager: the model as loaded; inductor: torch.compile it",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation: average each window's softmax over flips (4) or the dihedral group d4 (8)",
    )
    parser.add_argument(
        "--cluster",
        default="local",
        metavar="KIND",
        help="local (default), cuda (a worker per GPU), slurm, kubernetes, or a scheduler address tcp://HOST:PORT",
    )
    parser.add_argument("--workers", type=int, help="workers (local: threads, default one per core), GPUs, jobs, pods")
    parser.add_argument(
        "--prefect",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto (default): run as a Prefect flow when a Prefect API is configured, in process otherwise; "
        "on: always (a temporary server when none is configured); off: never",
    )
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
        "--save-uncertainty",
        action="store_true",
        help="also store each pixel's softmax entropy (nats) as float16 uncertainty in the OME-Zarr, and report it",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace masks in the output made with another model, input or settings",
    )
    _add_lease_options(parser)
    _add_object_options(parser)
    if with_io:
        _add_input_options(parser)
        parser.add_argument(
            "--trust-model-pickle",
            action="store_true",
            help="allow a fully pickled torch model (runs its code: only for files you made)",
        )
        parser.add_argument(
            "--trust-model-code",
            action="store_true",
            help=TRUST_CODE_HELP,
        )
        parser.add_argument("--ignore-index", type=int, help="truth label left out of every metric")
        parser.add_argument("--truth-mapping", metavar="FILE", help="JSON {instance id: class} for instance truth")
        parser.add_argument("--truth-instances", action="store_true", help="truth holds instance ids: id>0 = 1")


def _add_object_options(parser: argparse.ArgumentParser) -> None:
    """``--objects`` and how objects are found and drawn."""
    objects = ObjectsConfig()
    parser.add_argument(
        "--objects",
        action="store_true",
        help="find every object (connected component) per class: an id image, a table and polygons per image",
    )
    parser.add_argument(
        "--connectivity",
        type=int,
        choices=(4, 8),
        default=objects.connectivity,
        help=f"objects: 4 (pixels sharing an edge) or 8 (an edge or a corner) ({objects.connectivity})",
    )
    parser.add_argument(
        "--simplify",
        type=float,
        default=objects.simplify,
        metavar="PIXELS",
        help="objects: polygon simplification tolerance in pixels (default 0: exact pixel outlines)",
    )
    parser.add_argument(
        "--export-geojson",
        action="store_true",
        help="objects: also write QuPath-style GeoJSON (objects.geojson) beside polygons.parquet",
    )


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """``--bands``, ``--level``, ``--pixel-size``, ``--foreground``: what of each input the model reads."""
    parser.add_argument(
        "--bands", metavar="LIST", help="the model's input bands, 1-based and in order, e.g. 4,3,2 (default: card's)"
    )
    parser.add_argument("--level", type=int, metavar="N", help="read stored level N (default: the model's resolution)")
    parser.add_argument(
        "--pixel-size", metavar="VALUE[UNIT]", help="set or override the images' pixel size, e.g. 0.25um or 10m"
    )
    parser.add_argument(
        "--foreground",
        default="none",
        metavar="KIND",
        help="compute only chunks with foreground: auto, none (default), nodata, tissue, or a mask image",
    )


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


def _add_model_commands(commands: Any) -> None:
    """``segpipe model register FILE --name NAME [--alias A]`` and ``segpipe model check PACKAGE``."""
    model = commands.add_parser("model", help="the MLflow model registry: register a model file; check a package")
    actions = model.add_subparsers(dest="model_command", required=True)
    register = actions.add_parser(
        "register",
        help="register a model file (with its card beside it) as a new version",
        description="Validate FILE like `segpipe run --model FILE` would, then register it as a new version of "
        "NAME in the MLflow model registry; run it later with --model models:/NAME@ALIAS or models:/NAME/VERSION.",
        epilog="exit codes: 0 registered   2 bad parameter   3 bad model file   5 tracking server unreachable",
    )
    register.add_argument(
        "file", metavar="FILE", help="a TorchScript, ONNX or state_dict file (card beside it), or a bioimage.io package"
    )
    register.add_argument("--name", required=True, help="registered model name")
    register.add_argument("--alias", help="point this alias (e.g. champion) at the new version")
    register.add_argument("--channels", type=int, help="band count to probe a model that has no card with")
    register.add_argument("--tracking-uri", help=TRACKING_HELP)
    register.add_argument("--json", action="store_true", help="print one JSON object")
    register.add_argument("--trust-model-code", action="store_true", help=TRUST_CODE_HELP)
    register.set_defaults(handler=register_command)
    check = actions.add_parser(
        "check",
        help="run a bioimage.io package on its test input and compare with its expected output",
        description="Run PACKAGE with segpipe's predictor on the package's test input; PASS when the output is "
        "within the package's tolerance of its expected output (1e-4 when it declares none).",
        epilog="exit codes: 0 PASS   2 bad parameter   3 FAIL or bad package",
    )
    check.add_argument("package", metavar="PACKAGE", help="a bioimage.io package: its rdf.yaml or .zip")
    check.add_argument("--trust-model-code", action="store_true", help=TRUST_CODE_HELP)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=check_command)


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
    show.set_defaults(handler=show_command)


def _home_hint() -> str:
    from segpipe.tracking import segpipe_home

    return str(segpipe_home())
