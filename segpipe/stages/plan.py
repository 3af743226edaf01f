"""Plan a batch: the images as jobs, named, with their output folders and fingerprints.

Every input, truth, the model and the output location is validated first (``stages.validation``); the keys come
from ``stages.fingerprints``. Writes nothing; planned once per run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from segpipe.config import TilingConfig
from segpipe.errors import InputError, SegpipeWarning
from segpipe.io.images import ImageSource, open_image
from segpipe.stages.fingerprints import job_keys
from segpipe.stages.settings import CanarySet, RunSettings
from segpipe.stages.validation import check_channels, check_existing_mask, open_truth, scan_contents
from segpipe.stages.view import InputView, plan_view, with_foreground
from segpipe.storage import InputIdentity, location
from segpipe.tiling import round_up

if TYPE_CHECKING:
    from segpipe.models import ModelRef
    from segpipe.storage.lease import LeaseFence

IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr", ".svs", ".ndpi", ".scn", ".bif")


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
    role: str = "input"  # or "canary": a fixed labelled image scored every run to track the model's quality
    identity: InputIdentity | None = None  # what the store reported of the input when planned (size, etag/mtime)
    fence: LeaseFence | None = None  # set while this run holds the output's lease: every write checks it
    view: InputView = field(default_factory=InputView)  # bands, level, resampling and foreground chunks read

    @property
    def grid(self) -> tuple[int, int, int]:
        """(C, rows, columns) of the grid the model runs on and the mask is written at."""
        return self.view.grid(self.image)

    def path(self, leaf: str) -> str:
        """URL of ``leaf`` in the image's output folder."""
        return location(self.out_dir).child(leaf).url

    @property
    def store(self) -> str:
        """The image's OME-Zarr: ``<out>/<name>/<name>.ome.zarr``, built in place."""
        return self.path(f"{self.name}.ome.zarr")

    @property
    def mask(self) -> str:
        """Level 0 of the label mask: a (Y, X) array."""
        return mask_path(self.store)


def mask_path(store: str) -> str:
    """Level 0 of the label mask inside an OME-Zarr store."""
    return location(store).child("labels", "mask", "0").url


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
    save_uncertainty: bool = False


def plan_batch(
    images: list[str],
    truths: list[str] | None,
    settings: RunSettings,
    tracking_uri: str | None = None,
    canary: CanarySet | None = None,
    inputs_readable: Callable[[], None] | None = None,
) -> BatchPlan:
    """Validate inputs, truths, model and output location, and plan one job per image plane; writes nothing.

    ``tracking_uri`` is where ``models:/NAME@ALIAS`` models are looked up (default: ``MLFLOW_TRACKING_URI``);
    ``canary`` adds its images as jobs of role ``canary``; ``inputs_readable`` is called once every input opened,
    before the model loads (the CLI starts Prefect's server there, so its start-up overlaps the model's).

    Raises:
        InputError, ModelError, OutputError, ConfigError: one line naming the file and the fault.
    """
    if not images:
        raise InputError("no input images given")
    stacks = [open_image(p) for p in images]
    if inputs_readable is not None:
        inputs_readable()
    from segpipe.models import resolve_model  # torch loads only once the inputs are known to be readable

    channels = len(settings.bands) if settings.bands is not None else stacks[0].channels
    model = resolve_model(
        settings.model,
        settings.trust_model_pickle,
        channels=channels,
        tracking_uri=tracking_uri,
        trust_code=settings.trust_model_code,
    )
    for assumption in model.assumptions:
        warnings.warn(assumption, SegpipeWarning, stacklevel=2)
    location(settings.out).check_writable()
    chunk, tile, halo = resolve_tiling(settings.tiling, model)
    stride = window_stride(tile, settings.tiling.overlap, model.card.size_divisor)
    plan = BatchPlan(model, chunk, tile, halo, (), settings.tiling, stride, settings.save_probabilities)
    plan = replace(plan, save_uncertainty=settings.save_uncertainty)
    out = location(settings.out)
    jobs = _jobs(stacks, truths, out.url, "input", plan, settings)
    if canary is not None:
        canary_stacks = [open_image(p) for p in canary.images]
        jobs += _jobs(canary_stacks, list(canary.truths), out.child("canary").url, "canary", plan, settings)
    for job in jobs:
        scan_contents(job.view.source(job.image), job.truth, model, settings.evaluation, chunk)
        if not settings.overwrite:
            check_existing_mask(job.store, job.infer_key)
    return replace(plan, jobs=jobs)


def _jobs(
    stacks: list[ImageSource], truths: list[str] | None, out: str, role: str, plan: BatchPlan, settings: RunSettings
) -> tuple[ImageJob, ...]:
    """The validated, fingerprinted jobs of ``stacks`` (one per plane), their outputs under ``out``."""
    if truths and len(truths) != len(stacks):
        raise InputError(f"{len(stacks)} images but {len(truths)} truths: give one truth per image, in order")
    picked, views = [], []
    for stack in stacks:
        source, view = _view(stack, plan, settings)
        check_channels(view.source(source), plan.model)
        picked.append(source)
        views.append(view)
    truth_stacks = None
    if truths:
        truth_stacks = [open_truth(t, s, v.grid(s)[1:]) for t, s, v in zip(truths, picked, views, strict=True)]
    sources, truth_sources, names = _planes(picked, truth_stacks)
    view_of = {stack.path: view for stack, view in zip(picked, views, strict=True)}
    _check_unique(sources, names)
    truth_of: list[ImageSource | None] = list(truth_sources) if truth_sources else [None] * len(sources)
    return tuple(
        _keyed_job(
            ImageJob(name, source, truth, location(out).child(name).url, role=role, view=view_of[source.path]),
            plan,
            settings,
        )
        for name, source, truth in zip(names, sources, truth_of, strict=True)
    )


def _view(stack: ImageSource, plan: BatchPlan, settings: RunSettings) -> tuple[ImageSource, InputView]:
    """The band-picked ``stack`` and the view the model reads of it: level, resampling, foreground chunks."""
    card = plan.model.card
    bands = settings.bands if settings.bands is not None else card.bands
    picked, view, levels = plan_view(
        stack, bands, settings.level, settings.pixel_size, card.model_pixel_size, card.tolerance
    )
    _, rows, cols = view.grid(picked)
    context = plan.tile if plan.tiling.stitch == "gaussian" else plan.halo
    return picked, with_foreground(view, settings.foreground, stack, levels, (rows, cols), plan.chunk, context)


def _keyed_job(job: ImageJob, plan: BatchPlan, settings: RunSettings) -> ImageJob:
    """``job`` with its fingerprints and the input identity they were computed from."""
    keys = job_keys(job.image, job.truth, plan, settings, job.view)
    return replace(job, ingest_key=keys.ingest, infer_key=keys.infer, done_key=keys.done, identity=keys.identity)


def _check_unique(sources: list[ImageSource], names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(
            f"{sources[names.index(duplicates[0])].path}: two inputs share the output name {duplicates[0]!r}"
        )


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
            image_name(stack.path) + (f"-{p.plane_axis}{p.plane:04d}" if p.plane is not None else "") for p in planes
        ]
        if truths:
            truth_planes += truths[i].plane_sources() if truths[i].planes > 1 else [truths[i]] * len(planes)
    return sources, truth_planes if truths else None, names


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


def image_name(path: str) -> str:
    """The output name of an input: its file or folder name without the image suffix."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
