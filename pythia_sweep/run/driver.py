"""How the sweep is scheduled: a Ray driver hands checkpoints to long-lived workers and records results.

The checkpoint is the unit of scheduling and of failure. Each worker is an actor holding one GPU (or one
CPU slot where the cluster has no GPUs), reused across checkpoints; while it measures one checkpoint it
prefetches the weights of the next one it has been given. The driver submits one checkpoint per worker,
drains results with `ray.wait` in completion order and records each in MLflow as it arrives, so a driver
that dies later loses nothing already finished. A worker process that dies is restarted by Ray and its
checkpoint retried; recording is idempotent, so a retried checkpoint still has exactly one result.
Restarts are the driver's, not Ray's: a worker lost with its node is replaced only where resources remain,
so its checkpoints move to the surviving workers instead of waiting for a node that is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shlex
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pythia_sweep.hub.revisions import (
    Checkpoint,
    check_published,
    fetch,
    fetch_metadata,
    final_revision,
    nearest_published,
    published_revisions,
    resolve_schedule,
    weights_of,
)
from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import Plan, base_record, discover_groups, plan_checkpoint, preflight, run_checkpoint
from pythia_sweep.measure.loading import ModelCache
from pythia_sweep.hub.duplicates import measured_revisions
from pythia_sweep.measure.conditions import head_name
from pythia_sweep.errors import PythiaSweepError
from pythia_sweep.run.placement import MAX_ATTEMPTS, ip_of, lost_worker_line, node_with_room, where_it_ran
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.task.definition import Task
from pythia_sweep.task.schema import load_task
from pythia_sweep.run.progress import DownloadBar, checkpoints_bar, quiet_transformers_bars
from pythia_sweep.tracking.store import SweepRecorder
from pythia_sweep.tracking.server import TrackingServerLost

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
        record = run_checkpoint(run.config, item.revision, task=run.task, published=run.published, fetched=fetched, models=self.models)
        worker = {
            "host": socket.gethostname(), "pid": os.getpid(), "in_process": self.in_process,
            "node": None if self.in_process else ray.get_runtime_context().get_node_id(),
            "ip": None if self.in_process else ray.util.get_node_ip_address(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(),  # Ray gives a worker of one CPU one thread
        }  # fmt: skip
        return replace(record, timings=record.timings | {"wait_for_weights_s": waited}, worker=worker)

    def discover(self, model: str, revision: str) -> dict:
        """The discovery pass of `model` at `revision` (checkpoint_run.discover_groups); this worker then measures with its heads."""
        run = self.runs[model]
        found = discover_groups(run.config, run.task, revision, fetched=self._fetched(model, revision), models=self.models)
        run.task = run.task.found_by(found)
        return found

    def ready(self) -> dict:
        """When this worker was up, its imports and set-up done (`at`, time.time()), and its node (`node`, `ip`):
        the driver times worker start-up and says where a lost worker ran."""
        if self.in_process:
            return {"at": self.ready_at, "node": None, "ip": None}
        return {"at": self.ready_at, "node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}


# A Ray worker: the driver restarts workers where resources allow, so Ray itself never retries
CheckpointWorker = ray.remote(max_restarts=0, max_task_retries=0)(CheckpointMeasurer)


@dataclass
class SweepResult:
    parent_run_id: str
    tracking_uri: str
    recorded: list[str]  # revisions recorded by this invocation
    skipped: list[str]  # revisions already recorded ok before it (resume)
    failed: list[str]
    log_s: float = 0.0  # driver time spent writing to MLflow
    startup: dict[str, float] = field(default_factory=dict)  # seconds of each start-up part (run_sweep's stopwatch)
    errors: dict[str, str] = field(default_factory=dict)  # failed revision -> why, as recorded
    records: list[CheckpointRecord] = field(default_factory=list)  # what this invocation recorded, in order


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


def run_sweep(
    config: SweepConfig,
    task: Task | None = None,
    *,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    published: list[Checkpoint] | None = None,
    before_checkpoint: Callable[[str], None] | None = None,
) -> SweepResult:
    """Measure every checkpoint of `config`'s schedule on its task and record each in MLflow as it finishes.

    Everything that can be checked before any checkpoint runs is checked first, in this order, so a bad
    setting leaves nothing behind: the Hub (or cache) lists the revisions; the task and the patching choices
    are tried against the model's config and tokenizer (fetched alone, no weights); the tracking store opens.
    Rerunning the same config resumes its sweep: checkpoints recorded ok are skipped, failed ones retried.
    `before_checkpoint` is called by the worker with each revision (the tests inject faults with it).
    """
    (result,) = run_study([config], task, tracking_uri=tracking_uri, ray_address=ray_address, progress=progress,
                          published={config.model: published} if published else None, before_checkpoint=before_checkpoint)  # fmt: skip
    return result


@dataclass
class ModelSweep:
    """One model's sweep inside a driver's run: its settings, task and revisions, its parent run, what is left to
    measure and what this invocation recorded."""

    config: SweepConfig
    task: Task
    published: list[Checkpoint]
    schedule: list[Checkpoint]  # the revisions asked for that the model publishes
    unpublished: list[Checkpoint]  # asked for, not published (the config's `unpublished = "list"`): never measured nor recorded
    plan: Plan
    n_prompts: int
    parent: str = ""
    done: set[str] = field(default_factory=set)
    queue: list[str] = field(default_factory=list)  # revisions to measure, in order
    result: SweepResult | None = None

    def describe(self, task: Task) -> str:
        return f"task {task.name}: {plan_checkpoint(self.config, task, *self.plan.shape).describe(self.n_prompts)}"


def run_study(
    configs: Sequence[SweepConfig],
    task: Task | None = None,
    *,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    published: dict[str, list[Checkpoint]] | None = None,
    before_checkpoint: Callable[[str], None] | None = None,
    study: str | None = None,
) -> list[SweepResult]:
    """`run_sweep` for several models at once (a study: seeds or sizes of one family), one driver over every (model,
    checkpoint) pair: the same workers measure them all, prefetching across models. Each model's sweep is its own
    parent run (tagged `study`), resumed on its own. Everything checkable is checked for every model before any
    checkpoint of any of them runs. Returns one SweepResult per model, in the configs' order."""
    clock = Stopwatch()
    task = task or load_task(configs[0].task)
    say = print if progress else (lambda *a, **k: None)
    several = len(configs) > 1
    sweeps = []
    for config in configs:
        with clock.part("published revisions"):
            listed = (published or {}).get(config.model) or published_revisions(config.model)  # fails fast without Hub access
        schedule, unpublished = check_published(config.model, resolve_schedule(config.model, config.checkpoints, listed), listed,
                                                config.unpublished)  # a typo'd revision: refused before anything runs  # fmt: skip
        first = schedule[0].revision if schedule else final_revision(listed)
        with clock.part("pre-flight (config, tokenizer, task)"):
            plan, n_prompts = preflight(config, task, fetch_metadata(config.model, first))  # a bad layer, head or answer: refused now
        sweeps.append(ModelSweep(config, task, listed, schedule, unpublished, plan, n_prompts))
        who = f"{config.model}: " if several else ""
        if task.to_discover:  # the conditions follow from the heads found: said once they are
            found_first = ", ".join(f"{name} ({size} heads)" for name, size in task.to_discover.items())
            say(f"{who}task {task.name}: {n_prompts} prompts measured, its group {found_first} found first; {len(schedule)} checkpoints scheduled", flush=True)
        else:
            say(f"{who}task {task.name}: {plan.describe(n_prompts)}; {len(schedule)} checkpoints scheduled", flush=True)
        for c in unpublished:
            say(f"  {c.revision}: asked for, not published by {config.model} ({nearest_published(c.revision, listed)}); "
                'left out, as the config says (unpublished = "list")', flush=True)  # fmt: skip
    candidates = sum(len(m.schedule) for m in sweeps)  # at most this many to measure
    needs_ray = bool(candidates) and not runs_here(configs[0], candidates, ray_address)

    def open_store() -> SweepRecorder:
        with clock.part("tracking store (open, parent run)"):
            tracker = SweepRecorder(tracking_uri)  # fails fast if the store is unusable
            try:
                for m in sweeps:
                    m.parent = tracker.start_sweep(m.config, task, m.published, study=study)
                    if m.unpublished:
                        tracker.save_unpublished(m.parent, {c.revision: nearest_published(c.revision, m.published) for c in m.unpublished})
                    m.done = tracker.recorded_ok(m.parent)
                    m.result = SweepResult(m.parent, tracker.uri, [], [c.revision for c in m.schedule if c.revision in m.done], [],
                                           startup=clock.parts)  # fmt: skip
            except BaseException:
                close_failed(tracker)
                raise
            return tracker

    def close_failed(tracker: SweepRecorder) -> None:
        for m in sweeps:
            if m.parent:
                tracker.finish_sweep(m.parent, "FAILED")

    tracker = _open_store_beside_ray(open_store, close_failed, ray_address, needs_ray, clock)
    by_model = {m.config.model: m for m in sweeps}

    def record(rec: CheckpointRecord) -> None:
        m = by_model[rec.model]
        start = time.perf_counter()
        try:
            written = tracker.record_checkpoint(m.parent, rec)
        except TrackingServerLost as lost:  # what was saved and what to do, in the one line the user sees
            saved = len(m.result.skipped) + len(m.result.recorded)
            raise TrackingServerLost(
                f"{lost}. Saved there: {saved} of {len(m.schedule)} checkpoints{f' of {rec.model}' if several else ''}; not saved: "
                f"{rec.revision} and {len(m.schedule) - saved - 1} more. Run the same command again once the server answers: the "
                f"saved ones are not measured again (MLflow parent run {m.parent})", lost.uri, lost.revision,
            ) from lost  # fmt: skip
        m.result.log_s += time.perf_counter() - start
        if written is not None:
            m.result.recorded.append(rec.revision)
            m.result.records.append(rec)
            if rec.status == "failed":
                m.result.failed.append(rec.revision)
                m.result.errors[rec.revision] = rec.error

    status = "FINISHED"
    bar = None
    try:
        for m in sweeps:
            _known_now(m, record, clock)
        items = deque(Item(m.config.model, r, f"{m.config.model} {r}" if several else r) for m in sweeps for r in m.queue)
        runs = lambda: {m.config.model: {"config": m.config.to_dict(), "task": m.task, "published": m.published} for m in sweeps}  # noqa: E731
        discovering = [m for m in sweeps if m.queue and task.to_discover]
        if items and not needs_ray:  # no Ray: the worker's code, called here
            measurer = CheckpointMeasurer(runs(), before_checkpoint, progress, in_process=True)
            for m in discovering:
                m.task = measurer.runs[m.config.model].task = _discovered(tracker, m, lambda final: measurer.discover(m.config.model, final), say)
            bar = checkpoints_bar(len(items), progress, several)
            _measure_here(measurer, items, record, bar)
        elif items:
            with clock.part("ray start"):
                connect_ray(ray_address)  # at once when it started beside the store
            n_workers, resources = worker_count(configs[0], len(items))
            env = worker_env()
            resource = "GPU" if "num_gpus" in resources else "CPU"
            ready_made = []  # the worker that ran the discovery passes: its model is loaded, and it knows the heads

            def make_worker(node: str | None = None):
                """A worker: SPREAD over the cluster's nodes (downloads and memory shared out), or on `node` (a replacement)."""
                if ready_made and node is None:
                    return ready_made.pop()
                placed = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False)
                options = CheckpointWorker.options(**resources, runtime_env=env, scheduling_strategy=placed)
                return options.remote(runs(), before_checkpoint, progress)  # each task: as found

            def discover_on_a_worker(model: str, final: str) -> dict:
                """The pass on a worker of the sweep's own kind, which then measures checkpoints with its heads."""
                if not ready_made:
                    ready_made.append(make_worker())
                return _get(ready_made[0].discover.remote(model, final))

            for m in discovering:  # workers made from here on are given each task with its heads
                m.task = _discovered(tracker, m, lambda final: discover_on_a_worker(m.config.model, final), say)
            bar = checkpoints_bar(len(items), progress, several)
            failure = lambda item: base_record(by_model[item.model].config, by_model[item.model].task, item.revision)  # noqa: E731
            _drain(failure, make_worker, n_workers, resource, items, record, bar, clock)
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"\nInterrupted. Finished checkpoints are saved; run the same command again to resume it (MLflow parent run "
              f"{', '.join(m.parent for m in sweeps)}).")  # fmt: skip
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if bar is not None:
            bar.close()
        for m in sweeps:
            tracker.finish_sweep(m.parent, status)
    for m in sweeps:
        for revision, error in m.result.errors.items():
            say(f"  {f'{m.config.model} ' if several else ''}{revision} failed: {error}", flush=True)
    return [m.result for m in sweeps]


def _known_now(m: ModelSweep, record: Callable, clock: Stopwatch) -> None:
    """A model's records known before any worker runs, and its queue: revisions serving another's weight files
    (duplicates, never downloaded). Unpublished revisions never get here (check_published)."""
    todo = [c.revision for c in m.schedule if c.revision not in m.done]
    with clock.part("weight metadata (duplicates)"):
        weights = weights_of(m.config.model, [c.revision for c in m.schedule]) if todo else {}
    measured_as = measured_revisions(weights, final_revision(m.published))
    for revision in todo:  # a revision serving another's weights is recorded as its duplicate, never downloaded
        if measured_as.get(revision, revision) != revision:
            record(duplicate_record(base_record(m.config, m.task, revision), weights[revision], measured_as[revision]))
    m.queue = [r for r in todo if measured_as.get(r, r) == r]


def _get(ref):
    """A worker's answer, or the sweep's own error (a setting wrong for every checkpoint) raised as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, PythiaSweepError):
            raise error.cause from None
        raise


def _discovered(tracker: SweepRecorder, m: ModelSweep, run_pass: Callable[[str], dict], say: Callable) -> Task:
    """A model's task with its `{ discover = N }` groups' heads: the ones its sweep found before (saved with its parent
    run, so a resumed sweep measures the same heads), or found now by `run_pass` at the model's final checkpoint."""
    found = tracker.discovery(m.parent)
    if found is None:
        final = final_revision(m.published)
        groups = ", ".join(f"{name} ({size} heads)" for name, size in m.task.to_discover.items())
        say(f"discovering {groups} at {m.config.model}'s final checkpoint {final}: every head by attribution, the top ones patched exactly ...", flush=True)
        found = run_pass(final)
        tracker.save_discovery(m.parent, found)
    say(discovery_line(found), flush=True)
    task = m.task.found_by(found)
    say(m.describe(task), flush=True)
    return task


def discovery_line(found: dict) -> str:
    """What a discovery pass chose, in one line (the sweep prints it; the report says it in the verdict)."""
    parts = []
    for name, group in found["groups"].items():
        heads = ", ".join(f"{layer}.{head} ({group['exact'][head_name(layer, head)]:+.2f} nats)" for layer, head in group["heads"])
        rho = group["rank_correlation"]
        parts.append(f"{name} = {heads}: the {group['size']} largest of {group['checked']} heads patched exactly, the top by attribution "
                     f"(rank correlation {'undefined' if rho is None else f'{rho:.2f}'})")  # fmt: skip
    return (f"found at {found['revision']} on {len(found['prompts'])} prompts (the others are measured): " + "; ".join(parts))


def duplicate_record(record: CheckpointRecord, weights, original: str) -> CheckpointRecord:
    """The record of a revision whose weight files are byte-identical to the measured one's (by the Hub's
    LFS sha256; which one is measured is `identical_weights`'s rule): not measured, reported as a duplicate."""
    return replace(
        record, status="duplicate", duplicate_of=(original,), commit=weights.commit, weight_sha256=weights.weight_sha256,
        weights_digest=weights.weights_digest,
        error=f"identical weight files to {original} (LFS sha256 from the Hub's metadata); not downloaded",
    )  # fmt: skip


def _open_store_beside_ray(open_store: Callable[[], SweepRecorder], close_failed: Callable[[SweepRecorder], None],
                           ray_address: str | None, needs_ray: bool, clock: Stopwatch) -> SweepRecorder:  # fmt: skip
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


class Stopwatch:
    """Seconds per named part of a sweep's start-up, in the order they ran: what `make bench` prints."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start


def _measure_here(measurer: CheckpointMeasurer, queue: deque, record, bar) -> None:
    """The sweep without Ray (`workers = 0`): one checkpoint after another in this process, the next one's weights
    prefetched while the current one computes. A setting wrong for every checkpoint stops it, as with Ray."""
    while queue:
        item = queue.popleft()
        rec = measurer.run(item, queue[0] if queue else None)
        record(rec)
        bar.done(rec)


def _drain(failure_record, make_worker, n_workers: int, resource: str, queue: deque, record, bar, clock: Stopwatch | None = None) -> None:
    """Keep every worker busy with one checkpoint (plus one reserved to prefetch) until the queue is empty. A lost
    worker (its process or its node died) is said on the terminal; its checkpoints go back to the queue."""
    created = time.time()
    workers = {slot: make_worker() for slot in range(n_workers)}
    started = {slot: w.ready.remote() for slot, w in workers.items()}  # each answers once up, imports done
    first_started = list(started.values())
    reserved: dict[int, Item | None] = {}
    in_flight: dict = {}
    attempts: dict[Item, int] = {}
    lost_on: set[str] = set()  # nodes that lost a worker in this sweep: replacements go elsewhere where they can
    failed = 0

    def assign(slot: int) -> None:
        current = reserved.pop(slot, None) or (queue.popleft() if queue else None)
        if current is None:
            return
        reserved[slot] = queue.popleft() if queue else None
        in_flight[workers[slot].run.remote(current, reserved[slot])] = (slot, current)

    for slot in workers:
        assign(slot)
    while in_flight:
        waiting = len(queue) + sum(r is not None for r in reserved.values())
        bar.set_postfix(workers=len(workers), running=len(in_flight), failed=failed, queued=waiting)
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        slot, item = in_flight.pop(ready[0])
        try:
            rec = ray.get(ready[0])
        except RayActorError as error:  # the worker process or its node died mid-checkpoint
            attempts[item] = attempts.get(item, 0) + 1
            pending = reserved.pop(slot, None)
            if pending:
                queue.appendleft(pending)
            if attempts[item] < MAX_ATTEMPTS:
                queue.appendleft(item)
            else:
                lost = replace(failure_record(item), error=f"worker died {MAX_ATTEMPTS} times on this checkpoint: {error}")
                record(lost)
                failed += 1
                bar.done(lost)
            where = where_it_ran(started.pop(slot))
            lost_on |= {where["node"]} if where else set()
            del workers[slot]
            node = node_with_room(resource, avoid=lost_on)
            if node or not workers:  # the last worker is always replaced: Ray places it when resources free up
                workers[slot] = make_worker(node)
                started[slot] = workers[slot].ready.remote()
            bar.write(lost_worker_line(error, where, item.label, pending.label if pending else None, attempts[item], len(workers), slot in workers, ip_of(node)))
            idle = [s for s in workers if s not in {v[0] for v in in_flight.values()}]
            for s in idle:
                assign(s)
            continue
        except RayTaskError as error:
            if isinstance(error.cause, PythiaSweepError):
                raise error.cause from None  # a setting wrong for every checkpoint (layer, heads): stop
            raise
        record(rec)
        failed += not rec.ok
        bar.done(rec)
        assign(slot)
    if clock is not None:
        try:
            clock.parts["worker processes (start, imports)"] = max(a["at"] for a in ray.get(first_started, timeout=10)) - created
        except Exception:  # noqa: BLE001 - a worker that died has no start time to give
            pass
