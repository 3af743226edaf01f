"""Models held by this process: installed model bytes and loaded predictors, once per model and device.

On a Dask cluster the client reads a model's bytes once (``model_payload``) and a worker plugin hands them to
each worker (``install_model``); ``load_predictor`` then builds the model from those bytes on the worker's own
device, so workers need no disk, bucket or registry access. Without an installed payload a worker asks the
source of ``ref.uri`` (``segpipe.models.sources``) for the bytes. ``loaded_models()`` says what this process holds
(e.g. ask every worker with ``client.run(loaded_models)``: one entry per worker and device).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import torch

from segpipe.config import InferenceConfig
from segpipe.errors import ModelError
from segpipe.models.backends import get_backend
from segpipe.models.predictor import LoadedModel, Predictor, select_device
from segpipe.models.ref import ModelRef, sha256_of
from segpipe.models.sources import source_for

DEFAULT_COMPILE = InferenceConfig().compile
MAX_MODELS = 4  # distinct models (by sha256) kept per process; the least recently used goes first

_LOCK = threading.RLock()
_PAYLOADS: dict[str, bytes] = {}  # sha256 -> bytes
# (sha256, identity, device, compile mode) -> predictor, in load order
_PREDICTORS: dict[tuple[str, str, str, str], Predictor] = {}
_RECENT: OrderedDict[str, None] = OrderedDict()  # sha256 of held models, least recently used first


def install_model(ref: ModelRef, payload: bytes) -> None:
    """Keep ``payload`` (the model's bytes) in this process so ``load_predictor(ref)`` reads nothing."""
    digest = sha256_of(payload)
    if digest != ref.sha256:
        raise ModelError(f"{ref.uri}: installed bytes have sha256 {digest[:12]}..., the model {ref.sha256[:12]}...")
    with _LOCK:
        _PAYLOADS[ref.sha256] = payload
        _touch(ref.sha256)


def uninstall_model(ref: ModelRef) -> None:
    """Forget ``ref``'s bytes and every predictor loaded from them in this process."""
    with _LOCK:
        _forget(ref.sha256)


def model_payload(ref: ModelRef) -> bytes:
    """The model's bytes: installed ones, else read from ``ref.uri`` (checked against ``ref.sha256``)."""
    with _LOCK:
        payload = _PAYLOADS.get(ref.sha256)
    if payload is not None:
        return payload
    payload = source_for(ref.uri).read(ref)
    digest = sha256_of(payload)
    if digest != ref.sha256:
        raise ModelError(
            f"{ref.uri}: the model changed since it was resolved (sha256 {digest[:12]}..., expected "
            f"{ref.sha256[:12]}...); resolve it again"
        )
    return payload


def load_predictor(
    ref: ModelRef, device: str = "auto", torch_threads: int | None = None, compile: str = DEFAULT_COMPILE
) -> Predictor:
    """The predictor for ``ref`` on ``device`` (``auto``: CUDA when available), loaded once per process.

    The model is prepared by ``compile`` (segpipe.models.optimize; an ``inductor`` model compiles on its first
    pass of each input shape).
    """
    target = select_device(device)
    key = (ref.sha256, _identity(ref), str(target), compile)
    with _LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            if torch_threads and torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)  # before an inductor compile: its kernels keep this count
            predictor = Predictor(_held_or_built(key, ref, target), ref.card, target, compile=compile)
            _PREDICTORS[key] = predictor
        _touch(ref.sha256)
        return predictor


def loaded_models() -> list[tuple[str, str]]:
    """``(sha256, device)`` of every predictor this process holds, oldest first."""
    with _LOCK:
        return [(sha, device) for sha, _, device, _ in _PREDICTORS]


def _held_or_built(key: tuple[str, str, str, str], ref: ModelRef, device: torch.device) -> LoadedModel:
    """The model of the eager predictor ``resolve_model`` left for ``key``, else one built from its bytes.

    Taken over, not copied: a process holds one copy of each model.
    """
    eager = key[:3] + ("eager",)
    held = _PREDICTORS.pop(eager, None) if key != eager else None
    return held.held_model if held is not None else build_model(ref, model_payload(ref), device)


def build_model(ref: ModelRef, payload: bytes, device: torch.device) -> LoadedModel:
    """Build ``ref``'s model from its bytes with its backend; errors name the model."""
    try:
        return get_backend(ref.format).load(payload, ref.card, device)
    except ModelError as exc:
        raise ModelError(f"{ref.uri}: {exc}") from None


def remember(ref: ModelRef, payload: bytes, predictor: Predictor) -> None:
    """Keep what ``resolve_model`` read and loaded, so the client reads and loads each model once."""
    with _LOCK:
        _PAYLOADS[ref.sha256] = payload
        _PREDICTORS[(ref.sha256, _identity(ref), str(predictor.device), predictor.compile)] = predictor
        _touch(ref.sha256)


def _identity(ref: ModelRef) -> str:
    """Format and card: the same bytes under another card (a state_dict's architecture) is another model."""
    return ref.format + json.dumps(ref.card.to_dict(), sort_keys=True)


def _touch(sha256: str) -> None:
    """Mark ``sha256`` as just used; forget the least recently used models beyond ``MAX_MODELS``."""
    _RECENT[sha256] = None
    _RECENT.move_to_end(sha256)
    while len(_RECENT) > MAX_MODELS:
        _forget(next(iter(_RECENT)))


def _forget(sha256: str) -> None:
    _RECENT.pop(sha256, None)
    _PAYLOADS.pop(sha256, None)
    for key in [k for k in _PREDICTORS if k[0] == sha256]:
        del _PREDICTORS[key]
