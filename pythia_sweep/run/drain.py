"""Measuring the queue of checkpoints: here, one after another, or on Ray workers, drained in completion order.

Without Ray (`MeasureHere`) the worker's code runs in the driver's process. With Ray (`MeasureOnRay`) every worker
is kept busy with one checkpoint, plus the next one reserved so that its weights download meanwhile; results are
drained with `ray.wait` as they finish and recorded at once, so a driver that dies later loses nothing finished.
Restarts are the driver's, not Ray's: a worker lost with its node is replaced only where resources remain, so its
checkpoints move to the surviving workers instead of waiting for a node that is gone (`placement`). Both places
answer the same three calls: `discover` (a pass at the final checkpoint), `use` (a task with its heads found),
`measure` (the queue).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pythia_sweep.errors import PythiaSweepError
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.run.placement import MAX_ATTEMPTS, ip_of, lost_worker_line, node_with_room, where_it_ran
from pythia_sweep.run.stopwatch import Stopwatch
from pythia_sweep.run.worker import CheckpointMeasurer, CheckpointWorker, Item, worker_env
from pythia_sweep.task.definition import Task


class MeasureHere:
    """The sweep without Ray (`workers = 0`, or one checkpoint and no cluster): the worker's code, called in this process."""

    def __init__(self, runs: dict, before_checkpoint: Callable[[str], None] | None, progress: bool):
        self.measurer = CheckpointMeasurer(runs, before_checkpoint, progress, in_process=True)

    def discover(self, model: str, final: str) -> dict:
        return self.measurer.discover(model, final)

    def use(self, model: str, task: Task) -> None:
        """Measure `model`'s checkpoints with `task` (its heads found, now or by an earlier run of the sweep)."""
        self.measurer.use(model, task)

    def measure(self, queue: deque, record: Callable[[CheckpointRecord], None], bar) -> None:
        """One checkpoint after another, the next one's weights prefetched while the current one computes. A setting
        wrong for every checkpoint stops it, as with Ray."""
        while queue:
            item = queue.popleft()
            rec = self.measurer.run(item, queue[0] if queue else None)
            record(rec)
            bar.done(rec)


class MeasureOnRay:
    """The sweep on Ray workers (CheckpointWorker), `n_workers` of them holding `resources` each; the one that ran
    the discovery passes (its model loaded, the heads known) is the first to measure."""

    def __init__(self, runs: Callable[[], dict], n_workers: int, resources: dict, failure_record: Callable[[Item], CheckpointRecord],
                 before_checkpoint: Callable[[str], None] | None, progress: bool, clock: Stopwatch):  # fmt: skip
        self.runs = runs  # each model's config, task and published revisions, as they are when a worker is made
        self.n_workers, self.resources, self.env = n_workers, resources, worker_env()
        self.failure_record, self.before_checkpoint, self.progress, self.clock = failure_record, before_checkpoint, progress, clock
        self.ready_made: list = []  # the worker that ran the discovery passes

    def make_worker(self, node: str | None = None):
        """A worker: SPREAD over the cluster's nodes (downloads and memory shared out), or on `node` (a replacement)."""
        if self.ready_made and node is None:
            return self.ready_made.pop()
        placed = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False)
        options = CheckpointWorker.options(**self.resources, runtime_env=self.env, scheduling_strategy=placed)
        return options.remote(self.runs(), self.before_checkpoint, self.progress)  # each task: as found

    def discover(self, model: str, final: str) -> dict:
        """The pass on a worker of the sweep's own kind, which then measures checkpoints with its heads."""
        if not self.ready_made:
            self.ready_made.append(self.make_worker())
        return answer(self.ready_made[0].discover.remote(model, final))

    def use(self, model: str, task: Task) -> None:
        """The task handed to the worker made for the discovery passes, if there is one: it was made before this model's
        heads were known (found on it, or read back from an earlier run). Workers made from here on are given each task
        as it is then (`runs`)."""
        if self.ready_made:
            answer(self.ready_made[0].use.remote(model, task))

    def measure(self, queue: deque, record: Callable[[CheckpointRecord], None], bar) -> None:
        resource = "GPU" if "num_gpus" in self.resources else "CPU"
        drain(self.failure_record, self.make_worker, self.n_workers, resource, queue, record, bar, self.clock)


def answer(ref):
    """A worker's answer, or the sweep's own error (a setting wrong for every checkpoint) raised as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, PythiaSweepError):
            raise error.cause from None
        raise


def drain(failure_record, make_worker, n_workers: int, resource: str, queue: deque, record, bar, clock: Stopwatch | None = None) -> None:
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
            rec = answer(ready[0])  # a setting wrong for every checkpoint (layer, heads) stops the sweep
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
        record(rec)
        failed += not rec.ok
        bar.done(rec)
        assign(slot)
    if clock is not None:
        try:
            clock.parts["worker processes (start, imports)"] = max(a["at"] for a in ray.get(first_started, timeout=10)) - created
        except Exception:  # noqa: BLE001 - a worker that died has no start time to give
            pass
