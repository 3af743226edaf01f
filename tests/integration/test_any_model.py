"""Models a team brings: a TorchScript file and an ONNX file, neither with a card, each segment an RGB image
through the flow; segpipe probes them with the image's own band count and says what it assumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from flows.segment_batch import segment_batch
from segpipe.errors import SegpipeWarning

pytestmark = pytest.mark.integration


class RedFinder(torch.nn.Module):
    """Two classes from three bands: 'red' where band 0 beats the mean of the others (a 3x3 conv, so halo 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0, 1, 1] = 1.0
            self.conv.weight[1, 1:, 1, 1] = -0.5
            self.conv.bias[1] = -100.0  # raw uint8 values: red is 220, everything else below 60

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module")
def rgb_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 200 x 300 RGB (interleaved YXS) uint8 TIFF with red squares, and where they are."""
    folder = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 60, (200, 300, 3)).astype(np.uint8)
    red = np.zeros((200, 300), bool)
    for y, x in rng.integers(10, 170, (12, 2)):
        red[y : y + 20, x : x + 20] = True
    pixels[red, 0] = 220
    tifffile.imwrite(folder / "scene.tif", pixels, photometric="rgb")
    return folder / "scene.tif", red


def _export(kind: str, folder: Path) -> Path:
    model = RedFinder().eval()
    if kind == "torchscript":
        path = folder / "red.pt"
        torch.jit.save(torch.jit.script(model), str(path))
        return path
    path = folder / "red.onnx"
    dynamic = {"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}}
    torch.onnx.export(
        model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes=dynamic, dynamo=False,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_a_card_less_model_segments_an_rgb_image(
    tmp_path: Path, rgb_scene: tuple[Path, np.ndarray], kind: str, dask_cluster: str
) -> None:
    image, red = rgb_scene
    model = _export(kind, tmp_path)
    assert not model.with_suffix(".json").exists()
    settings = {"model": str(model), "out": str(tmp_path / "out"), "tiling": {"chunk": 128, "tile": 64, "halo": 4}}
    with pytest.warns(SegpipeWarning, match="3 input band"):
        report = segment_batch([str(image)], None, settings, cluster=dask_cluster).to_json()
    (entry,) = report["images"]
    mask = zarr.open_array(entry["mask"], mode="r")[:]
    assert mask.shape == red.shape
    assert np.mean((mask == 1) == red) > 0.99  # the model's red squares, stitched across chunks
    assert entry["class_pixels"] == [int((mask == 0).sum()), int((mask == 1).sum())]
