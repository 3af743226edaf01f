"""Train the built-in nuclei U-Net on the synthetic generator, reproducibly, on the CPU.

    python scripts/train_builtin.py            # writes segpipe/models/weights/unet_nuclei.{pt,json}

Seeds fix the data (synthetic.render at seeded random places) and torch's initialisation; with the same torch
build and thread count, the weights come out the same. Prints the Dice on held-out synthetic crops and, if
given ``--real IMG MASK`` (e.g. stardist's img2d.tif/mask2d.tif), on that real image too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from segpipe import normalize, synthetic
from segpipe.models.unet import UNet
from segpipe.tiling import round_up

OUT = Path(__file__).resolve().parents[1] / "segpipe" / "models" / "weights"
ARCH = {"name": "unet", "base": 16, "depth": 3}


def make_batch(
    rng: np.random.Generator,
    size: int,
    count: int,
    render: Callable[..., tuple[np.ndarray, np.ndarray]] = synthetic.render,
    target: Callable[[np.ndarray], np.ndarray] = lambda truth: truth,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy, contrast-varied, normalised crops of ``render``'s image and ``target`` of its labels."""
    images, truths = [], []
    for _ in range(count):
        seed = int(rng.integers(1 << 30))
        y0, x0 = (int(v) for v in rng.integers(0, 4096, 2))
        image, truth = render(y0, y0 + size, x0, x0 + size, seed)
        image = image + rng.normal(0, rng.uniform(0.005, 0.05), image.shape).astype(np.float32)
        image = np.clip(image, 0, None) ** rng.uniform(0.7, 1.4)  # vary contrast between nuclei and background
        sample = image[None]
        stats = normalize.BandStats.from_samples(sample)
        images.append(normalize.apply(sample, stats))
        truths.append(target(truth))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(truths)).long()


def fit(
    model: nn.Module,
    batches: Callable[[np.random.Generator, int, int], tuple[torch.Tensor, torch.Tensor]],
    rng: np.random.Generator,
    steps: int,
    lr: float,
) -> None:
    """Adam with a one-cycle schedule and cross-entropy, ``steps`` batches of 8 crops of 128^2 from ``batches``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.time()
    for step in range(steps):
        images, truths = batches(rng, 128, 8)
        model.train()
        loss = loss_fn(model(images), truths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)


def dice_of(model: nn.Module, image: np.ndarray, truth: np.ndarray) -> float:
    stats = normalize.BandStats.from_samples(image[None])
    x = torch.from_numpy(normalize.apply(image[None], stats))[None]
    with torch.inference_mode():
        pred = model.eval()(x).argmax(1)[0].numpy()
    tp = np.sum((pred == 1) & (truth == 1))
    return float(2 * tp / max(np.sum(pred == 1) + np.sum(truth == 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--real", nargs=2, metavar=("IMAGE", "MASK"))
    parser.add_argument("--out-dir", type=Path, default=OUT, help="where the weights and card go")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    model = UNet(1, 2, base=ARCH["base"], depth=ARCH["depth"])
    fit(model, make_batch, rng, args.steps, 3e-3)
    held_out = [synthetic.render(5000, 5512, 5000, 5512, seed=10_000 + i) for i in range(3)]
    print("held-out synthetic Dice:", [round(dice_of(model, im, tr), 4) for im, tr in held_out])
    if args.real:
        real = tifffile.imread(args.real[0]).astype(np.float32)
        truth = (tifffile.imread(args.real[1]) > 0).astype(np.uint8)
        print("real image Dice:", round(dice_of(model, real, truth), 4))
    save(model, args.out_dir)


def save(model: UNet, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "unet_nuclei.pt")
    card = {
        "name": "segpipe-unet-nuclei",
        "in_channels": 1,
        "num_classes": 2,
        "class_names": list(synthetic.CLASS_NAMES),
        "size_divisor": model.size_divisor,
        "halo": round_up(model.receptive_field_radius, model.size_divisor),  # 28: tiled == whole, no wider
        "receptive_field": model.receptive_field_radius,
        "normalization": "percentile",
        "architecture": ARCH,
    }
    (out / "unet_nuclei.json").write_text(json.dumps(card, indent=2) + "\n")
    print("wrote", out / "unet_nuclei.pt")


if __name__ == "__main__":
    main()
