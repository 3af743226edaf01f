"""``ModelRef``: a small, picklable description of a resolved model; workers load the model from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from segpipe.models.card import ModelCard


def sha256_of(payload: bytes) -> str:
    """Hex SHA-256 of ``payload`` (``ModelRef.sha256`` of a model's bytes)."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class RegistryEntry:
    """Where a model came from in the MLflow model registry (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``).

    Attributes:
        name: registered model name.
        version: the exact version resolved (an alias moves; this does not).
        source: artifact URI of the model file in that version's run.
        alias: the alias the user named, if any.
        tracking_uri: the MLflow tracking server it was read from.
    """

    name: str
    version: int
    source: str
    alias: str | None = None
    tracking_uri: str | None = None

    @property
    def pinned_uri(self) -> str:
        """``models:/NAME/VERSION``: the same model, whatever the alias points at later."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelRef:
    """A validated pointer to a model; holds no weights, so it travels cheaply to workers.

    Attributes:
        format: the backend that reads it (``builtin``, ``baseline``, ``torchscript``, ``state_dict``, ``onnx``,
            ``pickle``).
        path: where its bytes were read (a local path, a URL, a registry artifact URI); kept for old callers.
        sha256: of the model bytes; workers check what they load against it.
        card: the card, with anything a probe found filled in.
        uri: what the user passed (``builtin``, a path, ``s3://...``, ``models:/NAME@ALIAS``).
        assumptions: sentences saying what segpipe assumed for lack of a card (empty when the card said all).
        registry: the registry version, for ``models:/`` URIs.
    """

    format: str
    path: str
    sha256: str
    card: ModelCard
    uri: str = ""
    assumptions: tuple[str, ...] = ()
    registry: RegistryEntry | None = None

    def __post_init__(self) -> None:
        """Default ``uri`` to ``path`` when none was given."""
        if not self.uri:
            object.__setattr__(self, "uri", self.path)

    def lineage(self) -> dict[str, str]:
        """Flat strings for run parameters/tags: what was asked for, and exactly which bytes were used."""
        values = {"model_uri": self.uri, "model_format": self.format, "model_sha256": self.sha256}
        if self.registry is not None:
            values["model_registry_name"] = self.registry.name
            values["model_registry_version"] = str(self.registry.version)
            values["model_registry_source"] = self.registry.source
        return values
