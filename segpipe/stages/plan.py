"""Plan a batch: validate every input, truth, the model and the output location, and fix where each image's
outputs go and the fingerprints they are valid under. Writes nothing; planned once per run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from segpipe.config import EvalConfig, InferenceConfig, LeaseConfig, TilingConfig, from_dict
from segpipe.errors import InputError, OutputError, SegpipeWarning
from segpipe.io.images import ImageSource, open_image
from segpipe.io.omezarr import read_segpipe_attrs
from segpipe.io.progress import STATE_DIR, fingerprint
from segpipe.storage import InputIdentity, location
from segpipe.tiling import Region, chunk_grid, round_up

if TYPE_CHECKING:
    from segpipe.models import ModelRef
    from segpipe.storage.lease import LeaseFence

IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr")


@dataclass(frozen=True)
class RunSettings:
    """Everything a batch run is configured with; ``out`` is a path or URL (``s3://bucket/prefix``)."""

    model: str = "builtin"
    out: str = "segpipe-out"
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    overwrite: bool = False
    trust_model_pickle: bool = False
    export_tiff: bool = False
    save_probabilities: bool = False
    lease: LeaseConfig = field(default_factory=LeaseConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values (a Prefect deployment's parameters); ``from_dict`` gives the settings back."""
        values = asdict(self)
        mapping = self.evaluation.truth_mapping
        values["evaluation"]["truth_mapping"] = [list(pair) for pair in mapping] if mapping is not None else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSettings:
        """From plain values (Prefect deployments pass parameters as JSON); unknown keys are refused.

        Raises:
            InputError: an unknown key. ConfigError: a bad value.
        """
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown settings: {sorted(unknown)}")
        return cls(
            model=values.get("model", "builtin"),
            out=values.get("out", "segpipe-out"),
            tiling=from_dict(TilingConfig, values.get("tiling") or {}),
            inference=from_dict(InferenceConfig, values.get("inference") or {}),
            evaluation=_eval_config(values.get("evaluation") or {}),
            overwrite=bool(values.get("overwrite", False)),
            export_tiff=bool(values.get("export_tiff", False)),
            save_probabilities=bool(values.get("save_probabilities", False)),
            trust_model_pickle=bool(values.get("trust_model_pickle", False)),
            lease=from_dict(LeaseConfig, values.get("lease") or {}),
        )


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


@dataclass(frozen=True)
class CanarySet:
    """A fixed labelled validation set scored every run (outputs under ``<out>/canary/``); tonight's canary
    mean Dice and class fractions are compared with the last ``nights`` run dates, within ``tolerance``."""

    images: tuple[str, ...]
    truths: tuple[str, ...]
    tolerance: float = 0.02
    nights: int = 7

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CanarySet:
        """From JSON-like values: ``{"images": [...], "truths": [...], "tolerance": 0.02, "nights": 7}``."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown or not values.get("images") or len(values.get("truths") or ()) != len(values["images"]):
            raise InputError(
                f"canary: give images and one truth per image (and optionally tolerance, nights): {values}"
            )
        return cls(
            tuple(values["images"]),
            tuple(values["truths"]),
            float(values.get("tolerance", 0.02)),
            int(values.get("nights", 7)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values; ``from_dict`` gives the set back."""
        return {
            "images": list(self.images),
            "truths": list(self.truths),
            "tolerance": self.tolerance,
            "nights": self.nights,
        }


def plan_batch(
    images: list[str],
    truths: list[str] | None,
    settings: RunSettings,
    tracking_uri: str | None = None,
    canary: CanarySet | None = None,
    inputs_readable: Callable[[], None] | None = None,
) -> BatchPlan:
    """Validate inputs, truths, model and output location; nothing is written. ``tracking_uri`` is where
    ``models:/NAME@ALIAS`` models are looked up (default: ``MLFLOW_TRACKING_URI``); ``canary`` adds its images
    as jobs of role ``canary``; ``inputs_readable`` is called once every input opened, before the model loads
    (the CLI starts Prefect's server there, so its start-up overlaps the model's).

    Raises:
        InputError, ModelError, OutputError, ConfigError: one line naming the file and the fault.
    """
    if not images:
        raise InputError("no input images given")
    stacks = [open_image(p) for p in images]
    if inputs_readable is not None:
        inputs_readable()
    from segpipe.models import resolve_model  # torch loads only once the inputs are known to be readable

    model = resolve_model(
        settings.model, settings.trust_model_pickle, channels=stacks[0].channels, tracking_uri=tracking_uri
    )
    for assumption in model.assumptions:
        warnings.warn(assumption, SegpipeWarning, stacklevel=2)
    location(settings.out).check_writable()
    chunk, tile, halo = resolve_tiling(settings.tiling, model)
    stride = window_stride(tile, settings.tiling.overlap, model.card.size_divisor)
    plan = BatchPlan(model, chunk, tile, halo, (), settings.tiling, stride, settings.save_probabilities)
    out = location(settings.out)
    jobs = _jobs(stacks, truths, out.url, "input", plan, settings)
    if canary is not None:
        canary_stacks = [open_image(p) for p in canary.images]
        jobs += _jobs(canary_stacks, list(canary.truths), out.child("canary").url, "canary", plan, settings)
    for job in jobs:
        _scan_contents(job, model, settings.evaluation, chunk)
        if not settings.overwrite:
            check_existing_mask(job)
    return replace(plan, jobs=jobs)


def _jobs(
    stacks: list[ImageSource], truths: list[str] | None, out: str, role: str, plan: BatchPlan, settings: RunSettings
) -> tuple[ImageJob, ...]:
    """The validated, fingerprinted jobs of ``stacks`` (one per plane), their outputs under ``out``."""
    if truths and len(truths) != len(stacks):
        raise InputError(f"{len(stacks)} images but {len(truths)} truths: give one truth per image, in order")
    for source in stacks:
        _check_channels(source, plan.model)
    truth_stacks = [_open_truth(t, s) for t, s in zip(truths, stacks, strict=True)] if truths else None
    sources, truth_sources, names = _planes(stacks, truth_stacks)
    _check_unique(sources, names)
    truth_of: list[ImageSource | None] = list(truth_sources) if truth_sources else [None] * len(sources)
    return tuple(
        _keyed_job(ImageJob(name, source, truth, location(out).child(name).url, role=role), plan, settings)
        for name, source, truth in zip(names, sources, truth_of, strict=True)
    )


def settings_from_dict(values: dict[str, Any]) -> RunSettings:
    """``RunSettings.from_dict``."""
    return RunSettings.from_dict(values)


def _eval_config(values: dict[str, Any]) -> EvalConfig:
    """EvalConfig from JSON-like values; ``truth_mapping`` may be ``{"17": 1, ...}`` or ``[[17, 1], ...]``."""
    mapping = values.get("truth_mapping")
    if isinstance(mapping, dict):
        mapping = mapping.items()
    pairs = tuple(sorted((int(i), int(c)) for i, c in mapping)) if mapping is not None else None
    return from_dict(EvalConfig, {**values, "truth_mapping": pairs})


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


def _keyed_job(job: ImageJob, plan: BatchPlan, settings: RunSettings) -> ImageJob:
    from segpipe.models import select_device

    identity = location(job.image.path).identity()
    ingest_key = fingerprint({"input": asdict(identity), "plane": job.image.plane, "chunk": plan.chunk, "version": 2})
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
            "precision": settings.inference.precision,
        }
    )
    truth = None
    if job.truth is not None:
        truth = {"input": asdict(location(job.truth.path).identity()), "plane": job.truth.plane}
    done_key = fingerprint({"infer": infer_key, "truth": truth, "evaluation": asdict(settings.evaluation)})
    return replace(job, ingest_key=ingest_key, infer_key=infer_key, done_key=done_key, identity=identity)


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


def check_existing_mask(job: ImageJob) -> None:
    """Refuse to replace a mask committed under another fingerprint, or a store segpipe did not make; an
    unfinished build of segpipe's own (it holds chunk ledgers) is resumed or restarted."""
    store = location(job.store)
    if not store.exists():
        return
    committed = mask_fingerprint(job.store)
    if committed == job.infer_key or (committed is None and store.child(STATE_DIR).exists()):
        return
    raise OutputError(
        f"{job.store}: holds a mask made from another input, model or settings; "
        "pass --overwrite to replace it, or choose another --out"
    )


def mask_fingerprint(store: str) -> str | None:
    """The ``infer_key`` an OME-Zarr store was committed under (written last by finalize), or None."""
    key = read_segpipe_attrs(store).get("infer_key")
    return str(key) if key else None


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


def image_name(path: str) -> str:
    """The output name of an input: its file or folder name without the image suffix."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class ImageScan:
    """Value range of an image (NaN/Inf left out) and its count of NaN/Inf pixels."""

    low: float
    high: float
    nonfinite: int
    pixels: int


def scan_image(source: ImageSource, chunk: int, ignore: int | None = None) -> ImageScan:
    """Range and NaN/Inf count of ``source``, chunk by chunk on the threaded scheduler."""
    task = dask.delayed(_scan_chunk, pure=True)
    parts = dask.compute(
        *[task(source, r, ignore) for r in chunk_grid(source.height, source.width, chunk)], scheduler="threads"
    )
    finite = [p for p in parts if p[3]]
    return ImageScan(
        low=min((p[0] for p in finite), default=0.0),
        high=max((p[1] for p in finite), default=0.0),
        nonfinite=sum(p[2] for p in parts),
        pixels=sum(p[3] for p in parts),
    )


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
