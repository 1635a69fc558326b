"""The one adapter for stores written before the store version (tracking.store.STORE_VERSION): what it reads is
upgraded here, so no other module carries a compatibility branch.

A sweep whose parent run has no `pythia_sweep.store_version` tag was recorded by an older pythia_sweep. Three things
differ, each upgraded as it is read:

  experiment name   "<model>/<task>" (before the task came first): renamed to today's name and tagged when next used
  duplicates        the measurement of identical weights sat on the earliest twin (before the duplicate rule gave it
                    to the final revision): the numbers move to their owner, the measured twin becomes its duplicate
  response rows     no "generation" field (before rows kept the generation with its special tokens): the scored
                    response stands in for it
"""

from __future__ import annotations

from dataclasses import replace

from pythia_sweep.hub.duplicates import IdenticalWeights, identical_weights
from pythia_sweep.hub.revisions import Checkpoint, TrainingEnd
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.stats import NullStats
from pythia_sweep.tracking.status import final_status


def legacy_experiment_name(model: str, task_name: str) -> str:
    """The name stores made before the task came first."""
    return f"{model}/{task_name}"


def adopt_experiment(client, model: str, task_name: str, name: str, tags: dict[str, str]) -> None:
    """An experiment still under its legacy name is renamed to `name` (today's) and given today's `tags`, unless an
    experiment of that name exists already; its sweeps keep their ids and stay untagged (read through this module)."""
    old = client.get_experiment_by_name(legacy_experiment_name(model, task_name))
    if old is None or client.get_experiment_by_name(name) is not None:
        return
    client.rename_experiment(old.experiment_id, name)
    for key, value in tags.items():
        client.set_experiment_tag(old.experiment_id, key, value)


def upgrade_records(records: list[CheckpointRecord], published: list[Checkpoint] | None) -> list[CheckpointRecord]:
    """An untagged sweep's records as today's code writes them: measurements given to their owners, every
    response row with its generation. Records already in today's form pass unchanged."""
    # without the published list (sweeps saved before it was): the latest revision recorded with a final status, the
    # end of what the sweep asked for, whether it was measured or recorded as a twin's duplicate
    final = TrainingEnd.of(published, [Checkpoint(r.revision, r.step) for r in records if final_status(r.status)]).revision
    twins = identical_weights({r.revision: r.weights_digest for r in records if final_status(r.status)}, final)
    return [_with_generation(r) for r in attribute_to_owners(records, twins)]


def attribute_to_owners(records: list[CheckpointRecord], twins: list[IdenticalWeights]) -> list[CheckpointRecord]:
    """Where the revision a measurement belongs to was not the one measured (a sweep recorded before the
    duplicate rule gave `main`'s weights to the final step measured them at the earliest twin), the numbers
    move to their owner and the measured twin becomes its duplicate: the same weights, the same numbers."""
    by_revision = {r.revision: r for r in records}
    for group in twins:
        owner = by_revision.get(group.owner)
        measured = next((by_revision[m] for m in group.members if m in by_revision and by_revision[m].ok), None)
        if owner is None or owner.ok or measured is None:
            continue
        by_revision[owner.revision] = replace(measured, revision=owner.revision, step=owner.step, commit=owner.commit, error=None,
                                              duplicate_of=())  # fmt: skip
        by_revision[measured.revision] = replace(
            measured, status="duplicate", duplicate_of=(owner.revision,), conditions={}, contrasts={}, null=NullStats(), evidence=None,
            responses=[], error=f"identical weight files to {owner.revision}, to which the measurement belongs",
        )  # fmt: skip
    return sorted(by_revision.values(), key=lambda r: (r.step is None, r.step or 0))


def _with_generation(record: CheckpointRecord) -> CheckpointRecord:
    """Rows recorded before they kept the generation with its special tokens show the scored response instead."""
    if all("generation" in row for row in record.responses):
        return record
    return replace(record, responses=[row if "generation" in row else row | {"generation": row.get("response")} for row in record.responses])
