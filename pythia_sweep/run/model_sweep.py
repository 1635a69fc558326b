"""One model's sweep inside a driver's run: checked before anything runs, opened in the store, its records known
without measuring (duplicates) written, its heads to discover found, and each record counted as it is written.

A study's driver holds one `ModelSweep` per model; `run_sweep` is a study of one. Everything that can be checked is
checked before any checkpoint runs (`checked_sweep`): the revisions the Hub publishes, the schedule against them, the
task against the model's config and tokenizer. A revision serving another's weight files is recorded as its
duplicate, never downloaded (`known_now`); `{ discover = N }` groups are found once, at the final checkpoint, and
saved with the parent run so that a resumed sweep measures the same heads (`discovered`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pythia_sweep.config import SweepConfig
from pythia_sweep.hub.duplicates import measured_revisions
from pythia_sweep.hub.fetch import fetch_metadata
from pythia_sweep.hub.revisions import Checkpoint, TrainingEnd, check_published, nearest_published, published_revisions, resolve_schedule
from pythia_sweep.hub.weights import PublishedWeights, weights_of
from pythia_sweep.measure.checkpoint import base_record, preflight
from pythia_sweep.measure.plan import Plan, plan_checkpoint
from pythia_sweep.stats import head_label, head_name
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.run.stopwatch import Stopwatch
from pythia_sweep.task.definition import Task
from pythia_sweep.tracking.server import TrackingServerLost
from pythia_sweep.tracking.writer import SweepRecorder


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

    def start(self, tracker: SweepRecorder, study: str | None, startup: dict[str, float]) -> None:
        """Its parent run started or resumed in the store (with the revisions asked for and not published), and what
        that run has recorded ok already: skipped by this invocation."""
        self.parent = tracker.start_sweep(self.config, self.task, self.published, study=study)
        if self.unpublished:
            tracker.save_unpublished(self.parent, {c.revision: nearest_published(c.revision, self.published) for c in self.unpublished})
        self.done = tracker.recorded_ok(self.parent)
        self.result = SweepResult(self.parent, tracker.uri, [], [c.revision for c in self.schedule if c.revision in self.done], [],
                                  startup=startup)  # fmt: skip


def checked_sweep(config: SweepConfig, task: Task, listed: list[Checkpoint] | None, clock: Stopwatch, say: Callable,
                  several: bool) -> ModelSweep:  # fmt: skip
    """A model's sweep once everything checkable is checked, in this order, so a bad setting leaves nothing behind:
    the Hub (or cache) lists the revisions (`listed`, when the caller has them); the schedule is checked against
    them; the task and the patching choices are tried against the model's config and tokenizer (no weights)."""
    with clock.part("published revisions"):
        listed = listed or published_revisions(config.model)  # fails fast without Hub access
    schedule, unpublished = check_published(config.model, resolve_schedule(config.model, config.checkpoints, listed), listed,
                                            config.unpublished)  # a typo'd revision: refused before anything runs  # fmt: skip
    first = schedule[0].revision if schedule else TrainingEnd.of(listed).revision
    with clock.part("pre-flight (config, tokenizer, task)"):
        plan, n_prompts = preflight(config, task, fetch_metadata(config.model, first))  # a bad layer, head or answer: refused now
    who = f"{config.model}: " if several else ""
    if task.to_discover:  # the conditions follow from the heads found: said once they are
        say(f"{who}task {task.name}: {n_prompts} prompts measured, its group {_to_discover(task)} found first; {len(schedule)} checkpoints scheduled", flush=True)
    else:
        say(f"{who}task {task.name}: {plan.describe(n_prompts)}; {len(schedule)} checkpoints scheduled", flush=True)
    for c in unpublished:
        say(f"  {c.revision}: asked for, not published by {config.model} ({nearest_published(c.revision, listed)}); "
            'left out, as the config says (unpublished = "list")', flush=True)  # fmt: skip
    return ModelSweep(config, task, listed, schedule, unpublished, plan, n_prompts)


def _to_discover(task: Task) -> str:
    return ", ".join(f"{name} ({size} heads)" for name, size in task.to_discover.items())


def known_now(m: ModelSweep, record: Callable[[CheckpointRecord], None], clock: Stopwatch) -> None:
    """A model's records known before any worker runs, and its queue: revisions serving another's weight files
    (duplicates, never downloaded). Unpublished revisions never get here (check_published)."""
    todo = [c.revision for c in m.schedule if c.revision not in m.done]
    with clock.part("weight metadata (duplicates)"):
        weights = weights_of(m.config.model, [c.revision for c in m.schedule]) if todo else {}
    measured_as = measured_revisions(weights, TrainingEnd.of(m.published).revision)
    for revision in todo:  # a revision serving another's weights is recorded as its duplicate, never downloaded
        if measured_as.get(revision, revision) != revision:
            record(duplicate_record(base_record(m.config, m.task, revision), weights[revision], measured_as[revision]))
    m.queue = [r for r in todo if measured_as.get(r, r) == r]


def duplicate_record(record: CheckpointRecord, weights: PublishedWeights, original: str) -> CheckpointRecord:
    """The record of a revision whose weight files are byte-identical to the measured one's (by the Hub's
    LFS sha256; which one is measured is `identical_weights`'s rule): not measured, reported as a duplicate."""
    return replace(
        record, status="duplicate", duplicate_of=(original,), commit=weights.commit, weight_sha256=weights.weight_sha256,
        weights_digest=weights.weights_digest,
        error=f"identical weight files to {original} (LFS sha256 from the Hub's metadata); not downloaded",
    )  # fmt: skip


def discovered(tracker: SweepRecorder, m: ModelSweep, run_pass: Callable[[str], dict], say: Callable) -> Task:
    """A model's task with its `{ discover = N }` groups' heads: the ones its sweep found before (saved with its parent
    run, so a resumed sweep measures the same heads), or found now by `run_pass` at the model's final checkpoint."""
    found = tracker.discovery(m.parent)
    if found is None:
        final = TrainingEnd.of(m.published).revision
        say(f"discovering {_to_discover(m.task)} at {m.config.model}'s final checkpoint {final}: every head by attribution, the top ones patched exactly ...", flush=True)
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
        heads = ", ".join(f"{head_label(layer, head)} ({group['exact'][head_name(layer, head)]:+.2f} nats)" for layer, head in group["heads"])
        rho = group["rank_correlation"]
        parts.append(f"{name} = {heads}: the {group['size']} largest of {group['checked']} heads patched exactly, the top by attribution "
                     f"(rank correlation {'undefined' if rho is None else f'{rho:.2f}'})")  # fmt: skip
    return (f"found at {found['revision']} on {len(found['prompts'])} prompts (the others are measured): " + "; ".join(parts))


def record_into(tracker: SweepRecorder, sweeps: dict[str, ModelSweep], several: bool, rec: CheckpointRecord) -> None:
    """One record written to the store as it arrives, and counted in its model's SweepResult. A tracking server lost
    mid-sweep is said in the one line the user sees: what was saved, and what to do."""
    m = sweeps[rec.model]
    start = time.perf_counter()
    try:
        written = tracker.record_checkpoint(m.parent, rec)
    except TrackingServerLost as lost:
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
