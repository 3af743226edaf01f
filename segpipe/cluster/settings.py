"""What backends share: settings, optional imports, worker resources, waiting for the first worker.

Settings come from Dask config ``segpipe.cluster.<kind>`` (infra/dask/segpipe.yaml).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import dask
from distributed import Client

from segpipe.errors import ConfigError

EXTRAS = {"slurm": ("dask_jobqueue", "dask-jobqueue"), "kubernetes": ("dask_kubernetes.operator", "dask-kubernetes")}


def backend_settings(kind: str, defaults: Mapping[str, Any], strict: bool = True) -> dict[str, Any]:
    """The built-in ``defaults`` of backend ``kind``, deep-merged with Dask config ``segpipe.cluster.<kind>``.

    ``strict``: refuse keys the defaults do not name (off where keys pass through to a cluster class's keywords).
    """
    configured = dask.config.get(f"segpipe.cluster.{kind}", default=None) or {}
    if not isinstance(configured, Mapping):
        raise ConfigError(f"Dask config segpipe.cluster.{kind} must be a mapping, not {configured!r}")
    unknown = sorted(set(configured) - set(defaults))
    if strict and unknown:
        raise ConfigError(f"Dask config segpipe.cluster.{kind}: unknown keys {unknown}; known: {sorted(defaults)}")
    merged: dict[str, Any] = dask.config.merge(dict(defaults), dict(configured))
    return merged


def keywords(settings: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Settings as Python keywords (``memory-limit`` -> ``memory_limit``), leaving out segpipe's own keys."""
    return {key.replace("-", "_"): value for key, value in settings.items() if key not in exclude}


def require(kind: str) -> ModuleType:
    """The optional module backend ``kind`` needs, or a one-line ConfigError naming the extra to install."""
    module, package = EXTRAS[kind]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--cluster {kind} needs {package}: pip install 'segpipe[{kind}]'") from None


def resources_arg(resources: Mapping[str, float]) -> str:
    """Dask worker resources as the ``--resources`` argument: ``{"GPU": 1}`` -> ``"GPU=1"``."""
    return " ".join(f"{name}={value:g}" for name, value in resources.items())


def parse_resources(args: list[str]) -> dict[str, float]:
    """The resources a worker command line declares (``--resources "GPU=1 MEM=1e9"``); empty if none."""
    declared: dict[str, float] = {}
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--resources":
            for pair in value.replace(",", " ").split():
                name, _, amount = pair.partition("=")
                declared[name] = float(amount)
    return declared


def wait_for_first_worker(client: Client, seconds: float, where: str) -> None:
    """Block until one worker has joined; after ``seconds``, a TimeoutError saying ``where`` to look."""
    try:
        client.wait_for_workers(1, timeout=seconds)
    except TimeoutError:
        raise TimeoutError(f"no Dask worker joined within {seconds:g} s: check {where}") from None
