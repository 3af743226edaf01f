"""compile: eager against compiled forms of the built-in U-Net and of a TorchScript export of it, at the window
and batch the pipeline feeds the model (312^2, one window per pass on a CPU), fp32, channels-last.

    python -m bench --only compile [--quick]

Forms (``Profile.compile``): ``eager`` (the module as the predictor holds it), ``fold`` (conv + batch norm
merged: segpipe's ``--compile fold``), ``inductor`` (``torch.compile`` of the module as loaded: ``--compile
inductor``), ``inductor_folded`` (fold, then ``torch.compile``), ``inductor_freezing`` (fold, then
inductor's own freezing), ``inductor_autotune`` (mode ``max-autotune-no-cudagraphs``), and the TorchScript
export (traced, saved and loaded through segpipe's TorchScript backend) as loaded (``ts``), frozen (``ts_fold``: what
``--compile fold`` does to it), frozen and ``optimize_for_inference`` (``ts_ofi``), and passed to
``torch.compile`` (``ts_inductor``). Every form is built in this process with one torch thread, as a local
cluster's thread workers run;
an inductor form's first pass (its compile) is timed in a new, empty inductor cache (``compile_seconds``, what a
new worker on a new machine pays) and again after ``torch._dynamo.reset()`` with that cache filled
(``warm_compile_seconds``). Then every form runs ``Profile.compile_repeats`` rounds, interleaved (eager, fold,
inductor, eager, ...), each round ``CALLS`` passes in one stream and then in one stream per core sharing the
module (the pipeline's way); ``seconds_per_batch`` are the medians. Agreement: the largest absolute logit
difference from ``eager`` and the share of pixels with the same argmax, over windows of the synthetic sample.
``break_even_windows``: windows a worker must run before a form's compile is paid back.
"""

from __future__ import annotations

import io
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._inductor.utils import fresh_cache

from bench import floor
from bench.harness import Context
from segpipe.config import InferenceConfig
from segpipe.models import resolve_model
from segpipe.models.backends import torchscript
from segpipe.models.cache import build_model, model_payload
from segpipe.models.optimize import fold_batchnorm, optimize
from segpipe.models.predictor import Predictor

NAME = "compile"
CALLS = 6  # passes per stream per round
AGREE_WINDOWS = 8
WIN_SPEEDUP = 1.05  # a form wins when it is this much faster per batch, compile paid back, argmax agreeing
WIN_AGREEMENT = 0.9999


@dataclass
class Form:
    """One way to run the model: what to call, its first pass's seconds (compile included) and any error."""

    name: str
    module: torch.nn.Module | None
    first_pass_seconds: float = 0.0
    warm_compile_seconds: float | None = None
    compiles: bool = False
    error: str = ""


def loaded(channels_last: bool = True) -> torch.nn.Module:
    """The built-in U-Net as the pipeline's predictor holds it before any compile mode (eval, channels-last)."""
    ref, cpu = resolve_model("builtin"), torch.device("cpu")
    module = Predictor(build_model(ref, model_payload(ref), cpu), ref.card, cpu, channels_last=channels_last).module
    assert module is not None
    return module


def exported(example: torch.Tensor) -> torch.nn.Module:
    """A TorchScript export of the U-Net (``torch.jit.trace``), saved and loaded by segpipe's TorchScript
    backend and put in channels-last as the predictor would."""
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(loaded(channels_last=False), example), buffer)  # type: ignore[no-untyped-call]
    ref = resolve_model("builtin")
    cpu = torch.device("cpu")
    module = Predictor(torchscript.load(buffer.getvalue(), ref.card, cpu), ref.card, cpu).module
    assert module is not None
    return module


def builders(example: torch.Tensor) -> dict[str, Callable[[], torch.nn.Module]]:
    """Every form's builder (lazy: torch.compile compiles on the first pass)."""

    def compiled(module: torch.nn.Module, **options: Any) -> torch.nn.Module:
        return torch.compile(module, dynamic=False, **options)  # type: ignore[return-value]

    def frozen_ts() -> torch.nn.Module:
        return optimize(exported(example), "fold").module

    def folded() -> torch.nn.Module:
        module = loaded()
        fold_batchnorm(module)
        return module

    return {
        "eager": lambda: optimize(loaded(), "eager").module,
        "fold": lambda: optimize(loaded(), "fold").module,
        "inductor": lambda: optimize(loaded(), "inductor").module,
        "inductor_folded": lambda: compiled(folded()),
        "inductor_freezing": lambda: compiled(folded(), options={"freezing": True}),
        "inductor_autotune": lambda: compiled(folded(), mode="max-autotune-no-cudagraphs"),
        "ts": lambda: exported(example),
        "ts_fold": frozen_ts,
        "ts_ofi": lambda: torch.jit.optimize_for_inference(frozen_ts()),  # type: ignore[no-untyped-call]
        "ts_inductor": lambda: compiled(exported(example)),
    }


def first_pass(module: torch.nn.Module, example: torch.Tensor) -> float:
    """Seconds of one forward pass (a compiled module's compile included)."""
    started = time.perf_counter()
    with torch.inference_mode():
        module(example)
    return time.perf_counter() - started


def build(name: str, make: Callable[[], torch.nn.Module], example: torch.Tensor) -> Form:
    """A form, its first pass timed; an inductor form in a new, empty inductor cache (on disk and in memory, as
    a new worker on a new machine), then again after a Dynamo reset with that cache filled."""
    compiles = "inductor" in name
    try:
        if not compiles:
            module = make()
            return Form(name, module, first_pass(module, example))
        torch._dynamo.reset()
        module = make()  # torch.compile refuses some modules (TorchScript) here, before any cache is made
        with fresh_cache():
            seconds = first_pass(module, example)
            torch._dynamo.reset()
            module = make()
            warm = first_pass(module, example)
    except Exception as exc:  # a form torch cannot build here is a finding, not a failed benchmark
        return Form(name, None, compiles=compiles, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    return Form(name, module, seconds, warm, compiles)  # its kernels stay loaded after their cache is gone


def per_batch(module: torch.nn.Module, example: torch.Tensor, streams: int) -> float:
    """Wall seconds per pass of ``streams`` threads each running ``CALLS`` passes of ``example``."""

    def stream() -> None:
        with torch.inference_mode():
            for _ in range(CALLS):
                module(example)

    started = time.perf_counter()
    threads = [threading.Thread(target=stream) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - started) / CALLS


def agreement(module: torch.nn.Module, reference: list[torch.Tensor], inputs: list[torch.Tensor]) -> dict[str, float]:
    """Largest absolute logit difference from eager's ``reference`` and the share of equal argmax pixels."""
    with torch.inference_mode():
        outputs = [module(x) for x in inputs]
    diff = max(float((out - ref).abs().max()) for out, ref in zip(outputs, reference, strict=True))
    same = sum(int((out.argmax(1) == ref.argmax(1)).sum()) for out, ref in zip(outputs, reference, strict=True))
    return {"max_abs_diff": diff, "argmax_agreement": same / sum(ref[:, 0].numel() for ref in reference)}


def measure(ctx: Context) -> dict[str, Any]:
    """Every form of ``ctx.profile.compile``: compile seconds, seconds per batch, agreement (module docstring)."""
    edge, _ = floor.window_edge()
    batch = floor.pipeline_batch("cpu")
    image = floor.normalized_image(ctx.sample(ctx.profile.floor[0])[0])
    windows = floor.windows(image, edge)[:AGREE_WINDOWS]
    inputs = floor._batches(windows, batch, "cpu", channels_last=True)
    example = inputs[0]
    made = builders(example)
    try:
        forms = {name: build(name, made[name], example) for name in ctx.profile.compile}
        return _timed(ctx, forms, inputs, edge, batch)
    finally:
        torch._dynamo.reset()


def _timed(ctx: Context, forms: dict[str, Form], inputs: list[torch.Tensor], edge: int, batch: int) -> dict[str, Any]:
    """Interleaved rounds of every built form; the figures per form."""
    ready = {name: form for name, form in forms.items() if form.module is not None}
    ways = {"one_stream": 1, "stream_per_core": os.cpu_count() or 1}
    times: dict[str, dict[str, list[float]]] = {name: {way: [] for way in ways} for name in ready}
    for round_ in range(ctx.profile.compile_repeats):
        ctx.log(f"compile: round {round_ + 1} of {ctx.profile.compile_repeats}")
        for way, streams in ways.items():
            for name, form in ready.items():
                assert form.module is not None
                times[name][way].append(per_batch(form.module, inputs[0], streams))
    with torch.inference_mode():
        reference = [ready["eager"].module(x) for x in inputs] if "eager" in ready else []  # type: ignore[misc]
    eager = {way: statistics.median(times["eager"][way]) for way in ways} if "eager" in ready else None
    entries = {name: _entry(form, times.get(name), eager, reference, inputs) for name, form in forms.items()}
    return {"window": edge, "batch_size": batch, "windows_compared": len(inputs), "forms": entries}


def _entry(
    form: Form,
    times: dict[str, list[float]] | None,
    eager: dict[str, float] | None,
    reference: list[torch.Tensor],
    inputs: list[torch.Tensor],
) -> dict[str, Any]:
    """One form's figures: compile, seconds per batch, speed-up over eager, agreement, break-even windows."""
    entry: dict[str, Any] = {"compiles": form.compiles}
    if form.module is None or times is None:
        return {**entry, "error": form.error}
    seconds = {way: statistics.median(values) for way, values in times.items()}
    entry["seconds_per_batch"] = seconds
    entry["all_seconds_per_batch"] = times
    entry["first_pass_seconds"] = form.first_pass_seconds
    entry["compile_seconds"] = max(0.0, form.first_pass_seconds - seconds["one_stream"]) if form.compiles else 0.0
    if form.warm_compile_seconds is not None:
        entry["warm_compile_seconds"] = max(0.0, form.warm_compile_seconds - seconds["one_stream"])
    if eager is not None and reference:
        entry["speedup"] = {way: eager[way] / seconds[way] for way in seconds}
        entry.update(agreement(form.module, reference, inputs))
        streams = os.cpu_count() or 1  # the process's worker threads all wait for its one compile
        saved = (eager["stream_per_core"] - seconds["stream_per_core"]) / streams  # wall seconds per window
        entry["break_even_windows"] = entry["compile_seconds"] / saved if saved > 0 else None
        entry["wins"] = bool(
            entry["speedup"]["stream_per_core"] >= WIN_SPEEDUP and entry["argmax_agreement"] >= WIN_AGREEMENT
        )
    return entry


def run(ctx: Context) -> dict[str, Any]:
    """Eager against each compiled form, with one torch thread (restored afterwards)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = measure(ctx)
    finally:
        torch.set_num_threads(saved)
    forms = result["forms"]
    ratios = {
        f"{name}/eager s per batch": 1.0 / entry["speedup"]["stream_per_core"]
        for name, entry in forms.items()
        if "speedup" in entry and name != "eager"
    }
    default = InferenceConfig().compile
    return {**result, "pipeline_default": default, "ratios": ratios, "goals": []}
