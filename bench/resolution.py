"""resolution: a model card at 0.5 um/px on a slide stored at 0.25 um/px, against the slide stored at 0.5 um/px.

Both SVS files hold the same rendered tissue slide (the coarse one every second pixel of the fine one); the fine
one has a level at 0.5 um/px, which segpipe reads instead of resampling level 0. The card is the foreground
benchmark's RGB U-Net with ``pixel_size`` 0.5 um. Goal: fine / coarse seconds <= 1.2.
"""

from __future__ import annotations

from typing import Any

from bench import data
from bench.foreground import slide_with_tissue
from bench.goals import Goal, goal_list
from bench.harness import Context, ratio

NAME = "resolution"
GOAL = 1.2
MODEL_MPP = 0.5


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.resolution
    fine, _ = slide_with_tissue(ctx, size, MODEL_MPP / 2)
    coarse, _ = slide_with_tissue(ctx, size, MODEL_MPP, step=2)
    model = data.write_rgb_model(ctx.workdir / "models", "unet_rgb_05um", pixel_size=f"{MODEL_MPP}um")
    args = ("--model", str(model), "--chunk", str(ctx.profile.slide_chunk), "--foreground", "none")
    ctx.log(f"resolution: a 0.5 um/px card on a {size}^2 slide at 0.25 um/px, then on its 0.5 um/px copy")
    stored = ctx.segpipe([coarse], None, f"resolution-stored-{size}", extra=args)
    picked = ctx.segpipe([fine], None, f"resolution-level-{size}", extra=args)
    seconds = ratio(picked.seconds, stored.seconds)
    check = Goal(NAME, f"0.25um-with-level/0.5um seconds {size}^2", seconds, "<=", GOAL)
    shapes = [run.report["images"][0].get("shape_cyx") for run in (picked, stored)]
    return {
        "size": size,
        "model_mpp": MODEL_MPP,
        "at_0.25um": picked.summary(),
        "at_0.5um": stored.summary(),
        "computed_shape_cyx": {"at_0.25um": shapes[0], "at_0.5um": shapes[1]},
        "megapixels_computed": {
            "at_0.25um": picked.report["images"][0].get("megapixels_computed"),
            "at_0.5um": stored.report["images"][0].get("megapixels_computed"),
        },
        "ratios": {check.name: seconds},
        "goals": goal_list([check]),
    }
