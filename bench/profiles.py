"""Image sizes per benchmark: the full run (the issue's sizes) and ``--quick`` (minutes on a laptop)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPair:
    """``count`` images of ``small``^2 against one image of ``single``^2 (the same pixels when
    ``count * small**2 == single**2``), ``rounds`` times in turn: the ratio of the medians (a pair of commands of
    a few seconds each moves by 20 % from one run to the next on a shared machine)."""

    count: int
    small: int
    single: int
    rounds: int = 1


@dataclass(frozen=True)
class Profile:
    """Edges (pixels) of the square images each benchmark uses.

    Attributes:
        name: ``full`` or ``quick`` (or a test's own).
        floor: sizes of the bare forward pass.
        end_to_end: sizes of the whole command, each against the floor of the same image.
        monai: sizes of the MONAI comparison.
        memory: sizes of the memory-scaling runs with the near-free model, smallest first.
        memory_reference: the size the largest memory run is compared with.
        overhead: the small image of the start-up benchmark.
        batch: batch-vs-single pairs.
        s3: the size of the S3-vs-local comparison.
        overlap: the size of the read-ahead/write-behind comparison (64 chunks).
        overlap_rounds: rounds of that comparison (best of).
        objects: the size of the with/without ``--objects`` comparison.
        objects_memory: the size of the lattice image (``bench.data.write_lattice_tiff``, about a million
            objects at 32768^2) whose ``--objects`` run's peak RSS is checked.
        foreground: the RGB slide of the whole vs ``--foreground tissue`` comparison.
        resolution: the 0.25 um/px slide of the resolution comparison (its 0.5 um/px copy is half the edge).
        slide_chunk: the chunk edge of both slide benchmarks.
        compile: the forms of the model the compile benchmark times (bench/compile.py).
        compile_repeats: its interleaved rounds (medians count).
        goal_size: the size the issue sets the end-to-end goal at (goals are still checked at the largest
            measured size; the table says when that is not this one).
    """

    name: str
    floor: tuple[int, ...]
    end_to_end: tuple[int, ...]
    monai: tuple[int, ...]
    memory: tuple[int, ...]
    memory_reference: int
    overhead: int
    batch: tuple[BatchPair, ...]
    s3: int
    overlap: int = 4096
    overlap_rounds: int = 3
    goal_size: int = 8192
    memory_goal_size: int = 32768
    objects: int = 8192
    objects_memory: int = 32768
    foreground: int = 8192
    resolution: int = 8192
    slide_chunk: int = 512
    compile: tuple[str, ...] = (
        "eager",
        "fold",
        "inductor",
        "inductor_folded",
        "inductor_freezing",
        "ts",
        "ts_fold",
        "ts_ofi",
        "ts_inductor",
    )
    compile_repeats: int = 7


FULL = Profile(
    name="full",
    floor=(2048, 8192),
    end_to_end=(2048, 8192),
    monai=(2048, 8192),
    memory=(4096, 8192, 16384, 32768),
    memory_reference=8192,
    overhead=512,
    batch=(BatchPair(16, 512, 2048, rounds=5), BatchPair(4, 4096, 8192)),
    s3=2048,
)

QUICK = Profile(
    name="quick",
    floor=(512, 1024),
    end_to_end=(512, 1024),
    monai=(512,),
    memory=(1024, 4096),
    memory_reference=1024,
    overhead=512,
    batch=(BatchPair(4, 256, 512),),
    s3=512,
    overlap=1024,
    objects=1024,
    objects_memory=2048,
    foreground=2048,
    resolution=2048,
    slide_chunk=256,
    compile=("eager", "fold", "inductor", "ts", "ts_fold"),
    compile_repeats=3,
)
