"""How the sweep is driven: every model's checkpoints checked, recorded as they finish, resumed where they stopped.

The checkpoint is the unit of scheduling and of failure. `run_study` checks every model of a study before any
checkpoint runs (model_sweep.py), opens the tracking store beside Ray's start (cluster.py), records what is known
without measuring, finds the heads a task asks to discover, then measures the rest here or on Ray workers
(drain.py, worker.py), recording each checkpoint as it arrives so a driver that dies later loses nothing finished.
Recording is idempotent: a retried checkpoint still has exactly one result, and rerunning the same config resumes
its sweep. Ctrl-C closes the parent runs KILLED, any other error FAILED.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from pythia_sweep.config import SweepConfig
from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.measure.checkpoint import base_record
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.run.cluster import connect_ray, open_beside_ray, runs_here, worker_count
from pythia_sweep.run.drain import MeasureHere, MeasureOnRay
from pythia_sweep.run.model_sweep import ModelSweep, SweepResult, checked_sweep, discovered, known_now, record_into
from pythia_sweep.run.progress import checkpoints_bar
from pythia_sweep.run.stopwatch import Stopwatch
from pythia_sweep.run.worker import Item
from pythia_sweep.task.definition import Task
from pythia_sweep.task.schema import load_task
from pythia_sweep.tracking.writer import SweepRecorder


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
    say = print if progress else _silent
    several = len(configs) > 1
    # 1) every model checked: its revisions, its schedule, its task against its config and tokenizer
    sweeps = [checked_sweep(config, task, (published or {}).get(config.model), clock, say, several) for config in configs]
    candidates = sum(len(m.schedule) for m in sweeps)  # at most this many to measure
    needs_ray = bool(candidates) and not runs_here(configs[0], candidates, ray_address)
    # 2) the store opened (parent runs started or resumed), beside Ray's start when Ray is needed
    tracker = open_beside_ray(partial(_open_store, tracking_uri, sweeps, study, clock), partial(_close, sweeps, status="FAILED"),
                              ray_address, needs_ray, clock)  # fmt: skip
    record = partial(record_into, tracker, {m.config.model: m for m in sweeps}, several)
    status, bar = "FINISHED", None
    try:
        for m in sweeps:  # 3) duplicates recorded, never downloaded; the rest queued
            known_now(m, record, clock)
        items = deque(Item(m.config.model, r, f"{m.config.model} {r}" if several else r) for m in sweeps for r in m.queue)
        if items:
            place = _place(sweeps, needs_ray, len(items), ray_address, before_checkpoint, progress, clock)  # 4) here or on Ray
            for m in sweeps:  # 5) the heads to discover, found (or read back) before any checkpoint is measured
                if m.queue and task.to_discover:
                    m.task = discovered(tracker, m, partial(place.discover, m.config.model), say)
                    place.use(m.config.model, m.task)
            bar = checkpoints_bar(len(items), progress, several)
            place.measure(items, record, bar)  # 6) every checkpoint left, recorded as it finishes
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
        _close(sweeps, tracker, status=status)
    for m in sweeps:
        for revision, error in m.result.errors.items():
            say(f"  {f'{m.config.model} ' if several else ''}{revision} failed: {error}", flush=True)
    return [m.result for m in sweeps]


def _silent(*args, **kwargs) -> None:
    """`say` when progress is off."""


def _open_store(tracking_uri: str | None, sweeps: list[ModelSweep], study: str | None, clock: Stopwatch) -> SweepRecorder:
    """The tracking store, with every model's parent run started or resumed; a store that cannot be used fails here,
    before any checkpoint runs, and parent runs it started are closed FAILED."""
    with clock.part("tracking store (open, parent run)"):
        tracker = SweepRecorder(tracking_uri)  # fails fast if the store is unusable
        try:
            for m in sweeps:
                m.start(tracker, study, clock.parts)
        except BaseException:
            _close(sweeps, tracker, status="FAILED")
            raise
        return tracker


def _close(sweeps: list[ModelSweep], tracker: SweepRecorder, *, status: str) -> None:
    for m in sweeps:
        if m.parent:
            tracker.finish_sweep(m.parent, status)


def _place(sweeps: list[ModelSweep], needs_ray: bool, n_items: int, ray_address: str | None,
           before_checkpoint: Callable[[str], None] | None, progress: bool, clock: Stopwatch) -> MeasureHere | MeasureOnRay:  # fmt: skip
    """Where the checkpoints are measured: in this process (no Ray), or on Ray workers, as many as the cluster's GPUs
    (or two CPUs) allow. Workers made after a discovery pass are given each task with its heads (`_worker_runs`)."""
    if not needs_ray:
        return MeasureHere(_worker_runs(sweeps), before_checkpoint, progress)
    with clock.part("ray start"):
        connect_ray(ray_address)  # at once when it started beside the store
    n_workers, resources = worker_count(sweeps[0].config, n_items)
    failure = partial(_failure_record, {m.config.model: m for m in sweeps})
    return MeasureOnRay(partial(_worker_runs, sweeps), n_workers, resources, failure, before_checkpoint, progress, clock)


def _worker_runs(sweeps: list[ModelSweep]) -> dict[str, dict]:
    """What a worker needs of each model, as it is now: its config (as a dict), task and published revisions."""
    return {m.config.model: {"config": m.config.to_dict(), "task": m.task, "published": m.published} for m in sweeps}


def _failure_record(sweeps: dict[str, ModelSweep], item: Item) -> CheckpointRecord:
    """The record of a checkpoint no worker could finish (its workers died): the base of its model's records."""
    m = sweeps[item.model]
    return base_record(m.config, m.task, item.revision)
