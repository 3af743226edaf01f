"""A corpus of bad inputs for the ``segpipe`` command. Each case builds its files in a directory and names the
command-line arguments and the text the one error line must contain.

    python -m tests.bad_inputs        # prints a table: case | exit code | the error line
"""

from __future__ import annotations

import json
import pickle
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
import zarr


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], list[str]]  # returns the CLI arguments
    expect: str  # a substring of the error line
    exit_code: int = 2


def _image(d: Path, name: str = "img.tif", shape: tuple[int, ...] = (64, 64), dtype: str = "uint16", **kw) -> str:
    data = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    tifffile.imwrite(d / name, data, **kw)
    return str(d / name)


def _truth(d: Path, shape: tuple[int, int] = (64, 64), value: int = 1, dtype: str = "uint8") -> str:
    data = np.zeros(shape, dtype)
    data[10:20, 10:20] = value
    tifffile.imwrite(d / "truth.tif", data)
    return str(d / "truth.tif")


def _mapped(d: Path, mapping: dict[str, int]) -> list[str]:
    truth = _truth(d, value=7)
    (d / "mapping.json").write_text(json.dumps(mapping))
    return _run(d, _image(d), "--truth", truth, "--truth-mapping", str(d / "mapping.json"))


def _run(d: Path, *args: str) -> list[str]:
    return ["run", *args, "--out", str(d / "out"), "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}"]


def _truncated(d: Path) -> list[str]:
    path = _image(d, shape=(512, 512), tile=(64, 64), compression="zlib")
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])
    return _run(d, path)


def _unknown_compression(d: Path) -> list[str]:
    path = _image(d, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["Compression"]
        offset = tag.valueoffset
    raw = bytearray(Path(path).read_bytes())
    raw[offset : offset + 2] = struct.pack("<H", 34999)  # no codec is registered for this compression value
    Path(path).write_bytes(bytes(raw))
    return _run(d, path)


def _zero_size(d: Path) -> list[str]:
    zarr.create_array(d / "empty.zarr", shape=(0, 64), chunks=(16, 16), dtype="uint8")
    return _run(d, str(d / "empty.zarr"))


def _nonfinite(value: float) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        data = np.ones((64, 64), np.float32)
        data[5, 7] = value
        tifffile.imwrite(d / "img.tif", data)
        return _run(d, str(d / "img.tif"))

    return build


def _existing_mask(d: Path) -> list[str]:
    image = _image(d)
    store = zarr.open_group(d / "out" / "img" / "img.ome.zarr", mode="w")
    store.attrs["segpipe"] = {"infer_key": "made-by-another-model"}
    return _run(d, image)


def _output_under_file(d: Path) -> list[str]:
    (d / "a_file").write_text("not a directory")
    return ["run", _image(d), "--out", str(d / "a_file" / "out")]


def _corrupt_zarr(d: Path) -> list[str]:
    (d / "bad.zarr").mkdir()
    (d / "bad.zarr" / "zarr.json").write_text("{ this is not json")
    return _run(d, str(d / "bad.zarr"))


def _text_model(d: Path) -> list[str]:
    (d / "model.pt").write_text("definitely not a model")
    return _run(d, _image(d), "--model", str(d / "model.pt"))


def _plain_pickle_model(d: Path) -> list[str]:
    (d / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return _run(d, _image(d), "--model", str(d / "model.pkl"))


def _torch_pickled_module(d: Path) -> list[str]:
    torch.save(torch.nn.Conv2d(1, 2, 3, padding=1), d / "module.pt")  # a whole pickled nn.Module
    (d / "module.json").write_text(
        json.dumps(
            {
                "name": "m",
                "in_channels": 1,
                "num_classes": 2,
                "class_names": ["a", "b"],
                "architecture": {"name": "unet"},
            }
        )
    )
    return _run(d, _image(d), "--model", str(d / "module.pt"))


class _Downsampler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(torch.cat([x, -x], 1), 2)


def _wrong_output_model(d: Path) -> list[str]:
    torch.jit.save(torch.jit.script(_Downsampler()), d / "down.pt")
    return _run(d, _image(d), "--model", str(d / "down.pt"))


def _two_same_names(d: Path) -> list[str]:
    (d / "a").mkdir()
    return _run(d, _image(d), _image(d / "a"))


CASES: list[Case] = [
    Case("truth id missing from --truth-mapping", lambda d: _mapped(d, {"1": 1}), "instance id 7 has no class"),
    Case("missing path", lambda d: _run(d, str(d / "nope.tif")), "nope.tif: no such file"),
    Case(
        "empty file",
        lambda d: (d / "e.tif").write_bytes(b"") and [] or _run(d, str(d / "e.tif")),
        "e.tif: file is empty",
    ),
    Case("truncated TIFF", _truncated, "img.tif"),
    Case(
        "text file named .tif",
        lambda d: (d / "t.tif").write_text("hello") and _run(d, str(d / "t.tif")),
        "t.tif: not a readable TIFF",
    ),
    Case("unsupported compression", _unknown_compression, "34999 is not a known COMPRESSION"),
    Case("zero-size dimension", _zero_size, "zero-size dimension"),
    Case(
        "too many axes (T and Z)",
        lambda d: _run(d, _image(d, shape=(2, 3, 64, 64), metadata={"axes": "TZYX"})),
        "at most one Z or T stack axis",
    ),
    Case("complex pixels", lambda d: _run(d, _image(d, dtype="complex64")), "complex64 is not supported"),
    Case("NaN pixels", _nonfinite(float("nan")), "NaN or infinite"),
    Case("Inf pixels", _nonfinite(float("inf")), "NaN or infinite"),
    Case("truth shape mismatch", lambda d: _run(d, _image(d), "--truth", _truth(d, (32, 64))), "truth is 32 x 64"),
    Case(
        "truth class id beyond model",
        lambda d: _run(d, _image(d), "--truth", _truth(d, value=7)),
        "truth label 7 is outside the model's classes 0..1",
    ),
    Case(
        "truth of float dtype",
        lambda d: _run(d, _image(d), "--truth", _truth(d, dtype="float32")),
        "integer class labels",
    ),
    Case(
        "truth with 3 bands",
        lambda d: _run(d, _image(d), "--truth", _image(d, "t3.tif", (64, 64, 3), "uint8", photometric="rgb")),
        "single-band label image",
    ),
    Case(
        "truth count differs",
        lambda d: _run(d, _image(d), _image(d, "b.tif"), "--truth", _truth(d)),
        "2 images but 1 truths",
    ),
    Case(
        "channels differ from model",
        lambda d: _run(d, _image(d, shape=(64, 64, 3), dtype="uint8", photometric="rgb")),
        "image has 3 band(s); model segpipe-unet-nuclei expects 1",
    ),
    Case("chunk zero", lambda d: _run(d, _image(d), "--chunk", "0"), "--chunk must be a positive integer"),
    Case("chunk negative", lambda d: _run(d, _image(d), "--chunk", "-256"), "--chunk must be a positive integer"),
    Case("halo negative", lambda d: _run(d, _image(d), "--halo", "-1"), "--halo must be an integer >= 0"),
    Case("tile zero", lambda d: _run(d, _image(d), "--tile", "0"), "--tile must be a positive integer"),
    Case("batch size zero", lambda d: _run(d, _image(d), "--batch-size", "0"), "--batch-size must be a positive"),
    Case("workers zero", lambda d: _run(d, _image(d), "--workers", "0"), "--workers must be a positive integer"),
    Case("output holds another model's mask", _existing_mask, "holds a mask made from another", 4),
    Case("output not writable (under a file)", _output_under_file, "not a writable directory", 4),
    Case("corrupt Zarr", _corrupt_zarr, "bad.zarr: not a readable Zarr array"),
    Case(
        "directory that is not Zarr",
        lambda d: (d / "dir").mkdir() or _run(d, str(d / "dir")),
        "dir: a folder with no image in it",
    ),
    Case("two inputs share a name", _two_same_names, "share the output name 'img'"),
    Case("model file missing", lambda d: _run(d, _image(d), "--model", str(d / "none.pt")), "no such model file", 3),
    Case("model file is text", _text_model, "model.pt: not a TorchScript, torch.save or ONNX file", 3),
    Case("model is a plain pickle", _plain_pickle_model, "never unpickles plain pickle files", 3),
    Case("model is a pickled nn.Module", _torch_pickled_module, "refused to load", 3),
    Case(
        "model output shape wrong",
        _wrong_output_model,
        "down.pt: probe input (1, 1, 64, 64) gave output (1, 2, 32, 32)",
        3,
    ),
    Case(
        "malformed tracking URI",
        lambda d: ["run", _image(d), "--out", str(d / "out"), "--tracking-uri", "foo"],
        "--tracking-uri 'foo'",
    ),
    Case("--bands out of range", lambda d: _run(d, _image(d), "--bands", "2"), "img.tif: band 2 does not exist"),
    Case("--bands repeated", lambda d: _run(d, _image(d), "--bands", "1,1"), "img.tif: bands: band 1 is given twice"),
    Case("--level that does not exist", lambda d: _run(d, _image(d), "--level", "3"), "img.tif: level 3 does not"),
    Case("pixel size of 0", lambda d: _run(d, _image(d), "--pixel-size", "0um"), "0 is not a positive pixel size"),
    Case(
        "foreground mask of another aspect ratio",
        lambda d: _run(d, _image(d), "--foreground", _image(d, "fg.tif", (64, 16), "uint8")),
        "fg.tif: foreground mask of 64 x 16 pixels has another aspect ratio",
    ),
    Case(
        "eval: sizes differ",
        lambda d: ["eval", _image(d, "p.tif", (64, 64), "uint8"), _truth(d, (60, 64))],
        "truth is 60 x 64 but prediction",
    ),
]


def _package(edit: Callable[[dict[str, object]], None]) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        from tests.bioimageio_packages import build_package

        return _run(d, _image(d), "--model", str(build_package(d / "package", edit=edit)))

    return build


def _package_cases() -> list[Case]:
    from tests import bioimageio_packages as bp

    return [
        Case("package: fails validation", _package(bp.invalid_license), "fails bioimage.io validation (license", 3),
        Case("package: no runnable weights", _package(bp.keras_weights_only), "no weights segpipe runs", 3),
        Case("package: 3-D axes", _package(bp.three_d), "segpipe runs 2-D models", 3),
        Case("package: unknown preprocessing", _package(bp.unknown_preprocessing), "unknown step 'sigmoid'"),
    ]


CASES += _package_cases()


def invoke(args: list[str]) -> tuple[int, str]:
    """Run the CLI in this process; returns (exit code, stderr)."""
    import contextlib
    import io

    from segpipe.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, stderr.getvalue()


if __name__ == "__main__":
    print("| # | bad input | exit | what segpipe printed |\n| --- | --- | --- | --- |")
    for number, case in enumerate(CASES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            code, err = invoke(case.build(Path(tmp)))
        line = err.strip().replace(tmp, "…").replace("|", "\\|")
        print(f"| {number} | {case.name} | {code} | `{line}` |")
