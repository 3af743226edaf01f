"""What run.py measures, once the core imports: images, the raw batched forward, the infer stage; one report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gpu import raw, stage

if TYPE_CHECKING:
    from bench.gpu.run import Profile

RAW_SAMPLE_EDGE = 4096  # the raw forward's windows come from this top-left square of the first stage image
GOAL_RATIO = 0.85  # issue 22: infer stage >= 0.85 of the raw batched forward at tile 1024 (GPU)


def note(started: float, what: str) -> None:
    """One progress line on stderr (the JSON goes to stdout): where a run cut short got to."""
    print(f"[{time.perf_counter() - started:6.1f} s] {what}", file=sys.stderr, flush=True)


def run(profile: Profile, work: Path, started: float, budget: float) -> dict[str, Any]:
    """Every measurement of ``profile``, with images and stores under ``work``; the report as plain values."""
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    images = {
        size: stage.write_image(work / f"synth{size}.tif", size) for size in (profile.warm_up_size, *profile.sizes)
    }
    phases["generate"] = time.perf_counter() - clock  # before CUDA starts here: the images are rendered in forks
    note(started, f"images written: {', '.join(f'{size}^2' for size in images)}")

    import torch

    from segpipe.models import load_predictor, resolve_model

    if profile.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu/run.py: no CUDA device visible to torch; run with --cpu on a CPU machine")
    clock = time.perf_counter()
    predictor = load_predictor(resolve_model("builtin"), profile.device)
    streams = 1
    if profile.device == "cpu":  # one stream per core, one torch thread each: how the local cluster runs the model
        streams = os.cpu_count() or 1
        torch.set_num_threads(1)
    precisions = [p for p in ("fp32", "bf16") if p == "fp32" or _bf16_supported(torch, profile.device)]
    first = profile.sizes[0]
    sample = stage.normalized(images[first], min(RAW_SAMPLE_EDGE, first))
    warm_plan = stage.planned(images[profile.warm_up_size], _settings(profile, work / "warm", "fp32"))
    edges = sorted({*profile.tiles, profile.stage_tile, stage.window_edge(warm_plan)})
    forwards: list[raw.RawForward] = []
    raw_agreement: dict[str, float] = {}
    for edge in edges:
        labels = {}
        for precision in precisions:
            result, labels[precision] = raw.measure(predictor, sample, edge, precision, profile.raw_seconds, streams)
            forwards.append(result)
        if len(labels) == 2:
            raw_agreement[str(edge)] = raw.agreement(labels["fp32"], labels["bf16"])
    phases["raw_forward"] = time.perf_counter() - clock
    note(started, f"raw forward measured at edges {edges}")

    runs: list[dict[str, Any]] = []
    stage_agreement: dict[str, float] = {}
    skipped: list[str] = []
    clock = time.perf_counter()
    with stage.cluster(profile.cluster, warm_plan) as opened:
        phases["cluster_start"] = time.perf_counter() - clock
        clock = time.perf_counter()
        warm = stage.ingest(warm_plan, opened.executor)
        for precision in precisions:  # each worker loads the model and sets its device up once, untimed
            warm_run = _settings(profile, work / f"warm-{precision}", precision)
            stage.infer(
                profile.warm_up_size,
                stage.planned(images[profile.warm_up_size], warm_run),
                warm_run,
                stage.reused(warm),
                opened.executor,
            )
        phases["stage_warm_up"] = time.perf_counter() - clock
        note(started, f"{opened.handle.description}: warmed up")
        previous: tuple[int, float] | None = None
        for size in profile.sizes:
            clock = time.perf_counter()
            if previous and _would_overrun(previous, size, started, budget):
                skipped.append(f"stage {size}^2: would not finish within the budget of {budget:.0f} s")
                note(started, skipped[-1])
                continue
            by_precision: dict[str, stage.StageRun] = {}
            ingested = None
            for precision in precisions:
                settings = _settings(profile, work / f"s{size}-{precision}", precision)
                plan = stage.planned(images[size], settings)
                if ingested is None:
                    ingested = stage.ingest(plan, opened.executor)
                    done = stage.infer(size, plan, settings, ingested, opened.executor)
                else:
                    done = stage.infer(size, plan, settings, stage.reused(ingested), opened.executor)
                by_precision[precision] = done
                runs.append(_stage_entry(done, forwards))
            if len(by_precision) == 2:
                stage_agreement[str(size)] = stage.mask_agreement(
                    by_precision["fp32"].mask, by_precision["bf16"].mask, profile.chunk
                )
            previous = (size, time.perf_counter() - clock)
            phases[f"stage_{size}"] = previous[1]
            rates = ", ".join(f"{p} {r.megapixels_per_second:.1f} Mpx/s" for p, r in by_precision.items())
            note(started, f"stage {size}^2: {rates}")
        worker_peak = stage.worker_memory_peak(opened.handle)
        cluster = {
            "kind": opened.handle.kind,
            "description": opened.handle.description,
            "workers": opened.handle.workers,
            "dask_cuda": opened.dask_cuda,
        }
    raw_peaks = [f.memory_peak_bytes for f in forwards if f.memory_peak_bytes is not None]
    return {
        "mode": profile.name,
        "environment": _environment(torch, predictor.device),
        "cluster": cluster,
        "profile": {
            "tiles": list(profile.tiles),
            "sizes": list(profile.sizes),
            "chunk": profile.chunk,
            "stage_tile": profile.stage_tile,
            "precisions": precisions,
        },
        "raw_forward": [f.to_dict() for f in forwards],
        "stage": runs,
        "mask_agreement": {"raw_windows": raw_agreement, "stage": stage_agreement},
        "gpu_memory_peak_bytes": {"raw_forward": max(raw_peaks) if raw_peaks else None, "stage_workers": worker_peak},
        "summary": _summary(runs, stage_agreement, profile),
        "phases_seconds": phases,
        "skipped": skipped,
    }


def _settings(profile: Profile, out: Path, precision: str) -> Any:
    threads = 1 if profile.cluster == "local" else None  # as segment_batch sets it: cores // workers (one per core)
    return stage.settings(out, profile.chunk, profile.stage_tile, precision, profile.device, threads)


def _bf16_supported(torch: Any, device: str) -> bool:
    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    except RuntimeError:
        return False
    return True


def _would_overrun(previous: tuple[int, float], size: int, started: float, budget: float) -> bool:
    """Whether ``size``^2, at the previous image's seconds per pixel (and a margin), would end past the budget."""
    done_size, seconds = previous
    estimate = seconds * (size / done_size) ** 2 * 1.3
    return time.perf_counter() - started + estimate > budget


def _raw_rate(forwards: list[raw.RawForward], edge: int, precision: str) -> float:
    return next(f.megapixels_per_second for f in forwards if f.edge == edge and f.precision == precision)


def _stage_entry(done: stage.StageRun, forwards: list[raw.RawForward]) -> dict[str, Any]:
    """The run with its ratios: to the raw forward at its tile, and the forward's estimated share of its time.

    The forward's seconds are estimated as the windows inference computed (tile + 2 halo each) at the raw
    forward's rate for that window edge and precision: the workers' own forward calls are not clocked. A share is
    capped at 1 (and ``forward_share_capped`` set) when the estimate exceeds the stage's own seconds, which only
    happens when the raw forward was measured slower than the stage ran it (a machine shared with other work).
    """
    forward_seconds = done.windows * done.window**2 / 1e6 / _raw_rate(forwards, done.window, done.precision)
    with_ingest = done.ingest_seconds + done.infer_seconds
    return done.to_dict() | {
        "raw_megapixels_per_second_at_tile": _raw_rate(forwards, done.tile, done.precision),
        "ratio_to_raw_forward": done.megapixels_per_second / _raw_rate(forwards, done.tile, done.precision),
        "halo_ceiling": (done.tile / done.window) ** 2,
        "forward_seconds_estimate": forward_seconds,
        "forward_share_of_infer": min(1.0, forward_seconds / done.infer_seconds),
        "forward_share_of_ingest_and_infer": min(1.0, forward_seconds / with_ingest) if done.ingest_seconds else None,
        "forward_share_capped": forward_seconds > done.infer_seconds,
    }


def _summary(runs: list[dict[str, Any]], agreement: dict[str, float], profile: Profile) -> dict[str, Any]:
    """The headline: the largest stage image measured, per precision, and the goal at the stage tile."""
    if not runs:
        return {}
    largest = max(run["size"] for run in runs)
    chosen = {run["precision"]: run for run in runs if run["size"] == largest}
    fp32 = chosen["fp32"]
    return {
        "size": largest,
        "tile": profile.stage_tile,
        "megapixels_per_second": {p: r["megapixels_per_second"] for p, r in chosen.items()},
        "ratio_to_raw_forward": {p: r["ratio_to_raw_forward"] for p, r in chosen.items()},
        "forward_share_of_infer": {p: r["forward_share_of_infer"] for p, r in chosen.items()},
        "forward_share_of_ingest_and_infer": fp32["forward_share_of_ingest_and_infer"],
        "mask_agreement_bf16_vs_fp32": agreement.get(str(largest)),
        "goal": {
            "what": f"infer stage >= {GOAL_RATIO} of the raw batched forward at tile {profile.stage_tile} (fp32)",
            "value": fp32["ratio_to_raw_forward"],
            "met": fp32["ratio_to_raw_forward"] >= GOAL_RATIO,
            "applies": profile.name == "gpu",
        },
    }


def _environment(torch: Any, device: Any) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"torch": torch.__version__, "device": str(device), "gpu": gpu, "cuda": torch.version.cuda}
