"""How one chunk is cut into model inputs and its logits put back together. Pure numpy, no I/O.

``TrimWindows``: tiles, each with a halo of context, the halo trimmed from the logits. ``BlendWindows``: the
image's global grid of sliding windows that overlap the chunk, their logits Gaussian-weighted and averaged.
Both hold one chunk's input pixels and what its windows predicted; a stream of chunks can feed their windows to
the model in batches that cross chunk borders (``segpipe.chunk_inference.predict_chunks``). ``TrimWindows`` can keep
labels instead of logits (``streaming``): a tile's kept logits are final once predicted, so a chunk then holds 1
byte per pixel instead of 4 per class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from segpipe import uncertainty
from segpipe.tiling import Region, clip, gaussian_weight, pad_to_region, round_up, tiles_in, window_origins


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned dtype that holds labels ``0..num_classes-1``: uint8, else uint16."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def softmax_in_place(logits: np.ndarray) -> np.ndarray:
    """Turn (K, h, w) float32 ``logits`` into their softmax over axis 0, in place (no K-sized temporaries).

    Returns:
        The (h, w) probability of the largest logit, 1 / sum(exp(logits - max)).
    """
    np.subtract(logits, logits.max(axis=0, keepdims=True), out=logits)
    np.exp(logits, out=logits)
    sums = logits.sum(axis=0, keepdims=True)
    np.divide(logits, sums, out=logits)
    top: np.ndarray = 1.0 / sums[0]
    return top


@dataclass(frozen=True)
class ChunkPrediction:
    """What a chunk's logits come to: labels, summed confidence and, when kept, class probabilities.

    ``labels`` is (h, w); ``confidence_sum`` sums the softmax probability of each pixel's label;
    ``probabilities`` is (K, h, w) float16; ``uncertainty`` the (h, w) float16 softmax entropy (nats), with its
    sum and the count of pixels above ``segpipe.uncertainty.UNCERTAIN_NATS``.
    """

    labels: np.ndarray
    confidence_sum: float
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    entropy_sum: float = 0.0
    uncertain_pixels: int = 0


def predict_labels(
    logits: np.ndarray, keep_probabilities: bool, label_bias: np.ndarray | None = None, keep_uncertainty: bool = False
) -> ChunkPrediction:
    """Labels, confidence and (when asked) probabilities of (K, h, w) float32 ``logits``, which this overwrites.

    ``label_bias``: (K, 1, 1) added to the logits for the argmax only (a sigmoid model's threshold); the
    confidence is then the probability of the chosen label, which need not be the largest.
    """
    if label_bias is None:
        labels = logits.argmax(axis=0).astype(label_dtype(logits.shape[0]))
        confidence = softmax_in_place(logits)  # logits are probabilities from here on
    else:
        labels = (logits + label_bias).argmax(axis=0).astype(label_dtype(logits.shape[0]))
        softmax_in_place(logits)
        confidence = np.take_along_axis(logits, labels[np.newaxis].astype(np.intp), axis=0)[0]
    probabilities = logits.astype(np.float16) if keep_probabilities else None
    confidence_sum = float(confidence.sum(dtype=np.float64))
    if not keep_uncertainty:
        return ChunkPrediction(labels, confidence_sum, probabilities)
    entropy = uncertainty.entropy(logits)
    total, count = float(entropy.sum(dtype=np.float64)), uncertainty.uncertain_pixels(entropy)
    return ChunkPrediction(labels, confidence_sum, probabilities, entropy.astype(np.float16), total, count)


class ChunkWindows(ABC):
    """The model inputs of one chunk (``len`` of them, each (C, edge, edge)) and what they predict.

    ``add`` every window's logits (in any order), then ``prediction()`` gives the chunk's labels (``logits()``
    its (K, h, w) float32 logits, where they are kept).
    """

    keep_probabilities = False
    skipped_pixels = 0  # pixels left as background without being computed (their windows were skipped)
    keep_uncertainty = False  # also the softmax entropy (set by the caller before any window is added)
    label_bias: np.ndarray | None = None  # added to the logits before the label argmax (see predict_labels)
    halved_pixels: np.ndarray | None = None  # the chunk's pixels as level 0 holds them, halved: level 1's part
    num_classes: int

    window: np.ndarray  # (C, H, W) normalised pixels the windows are cut from
    region: Region  # the chunk, in image coordinates
    edge: int

    def __init__(self) -> None:
        """Start with no window's logits in place; subclasses set the pixels, region and edge."""
        self.placed = 0

    @property
    def channels(self) -> int:
        """Bands of the input pixels (C)."""
        return int(self.window.shape[0])

    @abstractmethod
    def __len__(self) -> int:
        """How many model inputs the chunk has."""

    @abstractmethod
    def cut(self, index: int) -> np.ndarray:
        """Window ``index``: (C, edge, edge) normalised pixels."""

    def add(self, index: int, logits: np.ndarray) -> None:
        """Put the (K, edge, edge) logits of window ``index`` in place."""
        self._place(index, logits)
        self.placed += 1

    def drop_input(self) -> None:
        """Let the input pixels go once every window is cut (the logits stay)."""
        self.window = np.empty((self.channels, 0, 0), self.window.dtype)  # not a view: the pixels are freed

    @property
    def complete(self) -> bool:
        """Whether every window's logits are in place."""
        return self.placed == len(self)

    @abstractmethod
    def logits(self) -> np.ndarray:
        """(K, h, w) float32 logits of the chunk (once ``complete``); the caller may overwrite them."""

    def prediction(self) -> ChunkPrediction:
        """The chunk's labels, confidence and (if kept) probabilities, once ``complete``; overwrites its logits."""
        return predict_labels(self.logits(), self.keep_probabilities, self.label_bias, self.keep_uncertainty)

    @abstractmethod
    def _place(self, index: int, logits: np.ndarray) -> None: ...


def trim_edge(height: int, width: int, tile: int, halo: int, size_divisor: int) -> int:
    """Edge of every model input of a ``height`` x ``width`` chunk.

    A tile plus its halo, rounded up to the model's size divisor (a chunk smaller than a tile gets a smaller input).
    """
    return round_up(min(tile, max(height, width)) + 2 * halo, size_divisor)


class TrimWindows(ChunkWindows):
    """Tiles of edge ``tile`` covering the centre of ``window``, each cut with its halo; only its own pixels are kept.

    ``window`` holds the pixels of a chunk grown by ``halo`` on every side. Each tile is padded at the
    bottom/right to ``edge``; keeping only the tile's own pixels of its logits is exact when the halo covers the
    model's receptive field. Tiles in ``skip`` (chunk coordinates; streaming only) are not model inputs: their
    pixels stay background (label 0, probabilities and entropy 0), as a chunk skipped for having no foreground.
    """

    def __init__(
        self,
        window: np.ndarray,
        region: Region,
        halo: int,
        tile: int,
        size_divisor: int,
        num_classes: int,
        streaming: bool = False,
        keep_probabilities: bool = False,
        label_bias: np.ndarray | None = None,
        skip: Collection[Region] = (),
    ) -> None:
        """Plan the tiles of ``window``; ``streaming`` keeps labels (and probabilities) instead of logits.

        Raises:
            ValueError: tiles to ``skip`` without ``streaming`` (kept logits have no background to leave).
        """
        super().__init__()
        if skip and not streaming:
            raise ValueError("TrimWindows skips tiles only when streaming")
        self.window, self.region, self.halo, self.label_bias = window, region, halo, label_bias
        self.num_classes, self.keep_probabilities = num_classes, keep_probabilities
        height, width = window.shape[1] - 2 * halo, window.shape[2] - 2 * halo
        self.edge = trim_edge(height, width, tile, halo, size_divisor)
        tiles = list(tiles_in(Region(0, height, 0, width), tile))
        self.tiles = [t for t in tiles if t not in skip]
        self.skipped_pixels = sum(t.height * t.width for t in tiles if t in skip)
        self._logits = None if streaming else np.zeros((num_classes, height, width), np.float32)
        self._labels = np.zeros((height, width), label_dtype(num_classes))
        self._confidence = 0.0
        keep = streaming and keep_probabilities
        self._probabilities = np.zeros((num_classes, height, width), np.float16) if keep else None
        self._uncertainty: np.ndarray | None = None  # streamed entropy, made on the first tile when kept
        self._entropy = (0.0, 0)

    def __len__(self) -> int:
        """How many tiles cover the chunk."""
        return len(self.tiles)

    def cut(self, index: int) -> np.ndarray:
        """Tile ``index`` with its halo, padded at the bottom/right to (C, edge, edge)."""
        tile, halo = self.tiles[index], self.halo
        crop = self.window[:, tile.y0 : tile.y1 + 2 * halo, tile.x0 : tile.x1 + 2 * halo]
        return pad_to_region(crop, Region(0, crop.shape[1], 0, crop.shape[2]), Region(0, self.edge, 0, self.edge))

    def _place(self, index: int, logits: np.ndarray) -> None:
        t, halo = self.tiles[index], self.halo
        kept = logits[:, halo : halo + t.height, halo : halo + t.width]
        if self._logits is not None:
            self._logits[:, t.y0 : t.y1, t.x0 : t.x1] = kept
            return
        keep = self._probabilities is not None
        tile = predict_labels(np.array(kept, np.float32), keep, self.label_bias, self.keep_uncertainty)
        self._labels[t.y0 : t.y1, t.x0 : t.x1] = tile.labels
        self._confidence += tile.confidence_sum
        if self._probabilities is not None and tile.probabilities is not None:
            self._probabilities[:, t.y0 : t.y1, t.x0 : t.x1] = tile.probabilities
        if tile.uncertainty is not None:
            if self._uncertainty is None:
                self._uncertainty = np.zeros(self._labels.shape, np.float16)
            self._uncertainty[t.y0 : t.y1, t.x0 : t.x1] = tile.uncertainty
            self._entropy = (self._entropy[0] + tile.entropy_sum, self._entropy[1] + tile.uncertain_pixels)

    def logits(self) -> np.ndarray:
        """The chunk's (K, h, w) float32 logits; a ValueError when streaming (only labels are kept)."""
        if self._logits is None:
            raise ValueError("a streaming TrimWindows keeps labels, not logits")
        return self._logits

    def prediction(self) -> ChunkPrediction:
        """The chunk's labels, confidence and (if kept) probabilities, from its logits or its streamed labels."""
        if self._logits is not None:
            return super().prediction()
        total, count = self._entropy
        return ChunkPrediction(self._labels, self._confidence, self._probabilities, self._uncertainty, total, count)


class BlendWindows(ChunkWindows):
    """Every window of the image's global grid that overlaps ``region``, its logits blended by a Gaussian weight.

    Windows have edge ``patch`` and step ``stride``, and are cut from ``window`` (``region`` grown by ``patch`` on
    every side). The logits are the Gaussian-weighted mean over the windows covering each pixel. Only the chunk's
    (K, h, w) sums are kept, never the image's.
    """

    def __init__(
        self,
        window: np.ndarray,
        region: Region,
        patch: int,
        stride: int,
        num_classes: int,
        keep_probabilities: bool = False,
        label_bias: np.ndarray | None = None,
    ) -> None:
        """Find the grid windows overlapping ``region`` and zero its weighted sums."""
        super().__init__()
        self.window, self.region, self.edge, self.label_bias = window, region, patch, label_bias
        self.num_classes, self.keep_probabilities = num_classes, keep_probabilities
        self.origins = window_origins(region, patch, stride)
        self.weight = gaussian_weight(patch)
        self.sums = np.zeros((num_classes, region.height, region.width), np.float32)
        self.norm = np.zeros((region.height, region.width), np.float32)

    def __len__(self) -> int:
        """How many grid windows overlap the chunk."""
        return len(self.origins)

    def cut(self, index: int) -> np.ndarray:
        """Window ``index``: the (C, patch, patch) pixels at its grid origin."""
        y, x = self.origins[index]
        top, left = self.region.y0 - self.edge, self.region.x0 - self.edge  # image coordinates of window[:, 0, 0]
        return self.window[:, y - top : y - top + self.edge, x - left : x - left + self.edge]

    def _place(self, index: int, logits: np.ndarray) -> None:
        (y, x), region, patch = self.origins[index], self.region, self.edge
        inside = clip(Region(y, y + patch, x, x + patch), region.y1, region.x1)
        inside = Region(max(inside.y0, region.y0), inside.y1, max(inside.x0, region.x0), inside.x1)
        src = inside.shift(-y, -x)
        dst = inside.shift(-region.y0, -region.x0)
        w = self.weight[src.y0 : src.y1, src.x0 : src.x1]
        self.sums[:, dst.y0 : dst.y1, dst.x0 : dst.x1] += logits[:, src.y0 : src.y1, src.x0 : src.x1] * w
        self.norm[dst.y0 : dst.y1, dst.x0 : dst.x1] += w

    def logits(self) -> np.ndarray:
        """The chunk's (K, h, w) float32 logits: the weighted sums over the summed weights."""
        return self.sums / self.norm


def window_count(region: Region, stitch: str, tile: int, stride: int) -> int:
    """How many model inputs a chunk covering ``region`` has, without reading it.

    Its tiles (``trim``) or the global-grid windows overlapping it (``gaussian``).
    """
    if stitch == "gaussian":
        return len(window_origins(region, tile, stride))
    return sum(1 for _ in tiles_in(Region(0, region.height, 0, region.width), tile))
