"""Where a sweep runs: in the driver's process, or on a Ray cluster joined or started here, with how many workers.

A sweep of one checkpoint with no cluster named runs in this process (starting Ray and a worker process would cost
more than the checkpoint); otherwise Ray's workers measure, one GPU each (or a CPU where the cluster has none).
Ray's start overlaps the tracking store's opening.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import ray

from pythia_sweep.config import SweepConfig
from pythia_sweep.run.stopwatch import Stopwatch

Store = TypeVar("Store")


def runs_here(config: SweepConfig, n_checkpoints: int, ray_address: str | None = None) -> bool:
    """Whether the sweep runs in this process, without Ray: asked for (`workers = 0`), or one checkpoint to measure
    with no cluster named or already joined (starting Ray and a worker process would cost more than it does)."""
    if config.workers == 0:
        return True
    no_cluster = not (ray_address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()
    return config.workers == "auto" and n_checkpoints == 1 and no_cluster


def worker_count(config: SweepConfig, n_checkpoints: int) -> tuple[int, dict]:
    """How many workers, and the resources each holds: one GPU each where there are GPUs, else a CPU."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    asked = None if config.workers == "auto" else config.workers  # 0 never gets here: it runs without Ray
    if gpus:
        n, resources = asked or gpus, {"num_gpus": 1, "num_cpus": 1}
    else:
        n, resources = asked or min(2, cpus), {"num_cpus": 1}
    return max(1, min(n, n_checkpoints)), resources


def connect_ray(address: str | None = None) -> None:
    """Join the cluster named by `address`/RAY_ADDRESS, or start a local one bound to loopback."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # Ray's own start-up notices (the token it made, "Started a local Ray instance") off; its errors stay
        ray.init(
            address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, _node_ip_address="127.0.0.1",
            object_store_memory=256 * 1024 * 1024, log_to_driver=True, logging_level=logging.ERROR,
        )  # fmt: skip


def open_beside_ray(open_store: Callable[[], Store], close_failed: Callable[[Store], None], ray_address: str | None,
                    needs_ray: bool, clock: Stopwatch) -> Store:  # fmt: skip
    """The tracking store opened (the parent runs started or resumed, what is recorded read) in a thread while this
    one starts Ray, when Ray will be needed: the two start-up costs overlap. The store is still checked before any
    checkpoint runs: a store that cannot be used stops the sweep with Ray shut down again; Ray that cannot start
    is raised once the parent runs exist, so they are closed FAILED (`close_failed`) rather than left RUNNING."""
    if not needs_ray or ray.is_initialized():
        return open_store()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as pool:
        opening = pool.submit(open_store)
        try:
            with clock.part("ray start"):
                connect_ray(ray_address)
        except BaseException:
            close_failed(opening.result())
            raise
        try:
            return opening.result()
        except BaseException:
            ray.shutdown()  # started for a sweep that cannot be recorded
            raise
