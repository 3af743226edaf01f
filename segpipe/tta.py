"""Test-time augmentation: a window predicted under flips (4) or the dihedral group (8), averaged. Pure numpy.

Each copy's softmax is mapped back to the window's frame and the copies' probabilities averaged; the result is
returned as log-probabilities, so the stitching downstream (which takes logits) sees the averaged probabilities
as its softmax. Each window's output depends on that window alone, so tiled == whole still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segpipe.config import TTA_MODES
from segpipe.errors import ConfigError

TINY = float(np.finfo(np.float32).tiny)  # averaged probabilities are clamped to this before their log


@dataclass(frozen=True)
class Transform:
    """One element of the dihedral group on the last two axes: flips, then (optionally) a transpose."""

    flip_y: bool = False
    flip_x: bool = False
    transpose: bool = False

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) -> the transformed batch (a view)."""
        out = batch[..., ::-1, :] if self.flip_y else batch
        out = out[..., ::-1] if self.flip_x else out
        return out.swapaxes(-1, -2) if self.transpose else out

    def inverse(self, batch: np.ndarray) -> np.ndarray:
        """Undo :meth:`forward` (a view)."""
        out = batch.swapaxes(-1, -2) if self.transpose else batch
        out = out[..., ::-1] if self.flip_x else out
        return out[..., ::-1, :] if self.flip_y else out


FLIPS = tuple(Transform(y, x) for y in (False, True) for x in (False, True))  # identity, h, v, hv
TRANSFORMS: dict[str, tuple[Transform, ...]] = {
    "none": (Transform(),),
    "flips": FLIPS,
    "d4": FLIPS + tuple(Transform(t.flip_y, t.flip_x, True) for t in FLIPS),
}


def transforms(mode: str) -> tuple[Transform, ...]:
    """The transforms of ``mode`` (``none``, ``flips`` or ``d4``); a ConfigError for another."""
    if mode not in TRANSFORMS:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return TRANSFORMS[mode]


def augment(batch: np.ndarray, group: tuple[Transform, ...]) -> np.ndarray:
    """(B, C, h, w) -> (len(group) * B, C, h, w): the batch under each transform, transform-major.

    Raises:
        ConfigError: a transpose is asked for but the windows are not square.
    """
    if any(t.transpose for t in group) and batch.shape[-1] != batch.shape[-2]:
        raise ConfigError(f"--tta d4 needs square windows, got {batch.shape[-2]} x {batch.shape[-1]}")
    return np.ascontiguousarray(np.concatenate([t.forward(batch) for t in group]), dtype=np.float32)


def merge(logits: np.ndarray, group: tuple[Transform, ...]) -> np.ndarray:
    """(len(group) * B, K, h, w) logits of :func:`augment`'s copies -> (B, K, h, w) log of their mean softmax."""
    count = logits.shape[0] // len(group)
    total: np.ndarray | None = None
    for index, transform in enumerate(group):
        part = logits[index * count : (index + 1) * count].astype(np.float32, copy=True)
        part -= part.max(axis=1, keepdims=True)
        np.exp(part, out=part)
        part /= part.sum(axis=1, keepdims=True)
        back = transform.inverse(part)
        total = np.array(back) if total is None else np.add(total, back, out=total)
    assert total is not None
    total /= np.float32(len(group))
    return np.asarray(np.log(np.maximum(total, np.float32(TINY)), dtype=np.float32))
