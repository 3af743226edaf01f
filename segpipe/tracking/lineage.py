"""Lineage of a batch run as a value: which inputs, which model bytes, which code, where it ran.

``to_tags`` gives the MLflow tags the batch run is logged with and ``from_tags`` reads them back: the one definition of
the tag keys (``segpipe.version``, ``segpipe.git_commit``, ``segpipe.model_*``, ``segpipe.cluster``, ``segpipe.run_id``,
``python``, ``prefect.*``, ``segpipe.input.<i>.url|fingerprint``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PARENT_TAG = "mlflow.parentRunId"
IMAGE_TAG = "segpipe.image"
PREFIX = "segpipe."
_INPUT_TAG = re.compile(r"^segpipe\.input\.(\d+)\.(url|fingerprint)$")
_FIXED = ("version", "git_commit", "model_uri", "model_card", "cluster", "run_id")


@dataclass(frozen=True)
class InputLineage:
    """One input of the batch: its URL and its identity (the fingerprint its outputs are keyed on)."""

    index: int
    url: str
    fingerprint: str


@dataclass(frozen=True)
class Lineage:
    """Where a batch run's result came from.

    ``model`` holds the model's own lineage strings (``model_format``, ``model_sha256``, ``model_registry_*``); every
    URL is already without credentials.
    """

    segpipe_version: str = ""
    git_commit: str = ""
    model_uri: str = ""
    model_card: str = ""
    model: tuple[tuple[str, str], ...] = ()
    cluster: str = ""
    run_id: str = ""
    python: str = ""
    prefect_flow_run_id: str = ""
    prefect_deployment: str = ""
    inputs: tuple[InputLineage, ...] = field(default_factory=tuple)

    def model_value(self, key: str) -> str:
        """A ``model_*`` lineage string ('' when the run recorded none)."""
        return dict(self.model).get(key, "")

    def to_tags(self) -> dict[str, str]:
        """The MLflow tags of the batch run."""
        tags = {
            f"{PREFIX}version": self.segpipe_version,
            f"{PREFIX}git_commit": self.git_commit,
            **{f"{PREFIX}{key}": value for key, value in self.model},
            f"{PREFIX}model_uri": self.model_uri,
            f"{PREFIX}model_card": self.model_card,
            f"{PREFIX}cluster": self.cluster,
            f"{PREFIX}run_id": self.run_id,
            "python": self.python,
            "prefect.flow_run_id": self.prefect_flow_run_id,
            "prefect.deployment": self.prefect_deployment,
        }
        for entry in self.inputs:
            tags[f"{PREFIX}input.{entry.index}.url"] = entry.url
            tags[f"{PREFIX}input.{entry.index}.fingerprint"] = entry.fingerprint
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Lineage:
        """The lineage a run's tags recorded ('' and no inputs where they say nothing)."""
        model = tuple(
            (key.removeprefix(PREFIX), value)
            for key, value in tags.items()
            if key.startswith(f"{PREFIX}model_") and key.removeprefix(PREFIX) not in _FIXED
        )
        found: dict[int, dict[str, str]] = {}
        for key, text in tags.items():
            match = _INPUT_TAG.match(key)
            if match:
                found.setdefault(int(match[1]), {})[match[2]] = text
        inputs = tuple(
            InputLineage(i, entry.get("url", ""), entry.get("fingerprint", "")) for i, entry in sorted(found.items())
        )
        return cls(
            segpipe_version=tags.get(f"{PREFIX}version", ""),
            git_commit=tags.get(f"{PREFIX}git_commit", ""),
            model_uri=tags.get(f"{PREFIX}model_uri", ""),
            model_card=tags.get(f"{PREFIX}model_card", ""),
            model=model,
            cluster=tags.get(f"{PREFIX}cluster", ""),
            run_id=tags.get(f"{PREFIX}run_id", ""),
            python=tags.get("python", ""),
            prefect_flow_run_id=tags.get("prefect.flow_run_id", ""),
            prefect_deployment=tags.get("prefect.deployment", ""),
            inputs=inputs,
        )
