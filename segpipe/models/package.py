"""bioimage.io model packages (``rdf.yaml`` 0.5, or a ``.zip`` holding one) as segpipe models.

A package is validated with ``bioimageio.spec`` offline (no file is downloaded, no URL is checked) and read as
one zip: a folder's ``rdf.yaml`` is packed into a zip first (``pack_folder``, byte for byte the same every time,
so its sha256 names it). ``read_package`` maps the description onto a ``ModelCard``: axes (b, c, y, x) to
(C, Y, X), preprocessing and postprocessing onto segpipe's steps, the output's halo, its channel names as class
names; the weights are chosen in the order TorchScript, ONNX, pytorch_state_dict (this last one runs the
package's architecture code, so only with ``trust_code``). The card's ``architecture`` records the chosen
weights, which the ``bioimageio`` backend loads.
"""

from __future__ import annotations

import io
import os
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import ConfigError, ModelError, one_line
from segpipe.models.card import ModelCard
from segpipe.postprocessing import Activation
from segpipe.preprocessing import Step, parse_step

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
WEIGHT_ORDER = ("torchscript", "onnx", "pytorch_state_dict")
DEFAULT_TOLERANCE = 1e-4  # absolute, when the package declares no reproducibility tolerance
EXTRA = "bioimageio"
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # a packed folder's zip entries carry no time, so its bytes never change
MAX_REASON = 160  # characters of the validator's first error quoted (a list of allowed values is cut)
_PASSTHROUGH = ("ensure_dtype",)  # postprocessing steps that leave float32 logits as they are


@dataclass(frozen=True)
class Tolerance:
    """How close segpipe's output must be to the package's expected output.

    Attributes:
        absolute: allowed absolute difference per element.
        relative: allowed difference relative to the expected value.
        mismatched_per_million: elements per million allowed beyond both.
    """

    absolute: float = DEFAULT_TOLERANCE
    relative: float = 0.0
    mismatched_per_million: int = 0


@dataclass(frozen=True)
class Package:
    """What segpipe reads from a validated package.

    Attributes:
        card: the model card the package maps to (``architecture`` names the weights to load).
        test_input: zip member of the test input (b, c, y, x).
        test_output: zip member of the expected output.
        tolerance: the package's reproducibility tolerance, or ``DEFAULT_TOLERANCE``.
        activation: the output activation the package applies itself (the expected output has it applied).
    """

    card: ModelCard
    test_input: str
    test_output: str
    tolerance: Tolerance
    activation: str


def is_rdf_path(uri: str) -> bool:
    """Whether ``uri`` names a package's description file (``rdf.yaml``, ``bioimageio.yaml``, ``*.bioimageio.yaml``)."""
    name = posixpath.basename(uri.rstrip("/")).lower()
    return name in RDF_NAMES or name.endswith(".bioimageio.yaml")


def rdf_member(payload: bytes | None) -> str | None:
    """The description's name when ``payload`` is a package zip (a description at its root), else None."""
    if not payload or not zipfile.is_zipfile(io.BytesIO(payload)):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return None
    return next((n for n in names if "/" not in n and is_rdf_path(n)), None)


def pack_folder(rdf: str | os.PathLike[str]) -> bytes:
    """The folder of the description ``rdf`` as a zip (description first, files sorted, no timestamps)."""
    path = Path(rdf)
    root = path.parent
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, file in [(path.name, path), *((p.relative_to(root).as_posix(), p) for p in files)]:
            archive.writestr(zipfile.ZipInfo(name, _FIXED_DATE), file.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def read_member(payload: bytes, name: str) -> bytes:
    """One file of the package zip; a ModelError (without the package's name) when it is missing."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        try:
            return archive.read(name)
        except KeyError:
            raise ModelError(f"the package has no file {name!r}") from None


def read_array(payload: bytes, name: str) -> np.ndarray:
    """A ``.npy`` test tensor of the package."""
    try:
        return np.asarray(np.load(io.BytesIO(read_member(payload, name)), allow_pickle=False))
    except ValueError as exc:
        raise ModelError(f"cannot read the test tensor {name} ({one_line(exc)})") from None


def read_package(payload: bytes, label: str, trust_code: bool = False) -> Package:
    """Validate the package zip ``payload`` and map it onto segpipe; errors are one line naming ``label``.

    Raises:
        ModelError: the package fails validation, has no weights segpipe runs, or axes it cannot map.
        ConfigError: a preprocessing step segpipe does not know.
    """
    descr = _validated(payload, label)
    try:
        return _package(descr, trust_code)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _validated(payload: bytes, label: str) -> Any:
    """The package's ``ModelDescr`` from ``bioimageio.spec``, validated without any network access."""
    try:
        from bioimageio.spec import InvalidDescr, ValidationContext, load_description
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError:
        raise ModelError(
            f"{label}: bioimage.io packages need bioimageio.spec: pip install 'segpipe[{EXTRA}]'"
        ) from None
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            # perform_io_checks off: no URL in the description is fetched or probed; weights are hashed on load
            with ValidationContext(perform_io_checks=False, log_warnings=False, progressbar=False):
                descr = load_description(archive, perform_io_checks=False, format_version="latest")
    except Exception as exc:  # the validator raises for a zip it cannot read at all
        raise ModelError(f"{label}: not a valid bioimage.io package ({one_line(exc)})") from None
    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors
        first = errors[0] if errors else None
        reason = " ".join(str(first.msg).split()) if first is not None else "no reason given"
        where = ".".join(str(p) for p in first.loc).split(".function-after")[0] if first is not None else ""
        short = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
        raise ModelError(f"{label}: fails bioimage.io validation ({where}: {short})")
    if not isinstance(descr, ModelDescr):
        raise ModelError(f"{label}: a bioimage.io {getattr(descr, 'type', '?')} description, not a model")
    return descr


def _package(descr: Any, trust_code: bool) -> Package:
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelError(f"{len(descr.inputs)} inputs and {len(descr.outputs)} outputs; segpipe runs 1 and 1")
    tensor_in, tensor_out = descr.inputs[0], descr.outputs[0]
    bands, divisor = _input_axes(tensor_in.axes)
    names = _channel_names(tensor_out.axes, "output")
    activation, threshold = _activation(tensor_out.postprocessing or [])
    if activation == "sigmoid" and len(names) != 1:
        raise ModelError(f"a sigmoid output has 1 channel, this one {len(names)}")
    classes = ("background", names[0]) if activation == "sigmoid" else names
    card = ModelCard(
        name=str(descr.name),
        in_channels=bands,
        num_classes=len(classes),
        class_names=classes,
        size_divisor=divisor,
        halo=_halo(tensor_out.axes),
        preprocessing=_steps(tensor_in.preprocessing or [], bands),
        # the network's outputs are logits unless the package says sigmoid (undeclared: taken as logits)
        postprocessing=Activation("sigmoid" if activation == "sigmoid" else "softmax", threshold),
        architecture=_weights(descr.weights, trust_code) | {"activation": activation},
    )
    return Package(card, _source(tensor_in.test_tensor), _source(tensor_out.test_tensor), _tolerance(descr), activation)


def _input_axes(axes: Any) -> tuple[int, int]:
    """(bands, size divisor) of input axes (batch, channel, y, x); a ModelError for 3-D, time or another order."""
    kinds = [(str(a.type), str(a.id)) for a in axes]
    spelled = ", ".join(f"{i}" if t != "space" else i for t, i in kinds)
    if any(t == "time" for t, _ in kinds) or sum(t == "space" for t, _ in kinds) != 2:
        raise ModelError(f"input axes ({spelled}): segpipe runs 2-D models (batch, channel, y, x), not 3-D or time")
    if [t for t, _ in kinds] != ["batch", "channel", "space", "space"] or [i for _, i in kinds[2:]] != ["y", "x"]:
        raise ModelError(f"input axes ({spelled}): segpipe maps only (batch, channel, y, x)")
    sizes = [axes[2].size, axes[3].size]
    steps = {int(getattr(s, "step", 0) or 0) for s in sizes}
    mins = {int(getattr(s, "min", 0) or 0) for s in sizes}
    if any(isinstance(s, int) for s in sizes) or 0 in steps or len(steps) != 1:
        raise ModelError("input y/x sizes must be min + n*step with the same step (a fixed size cannot be tiled)")
    step = steps.pop()
    if any(m % step for m in mins):
        raise ModelError(f"input minimum size {sorted(mins)} is not a multiple of its step {step}")
    return len(_channel_names(axes, "input")), step


def _channel_names(axes: Any, which: str) -> tuple[str, ...]:
    channel = next((a for a in axes if str(a.type) == "channel"), None)
    if channel is None:
        raise ModelError(f"the {which} has no channel axis")
    return tuple(str(n) for n in channel.channel_names)


def _halo(axes: Any) -> int | None:
    halos = [int(getattr(a, "halo", 0) or 0) for a in axes if str(a.type) == "space"]
    return max(halos) if any(halos) else None


def _steps(descrs: Any, bands: int) -> tuple[Step, ...]:
    """The package's preprocessing as segpipe steps (its own no-op float32 casts left out)."""
    steps: list[Step] = []
    for descr in descrs:
        kind = str(descr.id)
        kwargs = descr.kwargs.model_dump(exclude_none=True) if getattr(descr, "kwargs", None) is not None else {}
        if kind == "ensure_dtype" and kwargs.get("dtype") == "float32":
            continue
        axis = kwargs.pop("axis", None)
        if axis is not None and axis != "channel":
            raise ConfigError(f"preprocessing {kind}: per-{axis} values; segpipe takes them per channel")
        axes = kwargs.pop("axes", None)
        joint = kind in ("scale_range", "zero_mean_unit_variance") and (axes is None or "channel" in axes)
        if bands > 1 and joint:
            raise ConfigError(f"preprocessing {kind}: measures all channels jointly; segpipe per band")
        kwargs.pop("reference_tensor", None)
        try:
            steps.append(parse_step({"id": kind, "kwargs": kwargs}))
        except ConfigError as exc:
            raise ConfigError(f"preprocessing: {exc}") from None
    return tuple(steps)


def _activation(descrs: Any) -> tuple[str, float]:
    """The output activation (softmax, sigmoid, none) and threshold the package's postprocessing applies."""
    kinds = [str(d.id) for d in descrs if str(d.id) not in _PASSTHROUGH]
    threshold = 0.5
    if kinds[-1:] == ["binarize"] and kinds[:-1] == ["sigmoid"]:
        threshold = float(descrs[[str(d.id) for d in descrs].index("binarize")].kwargs.threshold)
        kinds = ["sigmoid"]
    if not kinds:
        return "none", threshold
    if kinds in (["softmax"], ["sigmoid"]):
        return kinds[0], threshold
    raise ConfigError(f"postprocessing {' + '.join(kinds)}: segpipe maps softmax, sigmoid (+ binarize) or none")


def _weights(weights: Any, trust_code: bool) -> dict[str, Any]:
    """The first runnable weights (TorchScript, ONNX, state_dict) as the card's ``architecture``."""
    for kind in WEIGHT_ORDER:
        entry = getattr(weights, kind, None)
        if entry is None:
            continue
        found: dict[str, Any] = {"weights": kind, "source": _source(entry), "sha256": str(entry.sha256 or "")}
        if kind != "pytorch_state_dict":
            return found
        if not trust_code:
            raise ModelError(
                "only pytorch_state_dict weights, whose architecture is Python code from the package: pass "
                "--trust-model-code only if you trust it"
            )
        arch = entry.architecture
        source = getattr(arch, "source", None)
        where = {"file": _source(arch)} if source is not None else {"import_from": str(arch.import_from)}
        return found | where | {"callable": str(arch.callable), "kwargs": dict(arch.kwargs or {})}
    present = [k for k in type(weights).model_fields if getattr(weights, k, None) is not None]
    raise ModelError(
        f"no weights segpipe runs (it has {', '.join(present) or 'none'}; segpipe: {', '.join(WEIGHT_ORDER)})"
    )


def _source(entry: Any) -> str:
    source = entry.source
    text = str(getattr(source, "path", source))
    if "://" in text:
        raise ModelError(f"{text}: a file outside the package (segpipe reads packages offline)")
    return text.replace("\\", "/")


def _tolerance(descr: Any) -> Tolerance:
    config = getattr(descr.config, "bioimageio", None)
    if config is None or "reproducibility_tolerance" not in config.model_fields_set:
        return Tolerance()
    entry = next(iter(config.reproducibility_tolerance), None)
    if entry is None:
        return Tolerance()
    return Tolerance(
        float(entry.absolute_tolerance), float(entry.relative_tolerance), int(entry.mismatched_elements_per_million)
    )
