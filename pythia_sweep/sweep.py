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
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pythia_sweep.checkpoints import (
    Checkpoint,
    fetch,
    fetch_metadata,
    final_revision,
    nearest_published,
    not_published_message,
    published_revisions,
    resolve_schedule,
    weights_of,
)
from pythia_sweep.config import SweepConfig
from pythia_sweep.checkpoint_run import ModelCache, base_record, discover_groups, plan_checkpoint, preflight, run_checkpoint
from pythia_sweep.duplicates import measured_revisions
from pythia_sweep.conditions import head_name
from pythia_sweep.errors import PythiaSweepError
from pythia_sweep.placement import MAX_ATTEMPTS, ip_of, lost_worker_line, node_with_room, where_it_ran
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.tasks import Task
from pythia_sweep.task_schema import load_task
from pythia_sweep.progress import DownloadBar, checkpoints_bar, quiet_transformers_bars
from pythia_sweep.tracking import SweepRecorder
from pythia_sweep.tracking_server import TrackingServerLost

FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_DISABLE_PROGRESS_BARS",
                 "TOKENIZERS_PARALLELISM")  # fmt: skip


class CheckpointMeasurer:
    """Measures checkpoints one after another, prefetching the next one's weights in a background thread: a Ray
    worker's body (CheckpointWorker), or called directly in the driver's process (`workers = 0`)."""

    def __init__(self, config: dict, task: Task, published: list[Checkpoint], before_checkpoint: Callable | None = None,
                 progress: bool = True, in_process: bool = False):  # fmt: skip
        from pythia_sweep.config import config_from_dict

        self.config = config_from_dict(config)
        self.task = task
        self.published = published
        self.before_checkpoint = before_checkpoint  # a test's fault injection; None in a real sweep
        self.progress = progress  # each weight file's download drawn on the driver (DownloadBar)
        self.in_process = in_process  # in the driver: huggingface_hub's own download bars, no Ray
        self.available = {c.revision for c in published}
        self.downloads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.prefetched: dict[str, Future] = {}
        self.models = ModelCache()  # the model skeleton, reused across this worker's checkpoints
        quiet_transformers_bars()
        self.ready_at = time.time()

    def _prefetch(self, revision: str | None) -> None:
        if revision and revision in self.available and revision not in self.prefetched:
            bar = DownloadBar.named if self.progress and not self.in_process else None
            self.prefetched[revision] = self.downloads.submit(fetch, self.config.model, revision, progress=bar)

    def run(self, revision: str, next_revision: str | None) -> CheckpointRecord:
        self._prefetch(revision)
        self._prefetch(next_revision)  # downloads while this checkpoint computes
        waited = time.perf_counter()
        future = self.prefetched.pop(revision, None)
        try:
            fetched = future.result() if future else None
        except Exception:  # noqa: BLE001 - fetch again inside run_checkpoint, which records the error
            fetched = None
        waited = time.perf_counter() - waited
        if self.before_checkpoint:
            self.before_checkpoint(revision)
        record = run_checkpoint(self.config, revision, task=self.task, published=self.published, fetched=fetched, models=self.models)
        worker = {
            "host": socket.gethostname(), "pid": os.getpid(), "in_process": self.in_process,
            "node": None if self.in_process else ray.get_runtime_context().get_node_id(),
            "ip": None if self.in_process else ray.util.get_node_ip_address(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(),  # Ray gives a worker of one CPU one thread
        }  # fmt: skip
        return replace(record, timings=record.timings | {"wait_for_weights_s": waited}, worker=worker)

    def discover(self, revision: str) -> dict:
        """The discovery pass at `revision` (checkpoint_run.discover_groups); this worker then measures with its heads."""
        self._prefetch(revision)
        future = self.prefetched.pop(revision, None)
        try:
            fetched = future.result() if future else None
        except Exception:  # noqa: BLE001 - fetched again inside, which says why it cannot be
            fetched = None
        found = discover_groups(self.config, self.task, revision, fetched=fetched, models=self.models)
        self.task = self.task.found_by(found)
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
    clock = Stopwatch()
    task = task or load_task(config.task)
    with clock.part("published revisions"):
        if published is None:
            published = published_revisions(config.model)  # fails fast, with a clear message, without Hub access
    schedule = resolve_schedule(config.model, config.checkpoints, published)
    available = {c.revision for c in published}
    first = next((c.revision for c in schedule if c.revision in available), published[-1].revision)
    with clock.part("pre-flight (config, tokenizer, task)"):
        plan, n_prompts = preflight(config, task, fetch_metadata(config.model, first))  # a bad layer, head or answer: refused now
    unpublished = [c.revision for c in schedule if c.revision not in available]
    say = print if progress else (lambda *a, **k: None)
    if task.to_discover:  # the conditions follow from the heads found: said once they are
        found_first = ", ".join(f"{name} ({size} heads)" for name, size in task.to_discover.items())
        say(f"task {task.name}: {n_prompts} prompts measured, its group {found_first} found first; {len(schedule)} checkpoints scheduled", flush=True)
    else:
        say(f"task {task.name}: {plan.describe(n_prompts)}; {len(schedule)} checkpoints scheduled", flush=True)
    describe = lambda found: f"task {found.name}: {plan_checkpoint(config, found, *plan.shape).describe(n_prompts)}"  # noqa: E731
    for revision in unpublished:
        say(f"  {revision} is not published by {config.model} ({nearest_published(revision, published)}): recorded as failed", flush=True)
    tracker, parent, done = _open_store_beside_ray(config, task, published, tracking_uri, ray_address, schedule, available, clock)
    skipped = [c.revision for c in schedule if c.revision in done]
    result = SweepResult(parent, tracker.uri, [], skipped, [], startup=clock.parts)

    def record(rec: CheckpointRecord) -> None:
        start = time.perf_counter()
        try:
            written = tracker.record_checkpoint(parent, rec)
        except TrackingServerLost as lost:  # what was saved and what to do, in the one line the user sees
            saved = len(skipped) + len(result.recorded)
            raise TrackingServerLost(
                f"{lost}. Saved there: {saved} of {len(schedule)} checkpoints; not saved: {rec.revision} and "
                f"{len(schedule) - saved - 1} more. Run the same command again once the server answers: the saved ones "
                f"are not measured again (MLflow parent run {parent})", lost.uri, lost.revision,
            ) from lost  # fmt: skip
        result.log_s += time.perf_counter() - start
        if written is not None:
            result.recorded.append(rec.revision)
            result.records.append(rec)
            if rec.status == "failed":
                result.failed.append(rec.revision)
                result.errors[rec.revision] = rec.error

    for c in schedule:  # unpublished revisions need no worker: their failure record is known now
        if c.revision not in done and c.revision not in available:
            error = f"RevisionNotPublished: {not_published_message(config.model, c.revision, published)}"
            record(replace(base_record(config, task, c.revision), error=error))
    todo = [c.revision for c in schedule if c.revision not in done and c.revision in available]
    with clock.part("weight metadata (duplicates)"):
        weights = weights_of(config.model, [c.revision for c in schedule if c.revision in available]) if todo else {}
    measured_as = measured_revisions(weights, final_revision(published))
    for revision in todo:  # a revision serving another's weights is recorded as its duplicate, never downloaded
        if measured_as.get(revision, revision) != revision:
            record(duplicate_record(base_record(config, task, revision), weights[revision], measured_as[revision]))
    queue = deque(r for r in todo if measured_as.get(r, r) == r)
    status = "FINISHED"
    bar = None
    try:
        if queue and runs_here(config, len(queue), ray_address):  # no Ray: the worker's code, called here
            measurer = CheckpointMeasurer(config.to_dict(), task, published, before_checkpoint, progress, in_process=True)
            if task.to_discover:
                task = measurer.task = _discovered(tracker, parent, task, config, published, measurer.discover, say, describe)
            bar = checkpoints_bar(len(queue), progress)
            _measure_here(measurer, queue, record, bar)
        elif queue:
            with clock.part("ray start"):
                connect_ray(ray_address)  # at once when it started beside the store
            n_workers, resources = worker_count(config, len(queue))
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            resource = "GPU" if "num_gpus" in resources else "CPU"
            ready_made = []  # the worker that ran the discovery pass: its model is loaded, and it knows the heads

            def make_worker(node: str | None = None):
                """A worker: SPREAD over the cluster's nodes (downloads and memory shared out), or on `node` (a replacement)."""
                if ready_made and node is None:
                    return ready_made.pop()
                placed = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False)
                options = CheckpointWorker.options(**resources, runtime_env={"env_vars": env}, scheduling_strategy=placed)
                return options.remote(config.to_dict(), task, published, before_checkpoint, progress)  # task: as found

            def discover_on_a_worker(final: str) -> dict:
                """The pass on a worker of the sweep's own kind, which then measures checkpoints with its heads."""
                ready_made.append(make_worker())
                return _get(ready_made[0].discover.remote(final))

            if task.to_discover:  # workers made from here on are given the task with its heads
                task = _discovered(tracker, parent, task, config, published, discover_on_a_worker, say, describe)
            bar = checkpoints_bar(len(queue), progress)
            _drain(lambda revision: base_record(config, task, revision), make_worker, n_workers, resource, queue, record, bar, clock)
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"\nInterrupted. Finished checkpoints are saved; run the same command again to resume it (MLflow parent run {parent}).")
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if bar is not None:
            bar.close()
        tracker.finish_sweep(parent, status)
    for revision, error in result.errors.items():
        say(f"  {revision} failed: {error}", flush=True)
    return result


def _get(ref):
    """A worker's answer, or the sweep's own error (a setting wrong for every checkpoint) raised as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, PythiaSweepError):
            raise error.cause from None
        raise


def _discovered(tracker: SweepRecorder, parent: str, task: Task, config: SweepConfig, published: list[Checkpoint],
                run_pass: Callable[[str], dict], say: Callable, describe: Callable[[Task], str]) -> Task:  # fmt: skip
    """The task with its `{ discover = N }` groups' heads: the ones this sweep found before (saved with its parent
    run, so a resumed sweep measures the same heads), or found now by `run_pass` at the model's final checkpoint."""
    found = tracker.discovery(parent)
    if found is None:
        final = final_revision(published)
        groups = ", ".join(f"{name} ({size} heads)" for name, size in task.to_discover.items())
        say(f"discovering {groups} at {config.model}'s final checkpoint {final}: every head by attribution, the top ones patched exactly ...", flush=True)
        found = run_pass(final)
        tracker.save_discovery(parent, found)
    say(discovery_line(found), flush=True)
    task = task.found_by(found)
    say(describe(task), flush=True)
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


def _open_store_beside_ray(config, task, published, tracking_uri, ray_address, schedule, available, clock) -> tuple[SweepRecorder, str, set[str]]:
    """The tracking store opened (the parent run started or resumed, what is recorded read) in a thread while this
    one starts Ray, when Ray will be needed: the two start-up costs overlap. The store is still checked before any
    checkpoint runs: a store that cannot be used stops the sweep with Ray shut down again; Ray that cannot start
    is raised once the parent run exists, so it is closed FAILED rather than left RUNNING."""

    def open_store() -> tuple[SweepRecorder, str, set[str]]:
        with clock.part("tracking store (open, parent run)"):
            tracker = SweepRecorder(tracking_uri)  # fails fast if the store is unusable
            parent = tracker.start_sweep(config, task, published)
            return tracker, parent, tracker.recorded_ok(parent)

    candidates = sum(c.revision in available for c in schedule)  # at most this many to measure
    if not candidates or ray.is_initialized() or runs_here(config, candidates, ray_address):
        return open_store()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as pool:
        opening = pool.submit(open_store)
        try:
            with clock.part("ray start"):
                connect_ray(ray_address)
        except BaseException:
            tracker, parent, _ = opening.result()
            tracker.finish_sweep(parent, "FAILED")
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
        revision = queue.popleft()
        rec = measurer.run(revision, queue[0] if queue else None)
        record(rec)
        bar.done(rec)


def _drain(failure_record, make_worker, n_workers: int, resource: str, queue: deque, record, bar, clock: Stopwatch | None = None) -> None:
    """Keep every worker busy with one checkpoint (plus one reserved to prefetch) until the queue is empty. A lost
    worker (its process or its node died) is said on the terminal; its checkpoints go back to the queue."""
    created = time.time()
    workers = {slot: make_worker() for slot in range(n_workers)}
    started = {slot: w.ready.remote() for slot, w in workers.items()}  # each answers once up, imports done
    first_started = list(started.values())
    reserved: dict[int, str | None] = {}
    in_flight: dict = {}
    attempts: dict[str, int] = {}
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
        slot, revision = in_flight.pop(ready[0])
        try:
            rec = ray.get(ready[0])
        except RayActorError as error:  # the worker process or its node died mid-checkpoint
            attempts[revision] = attempts.get(revision, 0) + 1
            pending = reserved.pop(slot, None)
            if pending:
                queue.appendleft(pending)
            if attempts[revision] < MAX_ATTEMPTS:
                queue.appendleft(revision)
            else:
                lost = replace(failure_record(revision), error=f"worker died {MAX_ATTEMPTS} times on this checkpoint: {error}")
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
            bar.write(lost_worker_line(error, where, revision, pending, attempts[revision], len(workers), slot in workers, ip_of(node)))
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
