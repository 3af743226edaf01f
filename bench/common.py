"""What every benchmark does at the end: record the machine and write its result as JSON.

Imported as ``bench.common`` by ``python -m bench`` and as ``common`` by the stand-alone scripts
(``python bench/metrics_speed.py``, ``python bench/seams.py``), so it imports nothing from the package.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch


def environment() -> dict[str, Any]:
    """The facts a timing depends on: cores, memory, libraries, and how busy the machine was when asked."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` as indented JSON (creating its folder); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` plus the environment to ``path`` as JSON and print it (the stand-alone scripts)."""
    result = {**result, **environment()}
    save_json(path, result)
    print(json.dumps(result, indent=2))
