"""The GPU run: ``python bench/gpu/run.py --wheels bench/gpu/wheels --json $OUT/gpu.json`` on the GPU machine;
``python bench/gpu/run.py --cpu --json gpu-cpu.json`` here, the same runner at CPU sizes.

It installs the wheels ``fetch_wheels.sh`` downloaded into a target folder (only when zarr, numcodecs, dask and
distributed do not import already; the system's site-packages are never touched), writes its own synthetic nuclei
images, then measures (a) the built-in model's raw batched forward per tile edge and precision (inputs on the
device, warm-up excluded, the device synchronised around the clock) and (b) the infer stage through a local Dask
cluster (``--cluster cuda`` there, ``local`` with ``--cpu``) after a warm-up image, in fp32 and bf16 on the same
ingested image. Prints one JSON (see bench/gpu/README.md) and writes it to ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CORE = ("zarr", "numcodecs", "dask", "distributed")
PRECISIONS = ("fp32", "bf16")
# import names the GPU machine has without the wheels: torch, torchvision, numpy, tifffile, fsspec, pyarrow, theirs
GPU_MACHINE_HAS = {
    "torch", "torchvision", "numpy", "tifffile", "fsspec", "pyarrow", "typing_extensions", "sympy", "mpmath",
    "networkx", "jinja2", "markupsafe", "filelock", "triton", "PIL", "functorch", "torchgen",
}  # fmt: skip
# import names of the wheels fetch_wheels.sh downloads (used when the folder is not here, as in CI)
WHEELS_PROVIDE = {
    "scipy", "click", "cloudpickle", "dask", "distributed", "donfig", "google_crc32c", "importlib_metadata", "jinja2",
    "locket", "markupsafe", "msgpack", "numcodecs", "packaging", "partd", "psutil", "sortedcontainers", "tblib",
    "tlz", "toolz", "tornado", "typing_extensions", "yaml", "zarr", "zict", "zipp",
}  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """What one mode measures: raw tile edges, stage images, the stage's chunk and tile, the cluster and budget."""

    name: str
    device: str
    cluster: str
    tiles: tuple[int, ...]
    sizes: tuple[int, ...]
    warm_up_size: int
    chunk: int
    stage_tile: int
    raw_seconds: float
    budget_seconds: float


GPU = Profile("gpu", "cuda", "cuda", (512, 1024, 2048), (8192, 16384), 2048, 2048, 1024, 1.5, 420.0)
CPU = Profile("cpu", "cpu", "local", (128, 256), (1024, 2048), 512, 512, 256, 0.6, 110.0)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench/gpu/run.py")
    parser.add_argument(
        "--wheels", type=Path, default=REPO / "bench" / "gpu" / "wheels", help="fetch_wheels.sh's folder"
    )
    parser.add_argument("--deps", type=Path, default=Path(tempfile.gettempdir()) / "segpipe-deps", help="pip --target")
    parser.add_argument("--json", type=Path, help="write the JSON here too")
    parser.add_argument("--cpu", action="store_true", help="CPU sizes and --cluster local (CI)")
    parser.add_argument("--work", type=Path, help="folder for images and stores (default: a temporary one, removed)")
    parser.add_argument(
        "--gpu-machine-imports",
        action="store_true",
        help="refuse to import any third-party package the GPU machine and the wheels lack (as there)",
    )
    parser.add_argument(
        "--cluster", help="override the mode's --cluster (cuda, local): e.g. cuda's worker processes on a CPU"
    )
    parser.add_argument("--budget", type=float, help="seconds; a stage image that would not fit is skipped")
    return parser.parse_args(argv)


def missing_core() -> list[str]:
    """The core packages that do not import here."""
    return [name for name in CORE if importlib.util.find_spec(name) is None]


def install_wheels(wheels: Path, target: Path) -> str:
    """Install every wheel in ``wheels`` into ``target`` (without dependencies or an index); returns how."""
    files = sorted(str(path) for path in wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"{wheels}: no wheels; run bench/gpu/fetch_wheels.sh on a machine with PyPI access first")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index"]
    done = subprocess.run([*pip, "--no-deps", "--target", str(target), *files], capture_output=True, text=True)
    if done.returncode == 0:
        return f"pip install --target {target}"
    print(f"pip install failed ({done.stderr.strip()[-300:]}); unpacking the wheels instead", file=sys.stderr)
    for path in files:  # a wheel is a zip of its import folders: enough to import pure and binary packages alike
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(target)
    return f"unzipped into {target}"


def bootstrap(args: argparse.Namespace) -> dict[str, Any]:
    """Make segpipe and its core importable here and in worker processes (PYTHONPATH); the wheels if needed."""
    start = time.perf_counter()
    paths = [str(REPO)]
    sys.path.insert(0, str(REPO))
    how = "already importable"
    if missing_core():
        how = install_wheels(args.wheels, args.deps)
        sys.path.insert(0, str(args.deps))
        paths.insert(0, str(args.deps))
        importlib.invalidate_caches()
        if missing_core():
            raise SystemExit(f"{args.wheels}: {', '.join(missing_core())} still do not import after installing")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("DASK_CONFIG", str(REPO / "infra" / "dask"))
    return {"how": how, "seconds": time.perf_counter() - start}


class OnlyGpuMachinePackages(importlib.abc.MetaPathFinder):
    """Refuses every top-level third-party import the GPU machine (its packages plus the wheels) could not satisfy."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.refused: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = fullname.split(".")[0]
        if "." in fullname or top in sys.stdlib_module_names or top in self.allowed or top.startswith("_"):
            return None
        self.refused.add(top)
        raise ModuleNotFoundError(f"No module named {top!r} (not on the GPU machine)", name=top)


def third_party_modules() -> list[str]:
    """Top-level modules imported so far that are neither the standard library nor this repository's."""
    names = {name.split(".")[0] for name in list(sys.modules)}
    ours = {"segpipe", "bench", "flows", "tests"}
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in ours and not n.startswith("_"))


def wheel_modules(wheels: Path) -> set[str]:
    """Import names the wheels provide (their top-level folders and modules)."""
    names: set[str] = set()
    for path in wheels.glob("*.whl"):
        with zipfile.ZipFile(path) as wheel:
            for member in wheel.namelist():
                top = member.split("/")[0]
                if not top.endswith((".dist-info", ".data")):
                    names.add(top.removesuffix(".py").split(".")[0])
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    profile = CPU if args.cpu else GPU
    if args.cluster:
        profile = replace(profile, cluster=args.cluster)
    budget = args.budget or profile.budget_seconds
    deps = bootstrap(args)
    print(f"[{time.perf_counter() - started:6.1f} s] core packages: {deps['how']}", file=sys.stderr, flush=True)
    guard = OnlyGpuMachinePackages(GPU_MACHINE_HAS | WHEELS_PROVIDE | {"segpipe", "bench", "cython_runtime"})
    if args.gpu_machine_imports:
        sys.meta_path.insert(0, guard)
    from bench.gpu import measure  # only now: it imports zarr, dask and distributed

    work = args.work or Path(tempfile.mkdtemp(prefix="segpipe-gpu-"))
    try:
        report = measure.run(profile, work, started, budget)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    imported = third_party_modules()
    provided = GPU_MACHINE_HAS | WHEELS_PROVIDE | wheel_modules(args.wheels)
    report["environment"] |= {"python": platform.python_version(), "deps": deps}
    report["imports"] = {
        "third_party": imported,
        "not_on_gpu_machine": [n for n in imported if n not in provided and n != "cython_runtime"],
        "refused": sorted(guard.refused),  # optional imports that fell back, with --gpu-machine-imports
    }
    report["wall_seconds"] = time.perf_counter() - started
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
