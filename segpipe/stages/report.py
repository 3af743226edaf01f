"""Report: one typed report per image, a failure record per failed image, and the batch's report files.

An image's report is written as ``metrics.json`` with a ``preview.png``, then the image's ``done.json`` commit record,
written last; a failure record is for an image that failed alone; the batch's report files, with its page
``index.html``, go to ``report/`` in the output location.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from segpipe import normalize
from segpipe.config import EvalConfig
from segpipe.errors import InputError, OutputError
from segpipe.io.images import ImageSource, open_image
from segpipe.io.ledger import read_commit, write_commit
from segpipe.metrics import defined, finite_or_none
from segpipe.normalize import BandStats
from segpipe.preview import gray_thumbnail, render_preview, thumbnail
from segpipe.reports import CanaryFigure, ImageResult, PageImage, index_html, report_files
from segpipe.reports.uncertain import UncertainRegion, most_uncertain, region_figures, uncertain_overlays
from segpipe.scoring import truth_classes
from segpipe.stages.evaluate import Evaluated, Evaluation
from segpipe.stages.finalize import Finalized
from segpipe.stages.infer import Inferred
from segpipe.stages.ingest import Ingested, is_committed, stored_stats
from segpipe.stages.objects import Counted
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.storage import location
from segpipe.tiling import Region, chunk_grid, strided_sample


@dataclass(frozen=True)
class ImageReport:
    """What happened to one image.

    ``evaluation`` holds its scores when a truth was given; ``megapixels_per_second`` counts only pixels this run
    computed (None if none).
    """

    name: str
    image: str
    truth: str | None
    mask: str
    ome_zarr: str
    shape_cyx: tuple[int, ...]
    megapixels: float
    megapixels_computed: float
    megapixels_per_second: float | None
    chunks: int
    chunks_computed: int
    seconds: dict[str, float]
    evaluation: Evaluation | None = None
    tiff: str | None = None
    probabilities: str | None = None
    skipped: bool = False
    class_pixels: tuple[int, ...] = ()  # predicted pixels per class
    mean_confidence: float | None = None  # mean softmax probability of the predicted class
    pixel_size: tuple[float, float] = (1.0, 1.0)
    unit: str | None = None  # of pixel_size (None: pixels)
    role: str = "input"
    image_size: int = 0  # bytes, and the store's version of the input (etag/checksum or mtime) when planned
    image_version: str = ""
    object_counts: tuple[int, ...] = ()  # per class, with --objects
    median_areas: tuple[float | None, ...] = ()  # pixels, per class
    objects_table: str | None = None
    polygons: str | None = None
    foreground_fraction: float | None = None  # share of the image that is foreground (with --foreground)
    chunks_skipped: int = 0  # chunks without foreground: written as background, not computed
    uncertainty: str | None = None  # the per-pixel entropy array, with --save-uncertainty
    mean_uncertainty: float | None = None  # mean softmax entropy (nats) of the pixels computed
    uncertain_fraction: float | None = None  # their share above segpipe.uncertainty.UNCERTAIN_NATS
    compile_seconds: float = 0.0  # of the infer stage's seconds: the model's compiles (--compile inductor)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the fields, with the evaluation's scores at the top level (``iou``, ``dice``, ...)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "evaluation"}
        data.update(shape_cyx=list(self.shape_cyx), class_pixels=list(self.class_pixels))
        data.update(object_counts=list(self.object_counts), median_areas=list(self.median_areas))
        data["pixel_size"] = list(self.pixel_size)
        scores = self.evaluation.to_json() if self.evaluation is not None else {}
        return {**finite_or_none(data), **scores}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageReport:
        """From ``to_json``'s form (``metrics.json``, the ``report`` of ``done.json``, a ``batch.json`` entry)."""
        names = {f.name for f in fields(cls)} - {"evaluation"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        for key in ("shape_cyx", "class_pixels", "pixel_size", "object_counts", "median_areas"):
            if key in values:
                values[key] = tuple(values[key])
        evaluation = Evaluation.from_json(data) if "iou" in data else None
        return cls(**values, evaluation=evaluation)

    @property
    def confusion(self) -> np.ndarray | None:
        """The whole image's confusion matrix, or None without a truth."""
        return None if self.evaluation is None else self.evaluation.scores.confusion

    @property
    def objects(self) -> list[dict[str, Any]] | None:
        """The object metrics per IoU threshold, when they were computed."""
        return None if self.evaluation is None else self.evaluation.objects


@dataclass(frozen=True)
class ImageFailure:
    """An image that failed alone: its error line; the rest of the batch finished."""

    name: str
    image: str
    error: str
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        """The JSON form, marked ``failed``."""
        return {**asdict(self), "failed": True}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageFailure:
        """From ``to_json``'s form."""
        return cls(data["name"], data["image"], data["error"], int(data["exit_code"]))


def image_report(
    job: ImageJob,
    ingested: Ingested,
    inferred: Inferred,
    finalized: Finalized,
    evaluated: Evaluated | None,
    counted: Counted | None = None,
) -> ImageReport:
    """The report of an image that went through the stages in this run."""
    seconds = {"ingest": ingested.seconds, "infer": inferred.seconds, "finalize": finalized.seconds}
    if counted is not None:
        seconds["objects"] = counted.seconds
    if evaluated is not None:
        seconds["evaluate"] = evaluated.seconds
    return ImageReport(
        name=job.name,
        image=job.image.path,
        truth=job.truth.path if job.truth else None,
        mask=finalized.mask,
        ome_zarr=finalized.store,
        shape_cyx=job.grid,
        megapixels=inferred.megapixels,
        megapixels_computed=inferred.megapixels_computed,
        megapixels_per_second=inferred.megapixels_per_second,
        chunks=inferred.chunks,
        chunks_computed=inferred.chunks_computed,
        seconds=seconds,
        evaluation=evaluated.evaluation if evaluated is not None else None,
        tiff=finalized.tiff,
        probabilities=finalized.probabilities,
        class_pixels=inferred.class_pixels or _predicted_pixels(evaluated),
        mean_confidence=inferred.mean_confidence,
        pixel_size=finalized.pixel_size,
        unit=finalized.unit,
        role=job.role,
        image_size=job.identity.size if job.identity else 0,
        image_version=job.identity.version if job.identity else "",
        object_counts=counted.counts if counted is not None else (),
        median_areas=counted.median_areas if counted is not None else (),
        objects_table=counted.table if counted is not None else None,
        polygons=counted.polygons if counted is not None else None,
        foreground_fraction=job.view.foreground_fraction,
        chunks_skipped=inferred.chunks_skipped,
        uncertainty=finalized.uncertainty,
        mean_uncertainty=inferred.mean_uncertainty,
        uncertain_fraction=inferred.uncertain_fraction,
        compile_seconds=inferred.compile_seconds,
    )


def _predicted_pixels(evaluated: Evaluated | None) -> tuple[int, ...]:
    """Predicted pixels per class from the confusion matrix, for a mask reused from an earlier run."""
    return () if evaluated is None else tuple(int(n) for n in evaluated.confusion.sum(axis=0))


def finished_report(job: ImageJob) -> ImageReport | None:
    """The report of an image finished earlier under this job's ``done_key``, or None.

    Such an image is skipped now: nothing is computed.
    """
    record = read_commit(location(job.out_dir))
    if not record or record.get("fingerprint") != job.done_key or not is_committed(job):
        return None
    earlier = ImageReport.from_json(record["report"])
    return replace(earlier, skipped=True, megapixels_computed=0.0, megapixels_per_second=None, chunks_computed=0)


def commit_image(
    job: ImageJob, report: ImageReport, source: ImageSource, stats: BandStats, class_names: tuple[str, ...]
) -> None:
    """Write ``preview.png`` and ``metrics.json``, then, last, the image's ``done.json`` commit record."""
    if job.fence is not None:
        job.fence.check()
    png = render_preview(source, open_image(report.mask), job.truth, stats, class_names=class_names)
    location(job.path("preview.png")).write_bytes(png)
    write_json(job.path("metrics.json"), report.to_json())
    write_commit(location(job.out_dir), job.done_key, report.to_json())


def write_batch_report(
    plan: BatchPlan,
    out: str,
    reports: list[ImageReport],
    config: EvalConfig,
    worst: int = 4,
    failures: Sequence[ImageFailure] = (),
    canary: Sequence[CanaryFigure] = (),
) -> list[str]:
    """Write ``<out>/report/``, every file rendered before the first is written.

    With truths, the files are the per-image CSV, batch summary, confusion heatmap, per-class bars and overlays of
    the ``worst`` images by mean Dice; with ``--save-uncertainty``, truth or not, pictures of the batch's ``worst``
    most uncertain chunks; always, ``index.html``, the page of the reports, ``failures`` and ``canary`` figures.
    Returns the URLs written in name order.
    """
    class_names = plan.model.card.class_names
    scored = [r for r in reports if r.confusion is not None]
    files: dict[str, bytes] = {}
    if scored:
        results = [ImageResult(r.name, r.confusion, None, r.objects) for r in scored]  # type: ignore[arg-type]
        jobs = {job.name: job for job in plan.jobs}
        files = report_files(results, class_names, lambda name: _thumbnails(jobs[name], config), worst)
    uncertain = most_uncertain((r for report in reports for r in chunk_uncertainties(report, plan.chunk)), worst)
    stores = {job.name: job.store for job in plan.jobs}
    max_nats = math.log(max(2, len(class_names)))
    files.update(uncertain_overlays(uncertain, lambda r: _uncertain_crop(stores[r.image], r.region), max_nats))
    page = [_page_image(r) for r in reports]
    title = f"segpipe batch report: {plan.model.card.name}"
    files["index.html"] = index_html(page, failures, class_names, canary, tuple(files), title, uncertain)
    target = location(out).child("report")
    written = []
    for name, data in sorted(files.items()):
        written.append(target.child(name).url)
        target.child(name).write_bytes(data)
    return written


def _page_image(report: ImageReport) -> PageImage:
    scores = report.evaluation.scores if report.evaluation is not None else None
    return PageImage(
        report.name,
        report.class_pixels,
        report.object_counts,
        defined(scores.mean_dice) if scores is not None else None,
        defined(scores.mean_iou) if scores is not None else None,
        report.mean_confidence,
        report.skipped,
        report.mean_uncertainty,
        report.uncertain_fraction,
    )


def chunk_uncertainties(report: ImageReport, chunk: int) -> Iterator[UncertainRegion]:
    """Each chunk of the image's entropy array with its figures, read one at a time (none without the array)."""
    if report.uncertainty is None:
        return
    source = open_image(report.uncertainty)
    stored = source.stored_array()
    for region in chunk_grid(source.height, source.width, chunk):
        yield region_figures(report.name, region, source.read(*region, stored)[0])


def _uncertain_crop(store: str, region: Region, max_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Band 0 of the stored image (0..1 by its stats) and the entropies in ``region``, strided to ``max_side``."""
    stride = max(1, -(-max(region.height, region.width) // max_side))
    image = open_image(location(store).child("0").url).read(*region)[:1]
    stats = stored_stats(store)
    first_band = BandStats(stats.low[:1], stats.high[:1])
    scaled = np.clip(normalize.apply(strided_sample(image, region, stride), first_band)[0], 0, 1)
    values = open_image(location(store).child("uncertainty", "0").url).read(*region)[0]
    return scaled, strided_sample(values, region, stride).astype(np.float32)


def _thumbnails(job: ImageJob, config: EvalConfig, max_side: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (0..1), prediction and truth thumbnails of a finished image, read chunk by chunk."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth to draw an overlay against")
    tiled = open_image(location(job.store).child("0").url)
    image = gray_thumbnail(tiled, stored_stats(job.store), max_side)
    truth = truth_classes(thumbnail(job.truth, max_side), config)
    return image, thumbnail(open_image(job.mask), max_side), truth


def write_json(url: str, payload: dict[str, Any]) -> str:
    """Write JSON atomically on any store (a crash never leaves half a file); returns ``url``."""
    try:
        text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
        location(url).write_bytes(text.encode())
    except OSError as exc:
        raise OutputError(f"{url}: cannot write ({exc})") from None
    return url


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
