"""bioimage.io model packages built for the tests: a small network exported to TorchScript, its rdf.yaml 0.5 written
by hand and validated with bioimageio.spec, and a test input/expected output made by the network itself."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

HALO = 8
ARCH_SOURCE = """
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, bands=1, classes=2):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(bands, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, classes, 3, padding=1)
        )

    def forward(self, x):
        return self.body(x)
"""


def tiny_net(bands: int = 1, classes: int = 2, seed: int = 0) -> torch.nn.Module:
    namespace: dict[str, Any] = {}
    exec(ARCH_SOURCE, namespace)
    torch.manual_seed(seed)
    return namespace["TinyNet"](bands, classes).eval()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zmuv(x: np.ndarray) -> np.ndarray:
    """bioimage.io's zero_mean_unit_variance over (channel, y, x) of one image, per band."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = x.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    return ((x - mean) / (std + 1e-6)).astype(np.float32)


def build_package(
    folder: Path,
    *,
    weights: str = "torchscript",
    edit: Callable[[dict[str, Any]], None] | None = None,
    expected_scale: float = 1.0,
) -> Path:
    """A package folder (``folder/rdf.yaml``) around ``tiny_net``; ``edit`` changes the description before writing."""
    folder.mkdir(parents=True, exist_ok=True)
    net = tiny_net()
    x = np.random.default_rng(0).normal(100, 20, (1, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(zmuv(x))).numpy() * expected_scale
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", y)
    (folder / "README.md").write_text("# tiny net\nA two-class test network.\n")
    entries: dict[str, Any] = {}
    if weights == "torchscript":
        torch.jit.trace(net, torch.zeros(1, 1, 32, 32)).save(str(folder / "weights.pt"))
        entries["torchscript"] = {
            "source": "weights.pt",
            "sha256": _sha(folder / "weights.pt"),
            "pytorch_version": "2.13",
        }
    else:
        torch.save(net.state_dict(), folder / "weights.pt")
        (folder / "tiny_net.py").write_text(ARCH_SOURCE)
        arch = {"source": "tiny_net.py", "sha256": _sha(folder / "tiny_net.py"), "callable": "TinyNet"}
        entries["pytorch_state_dict"] = {
            "source": "weights.pt",
            "sha256": _sha(folder / "weights.pt"),
            "architecture": {**arch, "kwargs": {"bands": 1, "classes": 2}},
            "pytorch_version": "2.13",
        }
    space = [{"type": "space", "id": axis, "size": {"min": 32, "step": 16}} for axis in ("y", "x")]
    out_space = [
        {"type": "space", "id": axis, "size": {"tensor_id": "raw", "axis_id": axis}, "halo": HALO}
        for axis in ("y", "x")
    ]
    rdf: dict[str, Any] = {
        "format_version": "0.5.4",
        "type": "model",
        "name": "tiny net",
        "description": "a tiny two-class test network",
        "authors": [{"name": "segpipe tests"}],
        "cite": [{"text": "segpipe", "doi": "10.5281/zenodo.5764892"}],
        "license": "MIT",
        "documentation": "README.md",
        "inputs": [
            {
                "id": "raw",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["gray"]}, *space],
                "test_tensor": {"source": "test_input.npy", "sha256": _sha(folder / "test_input.npy")},
                "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}}],
            }
        ],
        "outputs": [
            {
                "id": "logits",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["background", "nucleus"]},
                    *out_space,
                ],
                "test_tensor": {"source": "test_output.npy", "sha256": _sha(folder / "test_output.npy")},
            }
        ],
        "weights": entries,
    }
    if edit is not None:
        edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder / "rdf.yaml"


def zip_package(rdf: Path, target: Path) -> Path:
    """The package folder of ``rdf`` as a zip at ``target``."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(rdf.parent.iterdir()):
            if path.is_file():
                archive.write(path, path.name)
    return target


def invalid_license(rdf: dict[str, Any]) -> None:
    rdf["license"] = "not-a-licence"


def keras_weights_only(rdf: dict[str, Any]) -> None:
    rdf["weights"] = {"keras_hdf5": {"source": "README.md", "tensorflow_version": "2.15"}}


def three_d(rdf: dict[str, Any]) -> None:
    for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
        z = {
            "type": "space",
            "id": "z",
            "size": 1 if tensor is rdf["inputs"][0] else {"tensor_id": "raw", "axis_id": "z"},
        }
        tensor["axes"].insert(2, z)


def unknown_preprocessing(rdf: dict[str, Any]) -> None:
    rdf["inputs"][0]["preprocessing"] = [{"id": "sigmoid"}]
