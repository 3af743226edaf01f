"""What every benchmark does at the end: record the machine and write its result as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch


def environment() -> dict[str, Any]:
    """The facts a timing depends on."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` plus the environment to ``path`` as JSON and print it."""
    result = {**result, **environment()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
