"""Per-image steps of a batch: plan (validate everything, write nothing), ingest, infer, evaluate, preview.

Each step is a plain function that the Prefect tasks in ``flows/`` call; the Dask work inside is handed to
an ``executor`` so this module never imports Prefect, MLflow or distributed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
import zarr

from segpipe import metrics
from segpipe.config import EvalConfig, InferenceConfig, TilingConfig
from segpipe.errors import InputError, OutputError, SegpipeWarning
from segpipe.evaluation import evaluate_split, truth_classes
from segpipe.inference import (
    ChunkJob,
    Executor,
    create_mask,
    create_probabilities,
    local_executor,
    segment_image,
)
from segpipe.io import ingest as ingest_io
from segpipe.io.export import export_tiff as export_mask_tiff
from segpipe.io.images import ImageSource, open_image, read_metadata
from segpipe.io.omezarr import build_pyramid, level_count, read_segpipe_attrs, write_metadata
from segpipe.io.progress import ChunkLedger, file_identity, fingerprint
from segpipe.models.loader import ModelRef, resolve_model, select_device
from segpipe.normalize import BandStats
from segpipe.objects import score_objects
from segpipe.preview import gray_thumbnail, thumbnail, write_preview
from segpipe.reports import ImageResult, write_report
from segpipe.tiling import Region, chunk_grid, round_up


@dataclass(frozen=True)
class RunSettings:
    """Everything a batch run is configured with."""

    model: str = "builtin"
    out: str = "segpipe-out"
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    overwrite: bool = False
    trust_model_pickle: bool = False
    export_tiff: bool = False
    save_probabilities: bool = False


@dataclass(frozen=True)
class ImageJob:
    """One image of the batch, where its outputs go, and the fingerprints its outputs are valid under.

    ``ingest_key`` covers the input and chunking; ``infer_key`` adds the model and every setting that can change
    a mask pixel; ``done_key`` adds the truth and evaluation settings.
    """

    name: str
    image: ImageSource
    truth: ImageSource | None
    out_dir: str
    ingest_key: str = ""
    infer_key: str = ""
    done_key: str = ""

    def path(self, leaf: str) -> str:
        return os.path.join(self.out_dir, leaf)


@dataclass(frozen=True)
class BatchPlan:
    """A validated batch: the model, the resolved tiling and the images."""

    model: ModelRef
    chunk: int
    tile: int
    halo: int
    jobs: tuple[ImageJob, ...]
    tiling: TilingConfig = field(default_factory=TilingConfig)
    stride: int = 0
    save_probabilities: bool = False


def plan_batch(images: list[str], truths: list[str] | None, settings: RunSettings) -> BatchPlan:
    """Validate inputs, truths, model and output location; nothing is written.

    Raises:
        InputError, ModelError, OutputError, ConfigError: one line naming the file and the fault.
    """
    if not images:
        raise InputError("no input images given")
    if truths and len(truths) != len(images):
        raise InputError(f"{len(images)} images but {len(truths)} truths: give one truth per image, in order")
    stacks = [open_image(p) for p in images]
    model = resolve_model(settings.model, trust_pickle=settings.trust_model_pickle)
    for source in stacks:
        _check_channels(source, model)
    truth_stacks = [_open_truth(t, s) for t, s in zip(truths, stacks, strict=True)] if truths else None
    sources, truth_sources, names = _planes(stacks, truth_stacks)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(
            f"{sources[names.index(duplicates[0])].path}: two inputs share the output name {duplicates[0]!r}"
        )
    _check_writable(settings.out)
    chunk, tile, halo = resolve_tiling(settings.tiling, model)
    stride = window_stride(tile, settings.tiling.overlap, model.card.size_divisor)
    plan = BatchPlan(model, chunk, tile, halo, (), settings.tiling, stride, settings.save_probabilities)
    jobs = tuple(
        _keyed_job(
            ImageJob(name, source, truth_sources[i] if truth_sources else None, os.path.join(settings.out, name)),
            plan,
            settings,
        )
        for i, (name, source) in enumerate(zip(names, sources, strict=True))
    )
    for job in jobs:
        _scan_contents(job, model, settings.evaluation, chunk)
        if not settings.overwrite:
            _check_existing_mask(job)
    return replace(plan, jobs=jobs)


def _planes(
    stacks: list[ImageSource], truths: list[ImageSource] | None
) -> tuple[list[ImageSource], list[ImageSource] | None, list[str]]:
    """Expand Z/T stacks into one 2-D job per plane, named ``<stem>-z0003``; truth planes pair up in order."""
    sources: list[ImageSource] = []
    truth_planes: list[ImageSource] = []
    names: list[str] = []
    for i, stack in enumerate(stacks):
        planes = stack.plane_sources()
        sources += planes
        names += [
            _image_name(stack.path) + (f"-{p.plane_axis}{p.plane:04d}" if p.plane is not None else "") for p in planes
        ]
        if truths:
            truth_planes += truths[i].plane_sources() if truths[i].planes > 1 else [truths[i]] * len(planes)
    return sources, truth_planes if truths else None, names


def _keyed_job(job: ImageJob, plan: BatchPlan, settings: RunSettings) -> ImageJob:
    ingest_key = fingerprint(
        {"input": file_identity(job.image.path), "plane": job.image.plane, "chunk": plan.chunk, "version": 1}
    )
    infer_key = fingerprint(
        {
            "ingest": ingest_key,
            "model": plan.model.sha256,
            "format": plan.model.format,
            "card": plan.model.card.to_dict(),
            "tile": plan.tile,
            "halo": plan.halo,
            "stride": plan.stride,
            "tiling": asdict(plan.tiling),
            "probabilities": plan.save_probabilities,
            "batch_size": settings.inference.batch_size,
            "device": select_device(settings.inference.device).type,
        }
    )
    truth = {"file": file_identity(job.truth.path), "plane": job.truth.plane} if job.truth else None
    done_key = fingerprint({"infer": infer_key, "truth": truth, "evaluation": asdict(settings.evaluation)})
    return replace(job, ingest_key=ingest_key, infer_key=infer_key, done_key=done_key)


def _scan_contents(job: ImageJob, model: ModelRef, config: EvalConfig, chunk: int) -> None:
    """Reject float pixels that are NaN/Inf and truth labels outside the model's classes, before any write."""
    if np.dtype(job.image.dtype).kind == "f":
        scan = scan_image(job.image, chunk)
        if scan.nonfinite:
            raise InputError(
                f"{job.image.path}: {scan.nonfinite} pixel(s) are NaN or infinite; "
                "segpipe refuses them (replace them, e.g. by 0, before segmenting)"
            )
    if job.truth is None or config.truth_instances:
        return
    classes = model.card.num_classes
    if config.truth_mapping is not None:
        _check_mapping(job.truth, dict(config.truth_mapping), classes, chunk)
        return
    scan = scan_image(job.truth, chunk, config.ignore_index)
    if scan.pixels and (scan.low < 0 or scan.high >= classes):
        bad = scan.high if scan.high >= classes else scan.low
        raise InputError(
            f"{job.truth.path}: truth label {bad:g} is outside the model's classes 0..{classes - 1} "
            "(instance masks: pass --truth-instances; void label: --ignore-index)"
        )


def _check_mapping(truth: ImageSource, mapping: dict[int, int], classes: int, chunk: int) -> None:
    """Every instance id in ``truth`` must map to one of the model's classes (read chunk by chunk)."""
    task = dask.delayed(lambda region: np.unique(truth.read(*region)[0]), pure=True)
    parts = dask.compute(*[task(r) for r in chunk_grid(truth.height, truth.width, chunk)], scheduler="threads")
    ids = np.unique(np.concatenate(parts)) if parts else np.array([], np.int64)
    missing = [int(i) for i in ids if int(i) != 0 and int(i) not in mapping]
    if missing:
        raise InputError(
            f"{truth.path}: instance id {missing[0]} has no class in --truth-mapping ({len(missing)} ids lack one)"
        )
    beyond = sorted({c for i, c in mapping.items() if c >= classes and i in set(ids.tolist())})
    if beyond:
        raise InputError(
            f"{truth.path}: --truth-mapping sends instances to class {beyond[0]}, outside the "
            f"model's classes 0..{classes - 1}"
        )


def _check_existing_mask(job: ImageJob) -> None:
    store = store_path(job)
    if os.path.isdir(store) and mask_fingerprint(store) != job.infer_key:
        raise OutputError(
            f"{store}: holds a mask made from another input, model or settings; "
            "pass --overwrite to replace it, or choose another --out"
        )


def mask_fingerprint(store: str) -> str | None:
    """The ``infer_key`` an OME-Zarr store was finished under, or None (no store, or not one of segpipe's)."""
    return read_segpipe_attrs(store).get("infer_key") if os.path.isdir(store) else None


def resolve_tiling(tiling: TilingConfig, model: ModelRef) -> tuple[int, int, int]:
    """Chunk, tile and halo, rounded to the model's size divisor so tiles fall on its pooling grid.

    Warns (``SegpipeWarning``) when a ``trim`` halo is below the model's receptive-field radius: tiles would
    then differ from whole-image inference near their edges.
    """
    divisor = model.card.size_divisor
    chunk = round_up(tiling.chunk, divisor)  # chunks must start on the model's pooling grid
    halo = round_up(model.card.default_halo if tiling.halo is None else tiling.halo, divisor)
    tile = tiling.tile if tiling.stitch == "gaussian" else min(tiling.tile, chunk)
    tile = max(divisor, tile - tile % divisor)
    radius = model.card.receptive_field
    if tiling.stitch == "trim" and radius is not None and halo < radius:
        warnings.warn(
            f"--halo {halo} is smaller than the receptive-field radius {radius} of model {model.card.name}: "
            "tiled output will differ from whole-image output near tile edges",
            SegpipeWarning,
            stacklevel=2,
        )
    return chunk, tile, halo


def window_stride(tile: int, overlap: float, divisor: int) -> int:
    """Step of the Gaussian window grid: ``tile * (1 - overlap)``, a positive multiple of ``divisor``."""
    step = int(tile * (1.0 - overlap))
    return max(divisor, step - step % divisor)


def _check_channels(source: ImageSource, model: ModelRef) -> None:
    expected = model.card.in_channels
    if expected is not None and source.channels != expected:
        raise InputError(
            f"{source.path}: image has {source.channels} band(s); model {model.card.name} expects {expected}"
        )


def _open_truth(path: str, image: ImageSource) -> ImageSource:
    truth = open_image(path)
    if truth.channels != 1:
        raise InputError(f"{path}: truth must be a single-band label image, found {truth.channels} bands")
    if (truth.height, truth.width) != (image.height, image.width):
        raise InputError(
            f"{path}: truth is {truth.height} x {truth.width} but image {image.path} is {image.height} x {image.width}"
        )
    if truth.planes not in (1, image.planes):
        raise InputError(f"{path}: truth has {truth.planes} planes but image {image.path} has {image.planes}")
    if np.dtype(truth.dtype).kind not in "uib":
        raise InputError(f"{path}: truth must hold integer class labels, found {np.dtype(truth.dtype)} pixels")
    return truth


def _image_name(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_writable(out: str) -> None:
    existing = Path(out).resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise OutputError(f"{out}: output location is not a writable directory")


def store_path(job: ImageJob, partial: bool = False) -> str:
    """The image's OME-Zarr: ``<out>/<name>/<name>.ome.zarr`` (``.partial`` while being built)."""
    final = job.path(f"{job.name}.ome.zarr")
    return f"{final}.partial" if partial else final


def mask_path(store: str) -> str:
    """Level 0 of the label mask inside an OME-Zarr store: a (Y, X) array ``zarr.open_array`` opens."""
    return f"{store}/labels/mask/0"


def stored_stats(store: str) -> BandStats:
    """The band statistics a finished OME-Zarr store was normalised with (written by ``finalize_step``)."""
    stats = read_segpipe_attrs(store)["stats"]
    return BandStats(tuple(stats["low"]), tuple(stats["high"]))


def finished_store(job: ImageJob) -> str | None:
    """The image's OME-Zarr if it was finished from the same input, model and settings, else None."""
    store = store_path(job)
    return store if mask_fingerprint(store) == job.infer_key else None


def ingest_step(job: ImageJob, chunk: int, executor: Executor = local_executor) -> dict[str, Any]:
    """Tile the input into level 0 of the OME-Zarr being built, resuming an interrupted copy. An image finished
    earlier under the same fingerprint is not copied again. Returns the tiled source and its band statistics."""
    start = time.perf_counter()
    done = finished_store(job)
    if done is not None:
        return {
            "source": ingest_io.open_copy(job.image, f"{done}/0"),
            "stats": stored_stats(done),
            "seconds": 0.0,
            "reused": True,
        }
    os.makedirs(store_path(job, partial=True), exist_ok=True)
    dest = f"{store_path(job, partial=True)}/0"
    ledger = ChunkLedger(job.out_dir, "ingest", job.ingest_key)
    stats = ingest_io.ingest(job.image, dest, chunk, executor, ledger)
    return {
        "source": ingest_io.open_copy(job.image, dest),
        "stats": stats,
        "seconds": time.perf_counter() - start,
        "reused": False,
    }


def infer_step(
    job: ImageJob,
    tiled: ImageSource,
    stats: BandStats,
    plan: BatchPlan,
    inference: InferenceConfig,
    executor: Executor = local_executor,
) -> dict[str, Any]:
    """Predict every chunk not yet marked done into the mask of the OME-Zarr being built."""
    start = time.perf_counter()
    megapixels = tiled.height * tiled.width / 1e6
    chunks = float(len(chunk_grid(tiled.height, tiled.width, plan.chunk)))
    done = finished_store(job)
    if done is not None:
        return {
            "mask": mask_path(done),
            "seconds": 0.0,
            "megapixels": megapixels,
            "megapixels_per_second": None,
            "chunks": chunks,
            "chunks_computed": 0.0,
            "pixels": 0.0,
            "task_seconds": 0.0,
        }
    partial = mask_path(store_path(job, partial=True))
    ledger = ChunkLedger(job.out_dir, "infer", job.infer_key)
    probabilities = f"{store_path(job, partial=True)}/probabilities" if plan.save_probabilities else None
    if ledger.is_fresh() or not os.path.isdir(partial):
        ledger.reset()
        create_mask(partial, tiled.height, tiled.width, plan.chunk, plan.model.card.num_classes)
        if probabilities:
            create_probabilities(probabilities, tiled.height, tiled.width, plan.chunk, plan.model.card.num_classes)
    use_stats = stats if plan.model.card.normalization == "percentile" else None
    chunk_job = ChunkJob(
        tiled,
        partial,
        plan.model,
        plan.chunk,
        plan.tile,
        plan.halo,
        inference,
        use_stats,
        ledger,
        plan.tiling.stitch,
        plan.stride,
        plan.tiling.pad_mode,
        probabilities,
    )
    summary = segment_image(chunk_job, executor)
    seconds = time.perf_counter() - start
    return {
        "mask": partial,
        "seconds": seconds,
        "megapixels": megapixels,
        "megapixels_per_second": summary["pixels"] / 1e6 / seconds if summary["pixels"] else None,
        **summary,
    }


def finalize_step(
    job: ImageJob, plan: BatchPlan, stats: BandStats, export_tiff: bool = False, executor: Executor = local_executor
) -> dict[str, Any]:
    """Build the image and mask pyramids, write the NGFF metadata (with the input's pixel size and GeoTIFF
    tags), then move the store to its final name; optionally export the mask as a (Geo)TIFF."""
    start = time.perf_counter()
    store = finished_store(job)
    if store is None:
        partial = store_path(job, partial=True)
        levels = level_count(job.image.height, job.image.width)
        build_pyramid(partial, levels, plan.chunk, labels=False, executor=executor)
        build_pyramid(f"{partial}/labels/mask", levels, plan.chunk, labels=True, executor=executor)
        meta = read_metadata(job.image)
        extra = {
            "infer_key": job.infer_key,
            "model": plan.model.card.name,
            "model_sha256": plan.model.sha256,
            "source": job.image.path,
            "stats": asdict(stats),
            "geotiff_tags": meta["geotiff_tags"],
            "pixel_size": meta["pixel_size"],
            "unit": meta["unit"],
        }
        write_metadata(
            partial,
            job.name,
            levels,
            levels,
            plan.model.card.class_names,
            tuple(meta["pixel_size"]),
            meta["unit"],
            extra,
        )
        store = store_path(job)
        shutil.rmtree(store, ignore_errors=True)
        os.replace(partial, store)
    result = {
        "store": store,
        "mask": mask_path(store),
        **({"probabilities": f"{store}/probabilities"} if plan.save_probabilities else {}),
        "source": ingest_io.open_copy(job.image, f"{store}/0"),
        "seconds": time.perf_counter() - start,
    }
    if export_tiff:
        attrs = read_segpipe_attrs(store)
        tiff = job.path(f"{job.name}_mask.tif")
        export_mask_tiff(mask_path(store), tiff, attrs.get("geotiff_tags"), tuple(attrs.get("pixel_size", (1, 1))))
        result["tiff"] = tiff
    return result


def evaluate_step(
    job: ImageJob, mask: str, plan: BatchPlan, config: EvalConfig, executor: Executor = local_executor
) -> dict[str, Any]:
    """Confusion matrix and scores of ``mask`` against the job's truth."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth given, nothing to evaluate")
    start = time.perf_counter()
    split = evaluate_split(open_image(mask), job.truth, plan.model.card.num_classes, config, plan.chunk, executor)
    confusion = split.sum(axis=0)
    seams = {"interior": _brief(metrics.scores(split[0])), "seam_band": _brief(metrics.scores(split[1]))}
    result = {"confusion": confusion, "scores": {**metrics.scores(confusion), **seams}}
    if config.truth_instances:
        result["scores"]["objects"] = object_step(job, mask)
    return {**result, "seconds": time.perf_counter() - start}


OBJECT_METRICS_MAX_PIXELS = 64 * 2**20


def object_step(job: ImageJob, mask: str) -> list[dict[str, Any]] | None:
    """Object-level matching (stardist-style, IoU thresholds 0.5..0.9) of the mask's connected components
    against instance truth. Matching needs whole objects, so it reads both images whole: it is skipped
    (None) above OBJECT_METRICS_MAX_PIXELS."""
    truth = job.truth
    if truth is None or truth.height * truth.width > OBJECT_METRICS_MAX_PIXELS:
        return None
    instances = truth.read(0, truth.height, 0, truth.width)[0]
    predicted = np.asarray(zarr.open_array(mask, mode="r")[:])
    return score_objects(instances, predicted, foreground=1)


def report_step(
    out: str,
    jobs: tuple[ImageJob, ...],
    reports: list[dict[str, Any]],
    class_names: tuple[str, ...],
    config: EvalConfig | None = None,
    worst: int = 4,
) -> dict[str, Any]:
    """Write ``<out>/report/``: per-image CSV, batch summary (CSV, JSON), confusion heatmap, per-class bars
    and overlays of the ``worst`` images by mean Dice. Returns the paths by role (empty without truths)."""
    scored = [(job, report) for job, report in zip(jobs, reports, strict=True) if "confusion_matrix" in report]
    if not scored:
        return {}
    results = [
        ImageResult(job.name, np.asarray(report["confusion_matrix"]), None, report.get("objects"))
        for job, report in scored
    ]
    by_name = {job.name: job for job, _ in scored}
    return write_report(
        os.path.join(out, "report"),
        results,
        class_names,
        lambda name: _thumbnails(by_name[name], config or EvalConfig()),
        worst,
    )


def _thumbnails(job: ImageJob, config: EvalConfig, max_side: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (0..1), prediction and truth thumbnails of a finished image, read chunk by chunk."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth to draw an overlay against")
    store = store_path(job)
    image = gray_thumbnail(ingest_io.open_copy(job.image, f"{store}/0"), stored_stats(store), max_side)
    truth = truth_classes(thumbnail(job.truth, max_side), config)
    return image, thumbnail(open_image(mask_path(store)), max_side), truth


def _brief(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: scores[key] for key in ("iou", "dice", "mean_iou", "mean_dice", "pixels")}


def preview_step(job: ImageJob, tiled: ImageSource, mask: str, stats: BandStats, class_names: tuple[str, ...]) -> str:
    """Write ``preview.png``: image | prediction | truth, titled, with a legend of the classes."""
    path = job.path("preview.png")
    return str(write_preview(path, tiled, open_image(mask), job.truth, stats, class_names=class_names))


def write_json(path: str, payload: dict[str, Any]) -> str:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False, default=_json_default)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: Any) -> Any:
    """Replace NaN (a class absent from truth and prediction) by None, recursively, for JSON."""
    if isinstance(value, float):
        return None if not np.isfinite(value) else value
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ImageScan:
    """Value range of an image (NaN/Inf left out) and its count of NaN/Inf pixels."""

    low: float
    high: float
    nonfinite: int
    pixels: int


_SCANS: dict[str, ImageScan] = {}


def scan_image(source: ImageSource, chunk: int, ignore: int | None = None) -> ImageScan:
    """Range and NaN/Inf count of ``source``, chunk by chunk on the threaded scheduler; memoised per file
    state, so the CLI's check and the flow's share one read."""
    key = fingerprint({"file": file_identity(source.path), "plane": source.plane, "ignore": ignore})
    if key not in _SCANS:
        task = dask.delayed(_scan_chunk, pure=True)
        parts = dask.compute(
            *[task(source, r, ignore) for r in chunk_grid(source.height, source.width, chunk)], scheduler="threads"
        )
        finite = [p for p in parts if p[3]]
        _SCANS[key] = ImageScan(
            low=min((p[0] for p in finite), default=0.0),
            high=max((p[1] for p in finite), default=0.0),
            nonfinite=sum(p[2] for p in parts),
            pixels=sum(p[3] for p in parts),
        )
    return _SCANS[key]


def _scan_chunk(source: ImageSource, region: Region, ignore: int | None) -> tuple[float, float, int, int]:
    data = source.read(*region)
    if ignore is not None:
        data = data[data != ignore]
    finite_mask = np.isfinite(data) if data.dtype.kind == "f" else None
    values = data[finite_mask] if finite_mask is not None else data.reshape(-1)
    nonfinite = int(data.size - values.size)
    if not values.size:
        return 0.0, 0.0, nonfinite, 0
    return float(values.min()), float(values.max()), nonfinite, int(values.size)
