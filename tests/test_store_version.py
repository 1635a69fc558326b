"""The store version: what the writer makes carries it, a sweep without it (written by an older pythia_sweep) is read
through the one adapter (tracking/legacy.py), and a sweep a newer pythia_sweep wrote is refused by name."""

import pytest

from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.stats import ConditionStats, Estimate
from pythia_sweep.task.schema import load_task
from pythia_sweep.tracking.reader import SweepReader
from pythia_sweep.tracking.store import STORE_VERSION, VERSION_TAG, StoreVersionError
from pythia_sweep.tracking.writer import SweepRecorder

TASK = load_task("tasks/decimal-seed.toml")
CONFIG = SweepConfig(model="org/model", task="tasks/decimal-seed.toml")
IDENTITY = {"model": "org/model", "sweep_id": CONFIG.sweep_id(TASK.digest), "task": TASK.describe()}


def measured(revision: str, step: int, value: float, digest: str) -> CheckpointRecord:
    row = {"condition": "baseline", "prompt_id": "p0", "success": True, "response": " 7", "generation": " 7<|endoftext|>",
           "logprob_diff": value, "prob_diff": value / 2}  # fmt: skip
    return CheckpointRecord(**IDENTITY, revision=revision, step=step, status="ok", weights_digest=digest,
                            conditions={"baseline": ConditionStats(kind="baseline", heads=(), prompt="corrupted", method="per-head", n_prompts=1,
                                                                   n_trials=1, decoded=True, successes=1, success_rate=Estimate(1.0),
                                                                   logprob_diff=Estimate(value))},
                            responses=[row])  # fmt: skip


# Before the duplicate rule: the final weights measured at their earliest name (step1000), the final step recorded as
# its duplicate.
OLD = [
    measured("step0", 0, 0.25, "a"),
    measured("step1000", 1000, 1.5, "final"),
    CheckpointRecord(**IDENTITY, revision="step2000", step=2000, status="duplicate", weights_digest="final", duplicate_of=("step1000",),
                     error="identical weight files to step1000"),  # fmt: skip
]


@pytest.fixture()
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    recorder = SweepRecorder(uri)
    parent = recorder.start_sweep(CONFIG, TASK)
    for record in OLD:
        recorder.record_checkpoint(parent, record)
    recorder.finish_sweep(parent)
    return recorder, parent


def test_the_writer_tags_what_it_makes_and_a_tagged_sweep_reads_back_as_written(sweep):
    recorder, parent = sweep
    run = recorder.client.get_run(parent)
    assert run.data.tags[VERSION_TAG] == str(STORE_VERSION) == "1"
    assert recorder.client.get_experiment(run.info.experiment_id).tags[VERSION_TAG] == "1"
    assert SweepReader(recorder.uri).load_records(parent) == OLD  # today's sweeps pass the adapter by


def test_an_untagged_sweep_is_read_through_the_legacy_adapter(sweep):
    recorder, parent = sweep
    recorder.client.delete_tag(parent, VERSION_TAG)  # as a pythia_sweep before the store version left it, its rows
    for run in recorder.checkpoint_runs(parent):  # without the generation field
        record = next(r for r in OLD if r.revision == run.data.tags["revision"]).to_json()
        record["responses"] = [{k: v for k, v in row.items() if k != "generation"} for row in record["responses"]]
        recorder.client.log_dict(run.info.run_id, record, "record.json")
    by_revision = {r.revision: r for r in SweepReader(recorder.uri).load_records(parent)}
    assert sorted(by_revision) == ["step0", "step1000", "step2000"]
    final, twin = by_revision["step2000"], by_revision["step1000"]
    assert (final.status, final.step, final.duplicate_of) == ("ok", 2000, ())  # the measurement belongs to the final step
    assert final.conditions == OLD[1].conditions and final.responses[0]["logprob_diff"] == 1.5
    assert (twin.status, twin.duplicate_of, twin.conditions) == ("duplicate", ("step2000",), {})
    assert by_revision["step0"].conditions == OLD[0].conditions  # not a twin: its numbers stay
    assert [r["generation"] for r in by_revision["step0"].responses] == [" 7"]  # the scored response stands in


def test_a_sweep_from_a_newer_store_version_is_refused_by_name(sweep):
    recorder, parent = sweep
    recorder.client.set_tag(parent, VERSION_TAG, str(STORE_VERSION + 1))
    name = recorder.client.get_run(parent).info.run_name
    reader = SweepReader(recorder.uri)
    expected = (f"^sweep '{name}' \\(MLflow parent run {parent}\\) has {VERSION_TAG}='2': this pythia_sweep reads store "
                "versions up to 1; read it with the pythia_sweep that wrote it, or a newer one$")  # fmt: skip
    for read in (reader.load_records, reader.sweep_config, reader.sweep_task):
        with pytest.raises(StoreVersionError, match=expected):
            read(parent)
    with pytest.raises(StoreVersionError, match=expected):  # nor resumed by this code's writer
        SweepRecorder(recorder.uri).start_sweep(CONFIG, TASK)
