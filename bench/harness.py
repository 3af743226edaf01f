"""What every benchmark is given: the sizes to use, a scratch folder, the command runner, and the ``segpipe run``
command as a user types it (one MLflow store per session, warmed up by one run before anything is timed)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data
from bench.procs import CommandRun, Runner, measure_command
from bench.profiles import Profile

REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a command failed)."""


def python_module(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class SegpipeRun:
    """One ``segpipe run ... --json`` command and the batch report it printed."""

    run: CommandRun
    report: dict[str, Any]

    @property
    def seconds(self) -> float:
        """Wall time of the whole command."""
        return self.run.seconds

    def stage_seconds(self, image: int = 0) -> dict[str, float]:
        """Seconds per stage of one image (ingest, infer, finalize, evaluate)."""
        return dict(self.report["images"][image]["seconds"])

    @property
    def flow_seconds(self) -> float:
        """The flow's own time for the batch (cluster start to reports)."""
        return float(self.report["batch"]["seconds"])

    def summary(self) -> dict[str, Any]:
        """The command's facts plus the flow's timings."""
        return {
            **self.run.summary(),
            "flow_seconds": self.flow_seconds,
            "report_wall_seconds": self.report.get("wall_seconds"),
            "stages": [image["seconds"] for image in self.report["images"]],
            "breakdown": self.breakdown(),
        }

    def breakdown(self) -> dict[str, float | None]:
        """Where the command's wall time went: before the flow is called (interpreter, imports, plan), around
        the flow (Prefect's flow run, reports, MLflow logging), inside the flow but outside the image stages
        (cluster start and stop), and in the stages (summed over images, which may overlap)."""
        inside = self.report.get("wall_seconds")
        stages = sum(sum(image["seconds"].values()) for image in self.report["images"])
        return {
            "before_flow": None if inside is None else self.seconds - inside,
            "around_flow": None if inside is None else inside - self.flow_seconds,
            "flow_outside_stages": self.flow_seconds - stages,
            "stages": stages,
        }

    def footprint(self, image: int = 0) -> dict[str, Any] | None:
        """Objects and bytes the run left for one image (a local output only; see ``footprint``)."""
        store = self.report["images"][image].get("ome_zarr") or ""
        return footprint(Path(store)) if store and "://" not in store and Path(store).is_dir() else None


def part_of(relative: Path) -> str:
    """Which part of an image's output a file belongs to (``relative`` to the image's folder)."""
    parts = relative.parts
    if len(parts) < 2 or not parts[0].endswith(".ome.zarr"):
        return "reports"  # done.json, metrics.json, preview.png beside the store
    inner = parts[1:]
    if inner[0] == ".segpipe":
        return "ledger_markers"
    if inner[0] == "labels" and len(inner) > 2 and inner[2].isdigit():
        return "mask_level0" if inner[2] == "0" else "mask_pyramid"
    if inner[0].isdigit() and len(inner) > 1:
        return "image_level0" if inner[0] == "0" else "image_pyramid"
    return "metadata"


def footprint(store: Path) -> dict[str, Any]:
    """Files (= objects on an object store) and bytes under an image's output folder (the store's parent),
    by part: image level 0 and pyramid, mask level 0 and pyramid, ledger markers, metadata, reports."""
    parts: dict[str, dict[str, int]] = {}
    for path in store.parent.rglob("*"):
        if path.is_file():
            entry = parts.setdefault(part_of(path.relative_to(store.parent)), {"objects": 0, "bytes": 0})
            entry["objects"] += 1
            entry["bytes"] += path.stat().st_size
    return {
        "parts": dict(sorted(parts.items())),
        "objects": sum(entry["objects"] for entry in parts.values()),
        "bytes": sum(entry["bytes"] for entry in parts.values()),
    }


@dataclass
class Context:
    """The session's shared state: profile, scratch folder, runner, and what was already made or measured."""

    profile: Profile
    workdir: Path
    runner: Runner = measure_command
    device: str = "cpu"  # where the floor runs
    log: Callable[[str], None] = lambda message: print(f"bench: {message}", file=sys.stderr, flush=True)
    memo: dict[Any, Any] = field(default_factory=dict)
    warm_up_run: CommandRun | None = None
    _outputs: int = 0

    @property
    def quick(self) -> bool:
        return self.profile.name != "full"

    @property
    def tracking_uri(self) -> str:
        """One SQLite MLflow store for the session (a user's store exists before their run)."""
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The commands' environment: this one, with segpipe's per-user state kept in the scratch folder, and
        ``extra`` on top (a None value unsets the variable)."""
        env: dict[str, str | None] = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["SEGPIPE_HOME"] = str(self.workdir / "segpipe-home")
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env.update(extra or {})
        return {key: value for key, value in env.items() if value is not None}

    def sample(self, size: int, seed: int = 0) -> tuple[Path, Path]:
        """The synthetic nuclei image of ``size``^2 and its truth (written once per session)."""
        return data.sample(self.workdir / "images", size, seed)

    def output(self, label: str) -> Path:
        """A new, unused output folder."""
        self._outputs += 1
        return self.workdir / "out" / f"{self._outputs:03d}-{label}"

    def run(self, argv: Sequence[str], env: Mapping[str, str | None] | None = None) -> CommandRun:
        """Run a command from the repository root in the commands' environment."""
        return self.runner(list(argv), self.env(env), REPO)

    def segpipe(
        self,
        images: Sequence[str | Path],
        truths: Sequence[str | Path] | None,
        label: str,
        extra: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        out: str | None = None,
    ) -> SegpipeRun:
        """``python -m segpipe.cli run IMAGES [--truth ...] --out OUT --json --tracking-uri ...`` after the
        session's warm-up; raises BenchError when it fails."""
        self.warm_up()
        return self._segpipe(images, truths, out or str(self.output(label)), extra, env)

    def warm_up(self) -> CommandRun | None:
        """Once per session, one untimed run on a small image: creates the MLflow store and fills the page cache
        with the libraries, as on any machine that has run segpipe before."""
        if self.warm_up_run is None:
            self.log("warm-up: one untimed segpipe run (creates the MLflow store)")
            image, truth = self.sample(self.profile.overhead)
            self.warm_up_run = self._segpipe([image], [truth], str(self.output("warm-up")), (), None).run
        return self.warm_up_run

    def _segpipe(
        self,
        images: Sequence[str | Path],
        truths: Sequence[str | Path] | None,
        out: str,
        extra: Sequence[str],
        env: Mapping[str, str | None] | None,
    ) -> SegpipeRun:
        argv = python_module("segpipe.cli", "run", *map(str, images))
        if truths:
            argv += ["--truth", *map(str, truths)]
        argv += ["--out", out, "--json", "--tracking-uri", self.tracking_uri, *extra]
        finished = self.run(argv, env)
        if finished.returncode != 0:
            raise BenchError(f"exit {finished.returncode}: {finished.command}\n{_tail(finished.stderr)}")
        try:
            report = json.loads(finished.stdout)
        except ValueError as exc:
            raise BenchError(f"no JSON report on stdout ({exc}): {finished.command}") from None
        return SegpipeRun(finished, report)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
