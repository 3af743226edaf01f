"""Peak memory vs image size, measured in one run; writes JSON.

    python bench/memory.py [--sizes 2048 8192] [--out bench/results/memory.json]

Runs the batch flow (LocalCluster of worker processes) on synthetic images of each size and samples the
resident memory of the whole process tree (this process, the scheduler, nannies and workers) every 50 ms.
Tiling must keep the peak flat: the goal is ratio_largest_to_smallest close to 1 while the pixel count grows
16x. (A one-gigapixel image in < 2 GiB RSS is the longer-term target.)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import write_result  # bench/common.py, beside this script

from flows.segment_batch import segment_batch
from segpipe.synthetic import write_sample


class PeakRss:
    """Samples the summed RSS of this process and all its descendants in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_total, self.peak_single = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.Error:
                    pass
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_single = max(self.peak_single, max(sizes, default=0))
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(size: int, workdir: Path) -> dict[str, float]:
    image, truth = write_sample(workdir / f"s{size}", size)
    settings = {"out": str(workdir / f"out{size}")}
    started = time.perf_counter()
    with PeakRss() as rss:
        report = segment_batch([str(image)], [str(truth)], settings, workers=2)
    return {
        "megapixels": size * size / 1e6,
        "seconds": time.perf_counter() - started,
        "peak_tree_rss_mib": rss.peak_total / 2**20,
        "peak_process_rss_mib": rss.peak_single / 2**20,
        "mean_dice": report["images"][0]["mean_dice"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--out", default="bench/results/memory.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {str(size): measure(size, Path(tmp)) for size in args.sizes}
    smallest, largest = runs[str(min(args.sizes))], runs[str(max(args.sizes))]
    result = {
        "benchmark": "memory",
        "runs": runs,
        "pixel_ratio": largest["megapixels"] / smallest["megapixels"],
        "ratio_largest_to_smallest": largest["peak_tree_rss_mib"] / smallest["peak_tree_rss_mib"],
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
