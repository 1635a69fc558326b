"""The worker: measures one checkpoint after another, the next one's weights downloading while the current one computes.

One body, two homes: a Ray actor holding one GPU (or one CPU slot where the cluster has none), reused across
checkpoints and across the models of a study (`CheckpointWorker`, the class defined once, here), or called directly
in the driver's process (`workers = 0`). It returns a small record per checkpoint, never tensors; which worker
measured it (host, node, peak memory) travels with the record. A Ray worker starts with the driver's Hugging Face
settings (`worker_env`).
"""

from __future__ import annotations

import os
import resource
import shlex
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple

import ray
import torch

from pythia_sweep.config import SweepConfig
from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.measure.checkpoint import discover_groups, run_checkpoint
from pythia_sweep.measure.loading import ModelCache, quiet_transformers_bars
from pythia_sweep.measure.plan import CompiledTasks
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.run.progress import DownloadBar
from pythia_sweep.task.definition import Task

FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_DISABLE_PROGRESS_BARS",
                 "TOKENIZERS_PARALLELISM")  # fmt: skip


class Item(NamedTuple):
    """One checkpoint of one model: what the driver schedules."""

    model: str
    revision: str
    label: str  # how the terminal names it: the revision, or "<model> <revision>" in a study of several models


@dataclass
class ModelRun:
    """What a worker needs to measure one model's checkpoints."""

    config: SweepConfig
    task: Task  # with its discovered heads once found
    published: list[Checkpoint]


class CheckpointMeasurer:
    """Measures checkpoints one after another, prefetching the next one's weights in a background thread: a Ray
    worker's body (CheckpointWorker), or called directly in the driver's process (`workers = 0`). It serves every
    model of a study (`runs`: model -> its config as a dict, task and published revisions), so one worker goes from
    one model's checkpoint to another's, its model skeleton reused where their shapes match."""

    def __init__(self, runs: dict[str, dict], before_checkpoint: Callable | None = None, progress: bool = True,
                 in_process: bool = False):  # fmt: skip
        from pythia_sweep.config import config_from_dict

        self.runs = {model: ModelRun(config_from_dict(r["config"]), r["task"], r["published"]) for model, r in runs.items()}
        self.before_checkpoint = before_checkpoint  # a test's fault injection; None in a real sweep
        self.progress = progress  # each weight file's download drawn on the driver (DownloadBar)
        self.in_process = in_process  # in the driver: huggingface_hub's own download bars, no Ray
        self.available = {model: {c.revision for c in run.published} for model, run in self.runs.items()}
        self.downloads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.prefetched: dict[tuple[str, str], Future] = {}
        self.models = ModelCache()  # the model skeleton, reused across this worker's checkpoints
        self.plans = CompiledTasks()  # each model's task compiled once, not once per checkpoint
        quiet_transformers_bars()
        self.ready_at = time.time()

    def _prefetch(self, model: str, revision: str) -> None:
        if revision in self.available[model] and (model, revision) not in self.prefetched:
            bar = DownloadBar.named if self.progress and not self.in_process else None
            self.prefetched[(model, revision)] = self.downloads.submit(fetch, model, revision, progress=bar)

    def _fetched(self, model: str, revision: str):
        self._prefetch(model, revision)
        future = self.prefetched.pop((model, revision), None)
        try:
            return future.result() if future else None
        except Exception:  # noqa: BLE001 - fetched again by the caller, which records (or says) why it cannot be
            return None

    def run(self, item: Item, next_item: Item | None) -> CheckpointRecord:
        self._prefetch(item.model, item.revision)
        if next_item:
            self._prefetch(next_item.model, next_item.revision)  # downloads while this checkpoint computes
        waited = time.perf_counter()
        fetched = self._fetched(item.model, item.revision)
        waited = time.perf_counter() - waited
        if self.before_checkpoint:
            self.before_checkpoint(item.revision)
        run = self.runs[item.model]
        record = run_checkpoint(run.config, item.revision, task=run.task, published=run.published, fetched=fetched, models=self.models,
                                plans=self.plans)
        worker = {
            "host": socket.gethostname(), "pid": os.getpid(), "in_process": self.in_process,
            "node": None if self.in_process else ray.get_runtime_context().get_node_id(),
            "ip": None if self.in_process else ray.util.get_node_ip_address(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(),  # Ray gives a worker of one CPU one thread
        }  # fmt: skip
        return replace(record, timings=record.timings | {"wait_for_weights_s": waited}, worker=worker)

    def discover(self, model: str, revision: str) -> dict:
        """The discovery pass of `model` at `revision` (measure.checkpoint.discover_groups). The driver saves what it
        found and hands back the task with those heads (`use`), as it does for heads read back from an earlier run."""
        run = self.runs[model]
        return discover_groups(run.config, run.task, revision, fetched=self._fetched(model, revision), models=self.models)

    def use(self, model: str, task: Task) -> None:
        """Measure `model`'s checkpoints with `task`, its heads found (here or by an earlier run of the sweep)."""
        self.runs[model].task = task

    def ready(self) -> dict:
        """When this worker was up, its imports and set-up done (`at`, time.time()), and its node (`node`, `ip`):
        the driver times worker start-up and says where a lost worker ran."""
        if self.in_process:
            return {"at": self.ready_at, "node": None, "ip": None}
        return {"at": self.ready_at, "node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}


# A Ray worker: the driver restarts workers where resources allow, so Ray itself never retries
CheckpointWorker = ray.remote(max_restarts=0, max_task_retries=0)(CheckpointMeasurer)


def worker_env() -> dict:
    """The workers' runtime_env: the Hugging Face settings this driver runs with, and, where this Python's path holds a
    space (or another character a shell splits on), that path quoted. Ray 2.60 starts a worker that has a runtime_env
    with `bash -c "exec <python> ..."` and leaves the interpreter's path unquoted (RuntimeEnvContext.exec_worker), so
    from a folder such as "my projects/" the worker never starts and the actor is retried for minutes. `py_executable`
    is a command by Ray's definition ("path or command"), so a quoted path is what it expects."""
    env = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    if shlex.quote(sys.executable) != sys.executable:
        env["py_executable"] = shlex.quote(sys.executable)
    return env
