"""A loaded model on one device: ``predictor.predict(batch) -> logits`` (float32 (B, C, h, w) -> (B, K, h, w))."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from segpipe import tta
from segpipe.models.card import ModelCard
from segpipe.models.optimize import optimize

log = logging.getLogger(__name__)


@runtime_checkable
class BatchModel(Protocol):
    """A model that is not a ``torch.nn.Module`` (ONNX Runtime, the classical baseline): numpy in, numpy out."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 -> (B, K, h, w) logits."""
        ...


LoadedModel = torch.nn.Module | BatchModel
AUTO_BATCH_MEMORY_SHARE = 0.5  # of a GPU's free memory that one forward pass may take (the rest: allocator slack)


def batch_for_memory(free_bytes: int, bytes_per_window: int, limit: int, share: float = AUTO_BATCH_MEMORY_SHARE) -> int:
    """Windows per forward pass: ``share`` of the free memory over one window's peak use, between 1 and ``limit``."""
    if bytes_per_window <= 0:
        return limit
    return max(1, min(limit, int(free_bytes * share // bytes_per_window)))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of each precision


def to_channels_last(module: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """The module with its 4-D weights in channels-last (NHWC) layout, and whether that worked.

    Convolutions run faster on it: bench/tile_sizes.py measured the built-in U-Net at 1.9x the windows per
    second on this CPU (oneDNN's NHWC kernels), and tensor cores want it on a GPU. Logits differ from the
    NCHW ones by rounding only (about 1e-6). A module that cannot convert keeps its layout.
    """
    try:
        return module.to(memory_format=torch.channels_last), True  # type: ignore[call-overload]
    except (RuntimeError, TypeError):
        return module, False


class Predictor:
    """A loaded model on one device: ``predictor.predict(batch)`` (or ``predictor(batch)``) -> logits."""

    def __init__(
        self,
        model: LoadedModel,
        card: ModelCard,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: str = "eager",
    ) -> None:
        """Put ``model`` on ``device`` (channels-last for a torch module when asked), to run under ``precision``.

        A torch module is then prepared by ``compile`` (segpipe.models.optimize: ``eager``, ``fold``, ``inductor``).
        """
        self.card = card
        self.device = device
        self.precision = precision
        self.augmentation: tuple[tta.Transform, ...] = tta.transforms("none")
        self.module: torch.nn.Module | None = None
        self.channels_last = False
        self.compile = "eager"  # the mode applied (a model that is not a torch module runs as it is)
        self.compiled = False  # whether the first pass of each input shape compiles
        self.compile_seconds: dict[tuple[tuple[int, ...], str], float] = {}  # (shape, precision) -> first pass
        self._compiled_by: dict[tuple[tuple[int, ...], str], int] = {}  # the same key -> the compiling thread
        self._compile_lock = threading.Lock()
        self._auto_batch: dict[tuple[int, int, int, str], int] = {}  # (C, edge, limit, precision) -> batch
        self._model: BatchModel | None = None
        if isinstance(model, torch.nn.Module):
            self.module = model.to(device).eval()
            if channels_last:
                self.module, self.channels_last = to_channels_last(self.module)
            prepared = optimize(self.module, compile)
            self.module, self.compile, self.compiled = prepared.module, prepared.mode, prepared.compiled
        else:
            self._model = model

    @property
    def held_model(self) -> LoadedModel:
        """What this predictor runs: its torch module (as prepared) or its other model."""
        model = self.module if self.module is not None else self._model
        assert model is not None
        return model

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 pixels -> (B, K, h, w) float32 class logits, as numpy on the host.

        Logits whose softmax is the class probabilities: the card's output activation (``postprocessing``) is
        applied, and under test-time augmentation they are the log of the copies' mean softmax.
        """
        return self.launch(batch)()

    def launch(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        """Start the forward pass of ``batch``; the returned call waits for and returns its logits.

        On a GPU the pass is queued (copy from page-locked memory, kernels) and this returns at once, so the
        caller can cut and normalise the next batch while the GPU computes this one; on a CPU the pass runs
        here and the call only hands its result over. Under test-time augmentation the copies of the batch go
        through as few passes as the GPU's free memory allows; on a CPU each copy of the batch is one pass.
        """
        if len(self.augmentation) == 1:
            return self._launch_plain(batch)
        copies = tta.augment(batch, self.augmentation)
        edge = copies.shape[-1]
        # a CPU runs each copy of the batch as its own pass (its caches favour small passes: bench/tta.py)
        per_pass = self._plain_batch(copies.shape[1], edge, len(copies)) if self.device.type == "cuda" else len(batch)
        passes = [self._launch_plain(copies[i : i + per_pass]) for i in range(0, len(copies), per_pass)]
        group = self.augmentation
        return lambda: tta.merge(np.concatenate([wait() for wait in passes]), group)

    def _launch_plain(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        """Start one forward pass of ``batch``; the call returns its class logits (the activation applied)."""
        to_logits = self.card.postprocessing.to_logits
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        if self._model is not None:
            logits = to_logits(np.asarray(self._model.predict(inputs), dtype=np.float32))
            return lambda: logits
        assert self.module is not None
        tensor = torch.from_numpy(inputs)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":  # page-locked host memory: the copy to the GPU runs asynchronously
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        output = self._forward(tensor)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"model returned a {type(output).__name__}, not a tensor")
        return lambda: to_logits(np.ascontiguousarray(output.float().cpu().numpy()))

    def _forward(self, tensor: torch.Tensor) -> object:
        """The module's output for ``tensor``; a compiled module's first pass per shape compiles, once, timed."""
        assert self.module is not None
        key = (tuple(tensor.shape), self.precision)
        if not self.compiled or key in self.compile_seconds:
            return self._call(tensor)
        with self._compile_lock:  # worker threads sharing this predictor wait for one compile, not start their own
            if key in self.compile_seconds:
                return self._call(tensor)
            started = time.perf_counter()
            output = self._call(tensor)
            self.compile_seconds[key] = time.perf_counter() - started
            self._compiled_by[key] = threading.get_ident()
        log.info("segpipe: %s compiled for %s %s in %.1f s", self.card.name, key[0], key[1], self.compile_seconds[key])
        return output

    def compiled_here(self, before: set[tuple[tuple[int, ...], str]]) -> float:
        """Seconds of the compiles this thread ran since ``set(self.compile_seconds)`` was ``before``."""
        me = threading.get_ident()
        return sum(s for k, s in self.compile_seconds.items() if k not in before and self._compiled_by.get(k) == me)

    def _call(self, tensor: torch.Tensor) -> object:
        """``module(tensor)`` under inference mode and the precision's autocast."""
        assert self.module is not None
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.module(tensor)

    def batch_size_for(self, channels: int, edge: int, limit: int) -> int:
        """The ``auto`` batch size for (``channels``, ``edge``, ``edge``) windows, at most ``limit``.

        ``limit`` is the windows one task has. 1 on a CPU or for a model that is not a torch module (one window per
        pass runs fastest on a CPU, whose caches it fits); on a GPU, from its free memory and one window's measured
        peak use, probed once. Under test-time augmentation each window counts as its copies.
        """
        copies = len(self.augmentation)
        return max(1, self._plain_batch(channels, edge, limit * copies) // copies)

    def _plain_batch(self, channels: int, edge: int, limit: int) -> int:
        """Forward-pass size for (``channels``, ``edge``, ``edge``) inputs, at most ``limit``: see batch_size_for."""
        if self.device.type != "cuda" or self.module is None:
            return 1
        key = (channels, edge, limit, self.precision)
        if key not in self._auto_batch:
            free, per_window = self._probe_memory(channels, edge)
            self._auto_batch[key] = batch_for_memory(free, per_window, limit)
        return self._auto_batch[key]

    def _probe_memory(self, channels: int, edge: int) -> tuple[int, int]:
        """(free bytes, peak bytes of one (``channels``, ``edge``, ``edge``) window's forward pass) on this GPU."""
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._launch_plain(np.zeros((1, channels, edge, edge), np.float32))()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free), int(peak)

    def at_precision(self, precision: str) -> Predictor:
        """This predictor (the same loaded model, nothing reloaded) running under ``precision``.

        ``fp32``, or ``bf16``/``fp16`` autocast (torch modules only; other models run as they are).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == self.precision:
            return self
        view = copy.copy(self)
        view.precision = precision
        return view

    def with_tta(self, mode: str) -> Predictor:
        """This predictor (the same loaded model, nothing reloaded) under test-time augmentation ``mode``.

        ``none``, ``flips`` (identity, h, v, hv) or ``d4`` (the flips and their transposes; square windows).
        """
        group = tta.transforms(mode)
        if group == self.augmentation:
            return self
        view = copy.copy(self)
        view.augmentation = group
        return view

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Alias of :meth:`predict`."""
        return self.predict(batch)

    def __repr__(self) -> str:
        """The model's name, kind and device."""
        kind = type(self.module or self._model).__name__
        return f"Predictor({self.card.name!r}, {kind}, device={self.device}, compile={self.compile})"


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks this process's CUDA device when one is available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
