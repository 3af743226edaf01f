"""The distributed executor the flows use, and the local and address backends, against real schedulers."""

from __future__ import annotations

from collections.abc import Iterator

import dask
import pytest
from distributed import Client, Scheduler, SpecCluster, Worker, get_worker

import segpipe.chunk_inference as inference
from segpipe.chunk_inference import ChunkJob, ChunkOutputs, TaskResult, Windowing, segment_image
from segpipe.cluster import ClusterSpec, distributed_executor, open_cluster
from segpipe.config import InferenceConfig
from segpipe.executor import task_slots
from segpipe.io.images import ImageSource
from segpipe.tiling import Region, chunk_grid

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("show_progress", [False, True])
def test_executor_returns_results_in_order_with_or_without_a_progress_bar(
    dask_cluster: str, show_progress: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: with a terminal the progress bar used distributed.as_completed, which needs a *default*
    client; segpipe's client is not the default, so ``segpipe demo`` crashed on a TTY."""
    with Client(dask_cluster, set_as_default=False) as client:
        run = distributed_executor(client, show_progress=show_progress)
        square = dask.delayed(lambda x: x * x, pure=True)
        assert run([square(i) for i in range(12)], "test") == [i * i for i in range(12)]


@pytest.fixture(scope="module")
def mixed_cluster() -> Iterator[str]:
    """In-process: one worker declaring GPU=1 and one plain worker; yields the scheduler address."""
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False, "dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        yield cluster.scheduler_address


def _worker_name() -> str:
    return str(get_worker().name)


def test_executor_asks_for_resources_only_for_the_labels_given(mixed_cluster: str) -> None:
    with Client(mixed_cluster, set_as_default=False) as client:
        run = distributed_executor(client, resources={"infer": {"GPU": 1}})
        inferred = run([dask.delayed(_worker_name, pure=False)() for _ in range(16)], "infer")
        ingested = run([dask.delayed(_worker_name, pure=False)() for _ in range(64)], "ingest")
    assert set(inferred) == {"gpu"}
    assert ingested.count("cpu") > 0, "tasks of a label without resources must run anywhere"


def test_task_slots_count_the_threads_of_the_workers_a_label_can_use(mixed_cluster: str) -> None:
    """Inference groups chunks into tasks for the slots that can run them: here the one GPU worker's thread."""
    with Client(mixed_cluster, set_as_default=False) as client:
        run = distributed_executor(client, resources={"infer": {"GPU": 1}})
        assert (task_slots(run, "infer"), task_slots(run, "ingest")) == (1, 2)
        waiting_for_jobs = distributed_executor(client, resources={"infer": {"GPU": 1}}, min_slots=8)
        assert task_slots(waiting_for_jobs, "infer") == 8  # SLURM jobs requested, not yet joined


def test_joining_an_address_reports_its_workers_and_whether_they_have_gpus(
    dask_cluster: str, mixed_cluster: str
) -> None:
    with open_cluster(ClusterSpec.parse(dask_cluster)) as plain:
        assert (plain.kind, plain.workers, plain.gpu) == ("address", 2, False)
        assert plain.description.startswith(f"scheduler {dask_cluster}")
    with open_cluster(ClusterSpec.parse(mixed_cluster)) as mixed:
        assert (mixed.workers, mixed.gpu, mixed.task_resources) == (2, True, {"infer": {"GPU": 1}})


def test_address_backend_client_sees_every_worker_of_the_scheduler(dask_cluster: str) -> None:
    with open_cluster(ClusterSpec.parse(dask_cluster, 1)) as handle:
        assert len(handle.client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_local_backend_starts_single_threaded_worker_processes() -> None:
    with open_cluster(ClusterSpec.parse("local", 1)) as handle:
        workers = handle.client.scheduler_info(n_workers=-1)["workers"]
        assert (handle.kind, handle.workers, handle.gpu) == ("local", 1, False)
        assert [info["nthreads"] for info in workers.values()] == [1]
        assert handle.client.submit(_worker_name).result(timeout=60)


STARTED: list[Region] = []  # the first chunk of each infer task, in the order the worker ran them


def _record_task(job: ChunkJob, regions: list[Region]) -> TaskResult:
    STARTED.append(regions[0])
    return TaskResult(len(regions), 0, 0.0, (), 0.0)


def test_an_images_infer_tasks_start_in_order_large_runs_first(
    mixed_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the scheduler ordered an image's independent infer tasks arbitrarily, so a 16-chunk run could
    start last and leave the other slots idle while it ran; the runs shrink and must start in raster order."""
    monkeypatch.setattr(inference, "segment_chunks", _record_task)
    STARTED.clear()
    source = ImageSource("unused.zarr", "zarr", "CYX", (1, 640, 640), "uint8")
    job = ChunkJob(source, None, Windowing(64, 32, 0), InferenceConfig(), ChunkOutputs("unused"))  # type: ignore[arg-type]
    with Client(mixed_cluster, set_as_default=False) as client:  # infer runs on the one GPU worker's one thread
        summary = segment_image(job, distributed_executor(client, resources={"infer": {"GPU": 1}}))
    runs = inference.task_runs(chunk_grid(640, 640, 64), 1)
    assert summary.chunks_computed == 100
    assert STARTED == [run[0] for run in runs]
