"""What a model source provides: ``find(uri, request) -> Found`` and ``read(ref) -> bytes``.

A source knows where a model's bytes live (a file, a URL, the MLflow model registry, a name such as ``builtin``)
and which backend reads them; it loads nothing. ``resolve_model`` loads and probes what a source found;
``model_payload`` asks a ref's source for the bytes again in a process that was not sent them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from segpipe.models.backends import Backend
from segpipe.models.card import ModelCard
from segpipe.models.ref import ModelRef, RegistryEntry


@dataclass(frozen=True)
class Request:
    """What the caller asked for besides the URI."""

    trust_pickle: bool = False
    card: ModelCard | None = None  # an inline card, used instead of any card beside the file
    tracking_uri: str | None = None  # for ``models:/`` URIs (default: ``MLFLOW_TRACKING_URI``)
    trust_code: bool = False  # run a bioimage.io package's architecture code (its pytorch_state_dict weights)


@dataclass(frozen=True)
class Found:
    """A model's bytes and the backend that reads them, before loading.

    Attributes:
        uri: what the user passed (``ModelRef.uri``).
        backend: the backend that reads ``payload``.
        payload: the model's bytes.
        card: the card (``None``: no card anywhere).
        path: where the bytes were read (``ModelRef.path``).
        notes: caveats a named model comes with.
        label: names the model in errors (default: ``uri``).
        registry: the registry version, for ``models:/`` URIs.
    """

    uri: str
    backend: Backend
    payload: bytes
    card: ModelCard | None
    path: str
    notes: tuple[str, ...] = ()
    label: str = ""
    registry: RegistryEntry | None = None

    def __post_init__(self) -> None:
        """Default ``label`` to ``uri`` when none was given."""
        if not self.label:
            object.__setattr__(self, "label", self.uri)


@dataclass(frozen=True)
class ModelSource:
    """One place models come from.

    Attributes:
        name: shown in errors and help texts.
        schemes: the URI schemes it serves (see ``segpipe.models.sources.schemes``).
        find: ``(uri, request) -> Found``; raises ``ModelError`` naming ``uri``.
        read: ``ref -> bytes``: the bytes of a model this source found, read again.
    """

    name: str
    schemes: tuple[str, ...]
    find: Callable[[str, Request], Found]
    read: Callable[[ModelRef], bytes]
