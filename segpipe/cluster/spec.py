"""What cluster to use (``ClusterSpec``, parsed from ``--cluster``) and what opening one gives (``ClusterHandle``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from distributed import Client

from segpipe.errors import ConfigError
from segpipe.storage.urls import public_url

KINDS = ("local", "cuda", "slurm", "kubernetes")
SCHEMES = ("tcp", "tls")
CHOICES = "local, cuda, slurm, kubernetes, tcp://HOST:PORT or tls://HOST:PORT"


@dataclass(frozen=True)
class ClusterSpec:
    """A backend ``kind`` (one of KINDS, or "address" to join ``address``) and the workers to start.

    ``workers`` None means the backend's default.
    """

    kind: str
    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        """Refuse an unknown kind, an address on a kind other than "address", or fewer than one worker."""
        if self.kind not in (*KINDS, "address"):
            raise ConfigError(f"cluster kind {self.kind!r}: expected one of {CHOICES}")
        if (self.kind == "address") != (self.address is not None):
            raise ConfigError(f"cluster kind {self.kind!r} with address {self.address!r}: only 'address' takes one")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: need at least 1 worker")

    @classmethod
    def parse(cls, text: str, workers: int | None = None) -> ClusterSpec:
        """``local``, ``cuda``, ``slurm``, ``kubernetes``, ``tcp://HOST:PORT`` or ``tls://HOST:PORT``."""
        value = text.strip()
        if value.lower() in KINDS:
            return cls(value.lower(), None, workers)
        if "://" in value:
            return cls("address", _checked_address(value), workers)
        shown = public_url(value)
        hint = f" (did you mean tcp://{shown}?)" if ":" in shown else ""
        raise ConfigError(f"--cluster {shown!r}: expected {CHOICES}{hint}")

    def describe(self) -> str:
        """The spec as a user wrote it, without credentials (for logs)."""
        return public_url(self.address) if self.address else self.kind


@dataclass(frozen=True)
class ClusterHandle:
    """An open cluster: its client, backend kind, workers at start, GPU use and a description.

    ``workers`` counts those started, requested from SLURM/Kubernetes, or found at the address; ``gpu`` says
    whether inference should ask for a GPU; ``description`` holds no credentials (it goes to logs and MLflow
    lineage).
    """

    client: Client
    kind: str
    workers: int
    gpu: bool
    description: str

    @property
    def task_resources(self) -> dict[str, dict[str, float]]:
        """Dask resources per executor label: inference tasks ask for one GPU on a GPU cluster, nothing else does."""
        return {"infer": {"GPU": 1}} if self.gpu else {}


def _checked_address(address: str) -> str:
    """``address`` if it is ``tcp://HOST[:PORT]`` or ``tls://HOST[:PORT]``; else a ConfigError."""
    shown = public_url(address)
    parts = urlsplit(address)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"--cluster {shown!r}: a scheduler address starts with tcp:// or tls://")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0..65535)
    except ValueError:
        raise ConfigError(f"--cluster {shown!r}: the port is not a number in 0..65535") from None
    if not parts.hostname:
        raise ConfigError(f"--cluster {shown!r}: no host; expected {parts.scheme}://HOST:PORT")
    return address
