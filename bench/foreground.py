"""foreground: what ``--foreground tissue`` saves on an RGB slide at 40x-like sampling, a third of it tissue.

The same SVS (0.25 um/px, JPEG levels down to 1/16) segmented whole (``--foreground none``) and with
``--foreground tissue``, by the built-in U-Net's weights with a card for RGB (green band, fixed scaling: no image
statistic, so the masks inside the tissue can be compared). Goal: tissue / whole seconds <= 0.40; the report
gives chunks computed against chunks in the image and whether the masks agree inside the tissue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from bench import data
from bench.goals import Goal, goal_list
from bench.harness import Context, SegpipeRun, ratio

NAME = "foreground"
GOAL = 0.40
MPP = 0.25


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.foreground
    slide, share = slide_with_tissue(ctx, size, MPP)
    model = data.write_rgb_model(ctx.workdir / "models")
    args = ("--model", str(model), "--chunk", str(ctx.profile.slide_chunk))
    ctx.log(f"foreground: segpipe run on a {size}^2 RGB slide, whole then --foreground tissue")
    whole = ctx.segpipe([slide], None, f"foreground-none-{size}", extra=(*args, "--foreground", "none"))
    tissue = ctx.segpipe([slide], None, f"foreground-tissue-{size}", extra=(*args, "--foreground", "tissue"))
    seconds = ratio(tissue.seconds, whole.seconds)
    stages = ratio(_stages(tissue), _stages(whole))
    entry = tissue.report["images"][0]
    check = Goal(NAME, f"tissue/whole seconds {size}^2", seconds, "<=", GOAL)
    return {
        "size": size,
        "mpp": MPP,
        "tissue_share": share,
        "whole": whole.summary(),
        "tissue": tissue.summary(),
        "chunks": entry.get("chunks"),
        "chunks_computed": entry.get("chunks_computed"),
        "chunks_skipped": entry.get("chunks_skipped"),
        "foreground_fraction": entry.get("foreground_fraction"),
        "megapixels_computed": {"whole": _computed(whole), "tissue": _computed(tissue)},
        "mask_equal_inside_tissue": masks_agree(whole, tissue, size),
        "ratios": {check.name: seconds, f"tissue/whole stage seconds {size}^2": stages},
        "goals": goal_list([check]),
    }


def _stages(run: SegpipeRun) -> float:
    """Seconds of the image's stages (ingest, infer, finalize): the command less start-up, plan and reports."""
    return float(sum(run.stage_seconds().values()))


def slide_with_tissue(ctx: Context, size: int, mpp: float, step: int = 1) -> tuple[str, float]:
    """The session's ``size``^2 tissue slide written at ``mpp`` um/px (every ``step``-th pixel), once."""
    key = ("slide", size, mpp, step)
    if key not in ctx.memo:
        image, share = tissue_image(ctx, size)
        path = ctx.workdir / "images" / f"slide{size}_{mpp:g}um.svs"
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx.memo[key] = (str(data.write_slide(path, np.ascontiguousarray(image[::step, ::step]), mpp)), share)
    return ctx.memo[key]  # type: ignore[no-any-return]


def tissue_image(ctx: Context, size: int) -> tuple[np.ndarray, float]:
    """The rendered slide of ``size``^2 and its tissue share, kept for the session."""
    key = ("tissue", size)
    if key not in ctx.memo:
        ctx.memo[key] = data.tissue_image(size)
    return ctx.memo[key]  # type: ignore[no-any-return]


def _computed(run: SegpipeRun) -> float | None:
    value = run.report["images"][0].get("megapixels_computed")
    return None if value is None else float(value)


def masks_agree(whole: SegpipeRun, tissue: SegpipeRun, size: int) -> bool | None:
    """Whether the two masks are equal on the tissue the tissue run computed (None without both masks)."""
    masks = [run.report["images"][0].get("mask") for run in (whole, tissue)]
    if not all(masks):
        return None
    first, second = (np.asarray(zarr.open_array(mask, mode="r")[:]) for mask in masks)
    if first.shape != second.shape:
        return False
    inside = _tissue_truth(first.shape[-2:], size)
    return bool(np.array_equal(first[..., inside], second[..., inside]))


def _tissue_truth(shape: tuple[int, ...], size: int) -> np.ndarray:
    """The drawn discs of tissue on a grid of ``shape`` covering the ``size``^2 slide."""
    rows = (np.arange(shape[0])[:, np.newaxis] + 0.5) * size / shape[0]
    cols = (np.arange(shape[1])[np.newaxis, :] + 0.5) * size / shape[1]
    truth = np.zeros(shape, bool)
    for cy, cx, r in data.TISSUE_DISCS:
        truth |= (rows - cy * size) ** 2 + (cols - cx * size) ** 2 < (r * size) ** 2
    return truth
