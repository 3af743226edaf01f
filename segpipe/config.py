"""Frozen settings objects. Validated on construction so bad values fail before any compute or write."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from segpipe.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Settings = TypeVar("Settings", bound="DataclassInstance")


def _require_positive(name: str, value: object, alternative: str | None = None) -> None:
    """Refuse anything but a positive integer (or the literal ``alternative``, when one is allowed)."""
    if alternative is not None and value == alternative:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        allowed = "a positive integer" + (f" or {alternative}" if alternative else "")
        raise ConfigError(f"--{name.replace('_', '-')} must be {allowed}, got {value!r}")


STITCH_MODES = ("trim", "gaussian")
PAD_MODES = ("symmetric", "reflect", "edge", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
TTA_MODES = ("none", "flips", "d4")
COMPILE_MODES = ("eager", "fold", "inductor")  # segpipe.models.optimize
AUTO = "auto"


@dataclass(frozen=True)
class TilingConfig:
    """How an image is cut up and put back together.

    Attributes:
        chunk: edge of a Zarr chunk: the unit that is written, marked done and resumed (an infer task owns a run of
            them).
        tile: edge of one model input inside a chunk (``trim``: before the halo is added; ``gaussian``: the
            sliding window's edge).
        halo: ``trim`` only: context added on every side of a tile, then trimmed. ``None``: the model's default.
        stitch: ``trim`` keeps each tile's centre; ``gaussian`` blends overlapping windows' logits with a
            Gaussian weight (nnU-Net/MONAI style) on one global window grid.
        overlap: ``gaussian`` only: share of a window shared with the next one, in [0, 1).
        pad_mode: how the image is extended past its border (numpy ``np.pad`` mode); ``constant`` pads zeros.
    """

    chunk: int = 1024
    # small enough for a window's activations to stay in a CPU's caches; a GPU wants larger (docs/benchmarks.md)
    tile: int = 256
    halo: int | None = None
    stitch: str = "trim"
    overlap: float = 0.5
    pad_mode: str = "symmetric"

    def __post_init__(self) -> None:
        """Refuse a bad chunk, tile, halo, stitch mode, overlap or pad mode with a ConfigError naming the option."""
        _require_positive("chunk", self.chunk)
        _require_positive("tile", self.tile)
        if self.halo is not None and (not isinstance(self.halo, int) or self.halo < 0):
            raise ConfigError(f"--halo must be an integer >= 0, got {self.halo!r}")
        if self.stitch not in STITCH_MODES:
            raise ConfigError(f"--stitch must be one of {', '.join(STITCH_MODES)}, got {self.stitch!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap!r}")
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(f"--pad-mode must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")


@dataclass(frozen=True)
class InferenceConfig:
    """How the model runs on a worker.

    Attributes:
        batch_size: tiles per forward pass, or ``auto``: one on a CPU (its caches favour small passes:
            bench/tile_sizes.py), on a GPU as many as its free memory holds (up to the tiles in one task).
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
        torch_threads: intra-op threads per worker; ``None`` lets the cluster size it.
        precision: ``fp32``, or ``bf16``/``fp16`` autocast (faster on GPUs with tensor cores; masks may differ
            slightly from fp32: compare before switching).
        tta: test-time augmentation: ``none``, ``flips`` (each window also predicted flipped left-right, up-down
            and both: 4 passes) or ``d4`` (those and their transposes: 8; windows are square). The copies'
            softmax outputs are mapped back and averaged before stitching.
        compile: how a torch model is prepared on each worker (segpipe.models.optimize): ``fold`` (default:
            conv + batch norm merged, no compile step), ``eager`` (the model as loaded: the off switch) or
            ``inductor`` (``torch.compile``: 10-23 s of compile per worker on a 2-core CPU, paid back after
            about a thousand windows; bench/compile.py measures it).
    """

    batch_size: int | str = "auto"
    device: str = "auto"
    torch_threads: int | None = None
    precision: str = "fp32"
    tta: str = "none"
    compile: str = "fold"

    def __post_init__(self) -> None:
        """Refuse a bad batch size, thread count, device, precision, TTA or compile mode: a ConfigError naming it."""
        _require_positive("batch_size", self.batch_size, alternative=AUTO)
        if self.torch_threads is not None:
            _require_positive("torch_threads", self.torch_threads)
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are scored.

    Attributes:
        ignore_index: truth label excluded from every metric (``None``: nothing ignored).
        truth_instances: truth holds instance ids (0 = background); any id > 0 counts as class 1.
        truth_mapping: truth holds instance ids, each mapped to a class by these (id, class) pairs (0 is
            background unless mapped); every id in the truth must be mapped.
    """

    ignore_index: int | None = None
    truth_instances: bool = False
    truth_mapping: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        """Refuse a truth mapping with a negative instance id or class."""
        if self.truth_mapping is not None and any(c < 0 or i < 0 for i, c in self.truth_mapping):
            raise ConfigError("--truth-mapping: instance ids and classes must be >= 0")


@dataclass(frozen=True)
class LeaseConfig:
    """How a run claims its outputs so that no two runs write one output at once.

    Attributes:
        enabled: take a lease per output image (``--no-lease`` turns it off, for stores without conditional
            writes where only one run writes at a time).
        wait: wait for a run that holds a lease instead of refusing (``--wait``); a holder with the same
            fingerprint is always waited for.
        seconds: how long a lease lasts unless renewed; a holder that dies frees its outputs after this long.
    """

    enabled: bool = True
    wait: bool = False
    seconds: float = 60.0

    def __post_init__(self) -> None:
        """Refuse a lease too short to be renewed in time."""
        if not isinstance(self.seconds, (int, float)) or isinstance(self.seconds, bool) or self.seconds < 1:
            raise ConfigError(f"--lease-seconds must be a number of at least 1, got {self.seconds!r}")


@dataclass(frozen=True)
class ObjectsConfig:
    """Whether and how objects are found in the mask (``--objects``).

    Attributes:
        enabled: find the connected components of every foreground class, measure them and draw their polygons.
        connectivity: 4 (pixels sharing an edge) or 8 (an edge or a corner).
        simplify: polygon simplification tolerance in pixels (0: the exact pixel outlines).
        geojson: also write the polygons as QuPath-style GeoJSON (``--export-geojson``).
    """

    enabled: bool = False
    connectivity: int = 4
    simplify: float = 0.0
    geojson: bool = False

    def __post_init__(self) -> None:
        """Refuse a connectivity other than 4 or 8 and a negative tolerance."""
        if self.connectivity not in (4, 8):
            raise ConfigError(f"--connectivity must be 4 or 8, got {self.connectivity!r}")
        if not isinstance(self.simplify, (int, float)) or self.simplify < 0:
            raise ConfigError(f"--simplify must be a number of pixels >= 0, got {self.simplify!r}")


def to_dict(config: DataclassInstance) -> dict[str, Any]:
    """Flat dict of a settings object, for logging."""
    return asdict(config)


def from_dict(cls: type[Settings], values: dict[str, Any]) -> Settings:
    """Build ``cls`` from a dict, refusing keys it does not know."""
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    return cls(**values)
