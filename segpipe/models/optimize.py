"""Faster forms of a loaded torch model for inference, chosen by ``InferenceConfig.compile``.

- ``eager``: the module as loaded.
- ``fold``: every convolution followed by a batch norm merged into one convolution (a ``Conv2d`` then a
  ``BatchNorm2d`` in one ``nn.Sequential``; a TorchScript model: ``torch.jit.freeze``, which does the same). No
  compile step; bench/compile.py measured the built-in U-Net 1.11x faster per window on a 2-core CPU.
- ``inductor``: ``torch.compile`` (inductor) of the module as loaded (inductor fuses the batch norms itself;
  compiling the folded module measured no faster). The compile runs on the first pass of each input shape, once
  per process (a worker): 10-23 s on that CPU (it needs a C++ compiler), for 1.24-1.41x per window, so it pays
  only after about a thousand windows per worker (docs/models.md). A TorchScript model is not compiled (Dynamo
  cannot trace it): it runs as ``fold``.

Logits differ from ``eager`` by rounding only (about 1e-6 for the built-in U-Net).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segpipe.config import COMPILE_MODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Optimized:
    """A module made ready for inference.

    Attributes:
        module: what to call.
        mode: the mode that was applied (``inductor`` asked of a TorchScript model gives ``fold``).
        folded: conv + batch norm pairs merged.
        note: why less than asked was applied, or ''.
    """

    module: torch.nn.Module
    mode: str
    folded: int = 0
    note: str = ""

    @property
    def compiled(self) -> bool:
        """Whether the first pass of each input shape compiles."""
        return self.mode == "inductor"


def optimize(module: torch.nn.Module, mode: str) -> Optimized:
    """``module`` (in eval mode, on its device, in its layout) in ``mode``: see the module docstring."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "eager":
        return Optimized(module, "eager")
    if isinstance(module, torch.jit.ScriptModule):
        return _freeze_script(module, mode)
    if mode == "fold":
        return Optimized(module, "fold", fold_batchnorm(module))
    compiled: torch.nn.Module = torch.compile(module, dynamic=False)  # type: ignore[assignment]
    return Optimized(compiled, "inductor")


def fold_batchnorm(module: torch.nn.Module) -> int:
    """Merge conv + batch norm pairs of ``module`` into single convolutions, in place; return how many.

    A pair is an eval-mode ``Conv2d`` directly followed by a ``BatchNorm2d`` in one ``nn.Sequential`` (so the
    norm reads nothing but the conv's output); the batch norm becomes ``Identity``.
    """
    folded = 0
    for sequence in [m for m in module.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(sequence._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = sequence._modules[first], sequence._modules[second]
            if _foldable(conv, norm):
                assert isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d)
                sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
                sequence._modules[second] = torch.nn.Identity()
                folded += 1
    return folded


def _foldable(conv: torch.nn.Module | None, norm: torch.nn.Module | None) -> bool:
    """An eval-mode Conv2d and the BatchNorm2d after it, with running statistics to fold."""
    return (
        isinstance(conv, torch.nn.Conv2d)
        and isinstance(norm, torch.nn.BatchNorm2d)
        and not conv.training
        and not norm.training
        and norm.running_mean is not None
        and norm.running_var is not None
    )


def _freeze_script(module: torch.jit.ScriptModule, mode: str) -> Optimized:
    """A TorchScript model frozen (constants inlined, conv + batch norm folded), or as it was if it cannot be."""
    note = "a TorchScript model is not compiled by inductor; frozen instead" if mode == "inductor" else ""
    try:
        frozen: torch.nn.Module = torch.jit.freeze(module.eval())
    except Exception as exc:  # torch raises RuntimeError and others for modules it cannot freeze
        log.info("segpipe: TorchScript model left unfrozen (%s)", str(exc).splitlines()[0] if str(exc) else exc)
        return Optimized(module, "eager", note=f"torch.jit.freeze failed: {type(exc).__name__}")
    return Optimized(frozen, "fold", note=note)
