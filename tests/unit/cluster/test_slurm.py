"""The SLURM backend: the job script dask_jobqueue renders from infra/dask/segpipe.yaml (no SLURM needed)."""

from __future__ import annotations

from typing import Any

import dask

from segpipe.cluster import slurm


def test_job_script_asks_for_one_gpu_on_the_gpu_partition(infra_config: dict[str, Any]) -> None:
    loopback = {"host": "127.0.0.1", "port": 0, "dashboard-address": None}
    with dask.config.set({"segpipe.cluster.slurm.scheduler-options": loopback}):
        config = slurm.settings()
    cluster = slurm.make_cluster(config)  # starts the scheduler only; nothing is submitted
    try:
        script = cluster.job_script()
        address = cluster.scheduler_address
    finally:
        cluster.close()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:1" in directives
    assert f"#SBATCH -p {infra_config['segpipe']['cluster']['slurm']['queue']}" in directives
    assert "#SBATCH -t 04:00:00" in directives
    assert "#SBATCH --cpus-per-task=8" in directives
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--resources GPU=1" in worker
    assert address.startswith("tcp://127.0.0.1:")
    assert not address.endswith(":0")
    assert f" {address} " in worker, "workers must connect to the scheduler this process started"
    assert slurm.gpu_jobs(config)


def test_a_cpu_partition_without_gpu_resources_is_not_a_gpu_cluster() -> None:
    with dask.config.set({"segpipe.cluster.slurm.worker-extra-args": ["--lifetime", "1h"]}):
        assert not slurm.gpu_jobs(slurm.settings())
