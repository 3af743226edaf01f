"""Segment one TIFF with MONAI's ``sliding_window_inference`` as a user would; run alone so its memory is its own.

    python -m bench.monai_infer IMAGE MASK [--window 320] [--overlap 0.2] [--batch-size 8] [--channels-last]

Reads the whole image (``tifffile.imread``: MONAI needs the array in memory), normalises it as segpipe does
(1st..99.8th percentile of a strided sample), runs the built-in U-Net over ``window``^2 windows with
``overlap`` (MONAI's default uniform blending) on all cores, and writes the argmax as a deflate-compressed
TIFF. Prints the seconds of each step as JSON. The model is loaded as a MONAI user loads it, in PyTorch's default
NCHW layout; ``--channels-last`` converts it to NHWC as segpipe's predictor does (one line a user could add).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import tifffile
import torch
from monai.inferers import sliding_window_inference

from segpipe import normalize
from segpipe.models import resolve_model
from segpipe.models.cache import build_model, model_payload

T = TypeVar("T")


def timed(seconds: dict[str, float], step: str, work: Callable[[], T]) -> T:
    """Run ``work`` and record its wall time under ``step``."""
    started = time.perf_counter()
    result = work()
    seconds[step] = time.perf_counter() - started
    return result


def normalised(pixels: np.ndarray) -> torch.Tensor:
    """(1, 1, H, W) float32, scaled with segpipe's percentile statistics."""
    stride = normalize.sample_stride(*pixels.shape)
    stats = normalize.BandStats.from_samples(pixels[None, ::stride, ::stride])
    return torch.from_numpy(normalize.apply(pixels[None], stats)[None])


def builtin_module(channels_last: bool) -> torch.nn.Module:
    """The built-in U-Net's weights on the CPU, in NCHW (PyTorch's default) or NHWC layout."""
    ref = resolve_model("builtin")
    module = build_model(ref, model_payload(ref), torch.device("cpu"))
    assert isinstance(module, torch.nn.Module)
    module = module.eval()
    return module.to(memory_format=torch.channels_last) if channels_last else module  # type: ignore[call-overload]


def segment(module: torch.nn.Module, inputs: torch.Tensor, window: int, overlap: float, batch_size: int) -> np.ndarray:
    """The uint8 argmax of MONAI's blended logits."""
    with torch.inference_mode():
        logits = sliding_window_inference(inputs, (window, window), batch_size, module, overlap=overlap)
        assert isinstance(logits, torch.Tensor)
        return logits.argmax(dim=1)[0].to(torch.uint8).numpy()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("image")
    parser.add_argument("mask")
    parser.add_argument("--window", type=int, default=320)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels-last", action="store_true", help="the model in NHWC layout, as segpipe runs it")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    seconds: dict[str, float] = {}
    pixels = timed(seconds, "read", lambda: tifffile.imread(args.image))
    inputs = timed(seconds, "normalize", lambda: normalised(pixels))
    module = timed(seconds, "load_model", lambda: builtin_module(args.channels_last))
    mask = timed(seconds, "infer", lambda: segment(module, inputs, args.window, args.overlap, args.batch_size))
    timed(seconds, "write", lambda: tifffile.imwrite(args.mask, mask, compression="zlib"))
    layout = "channels_last" if args.channels_last else "contiguous"
    result = {"seconds": seconds, "shape": list(mask.shape), "torch_threads": torch.get_num_threads(), "layout": layout}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
