"""The long table: every number of a record, with identity as columns, so no reader parses a name."""

from dataclasses import replace
from types import SimpleNamespace

import polars as pl
import pytest

from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import run_checkpoint
from pythia_sweep.numbers import SCHEMA, long_table
from pythia_sweep.task.schema import task_from_dict

from conftest import NEOX_REPO

TASK = {
    "name": "late", "question": "q", "align": "suffix",
    "prompts": {"kind": "pairs", "pairs": [
        {"clean": "The capital of France is", "corrupted": "The capital of Spain is", "correct": " Paris", "wrong": " Madrid"},
        {"clean": "The capital of Italy is", "corrupted": "The capital of Japan is", "correct": " Rome", "wrong": " Tokyo"}]},
    "groups": {"Late_heads": [[5, 1], [5, 3]], "L_other": [[5, 2], [5, 4]]},
    "contrasts": [{"name": "gap", "plus": "Late_heads", "minus": "L_other", "metric": "logprob_diff", "levels": [1.0, 0.5, 0.2]}],
}  # fmt: skip


@pytest.fixture(scope="module")
def measured(hub_cache):
    task = task_from_dict(TASK, "late.toml")
    config = SweepConfig(model=NEOX_REPO, null_subsets=2, max_new_tokens=2, bootstrap_resamples=100, single_heads=True)
    record = run_checkpoint(config, "step1000", task=task)
    assert record.status == "ok", record.error
    return record


def test_every_number_of_the_record_is_one_row_with_its_identity(measured):
    failed = replace(measured, revision="step9", status="failed", conditions={}, contrasts={}, evidence=None)
    long = long_table([measured, failed])  # a failed record has no numbers
    assert dict(long.schema) == SCHEMA and set(long["revision"]) == {"step1000"}
    heads = long.filter((pl.col("kind") == "head") & (pl.col("metric") == "logprob_diff"))
    expected = {c.heads[0]: c.logprob_diff.value for c in measured.conditions.values() if c.kind == "head"}
    assert {(r["layer"], r["head"]): r["value"] for r in heads.iter_rows(named=True)} == expected
    assert sorted(expected) == [(5, h) for h in range(12)]  # every head of the layer the groups touch
    groups = long.filter(pl.col("condition").is_in(["Late_heads", "L_other"]))
    # names that look like heads are groups (and where the null places them), never a head
    assert set(groups["kind"]) == {"group", "null_position"} and groups["layer"].is_null().all() and groups["head"].is_null().all()
    gap = long.filter((pl.col("kind") == "contrast") & (pl.col("metric") == "logprob_diff")).row(0, named=True)
    assert gap["condition"] == "gap" and gap["value"] == measured.contrasts["gap"].logprob_diff.value
    assert (gap["ci_low"], gap["ci_high"]) == measured.contrasts["gap"].logprob_diff.ci
    induction = long.filter((pl.col("kind") == "evidence") & (pl.col("metric") == "induction"))
    assert len(induction) == len(measured.evidence["induction"]) * len(measured.evidence["induction"][0])


def test_the_demo_names_carrying_heads_from_the_table_not_from_names(measured):
    from pythia_sweep.commands.demo import carrying_heads

    frame = pl.DataFrame({"revision": ["step1000"], "analysed": [True]})
    top = carrying_heads(SimpleNamespace(frame=frame, long=long_table([measured])), k=12)
    base = measured.conditions["baseline"].logprob_diff.value
    gains = sorted(((c.heads[0], c.logprob_diff.value - base) for c in measured.conditions.values() if c.kind == "head"),
                   key=lambda g: -g[1])  # fmt: skip
    assert [((layer, head), pytest.approx(gain)) for layer, head, gain in top] == [(h, pytest.approx(g)) for h, g in gains]


def test_a_record_round_trips_through_json_and_an_unknown_field_is_refused(measured):
    import json

    from pythia_sweep.records import CheckpointRecord

    data = json.loads(json.dumps(measured.to_json()))  # as record.json holds it in the store
    assert CheckpointRecord.from_json(data) == measured
    with pytest.raises(ValueError, match=r"record.json: statuss='ok' is not valid: a record field \(circuit, commit, conditions"):
        CheckpointRecord.from_json(data | {"statuss": "ok"})
    with pytest.raises(ValueError, match="status='done' is not valid: one of ok, failed, duplicate"):
        replace(measured, status="done")
    typo = json.loads(json.dumps(measured.to_json()))
    typo["conditions"]["Late_heads"]["logprob_dif"] = 1.0  # the statistics are typed too: a stray key is refused by name
    with pytest.raises(ValueError, match=r"record.json: condition 'Late_heads': logprob_dif=1.0 is not valid: one of decoded, heads"):
        CheckpointRecord.from_json(typo)
    with pytest.raises(TypeError, match="conditions holds a dict: a ConditionStats"):
        replace(measured, conditions={"Late_heads": typo["conditions"]["Late_heads"]})


def test_mlflow_names_the_long_table_and_the_report_columns_are_views_of_one_walk(measured):
    """Every number once: its flat name is unique, the long table holds it with its identity, MLflow gets the
    compared part by the same names, and the report's timeline columns are the same names and values."""
    from pythia_sweep.numbers import named, numbers
    from pythia_sweep.report.reduce import timeline

    walked = list(numbers(measured))
    names = [n.name for n in walked if n.name is not None]
    assert len(names) == len(set(names))  # one name, one number
    long = long_table([measured])
    assert long.height == len(walked)
    keyed = {(r["kind"], r["condition"], r["metric"], r["layer"], r["head"]): r["value"] for r in long.iter_rows(named=True)}
    assert len(keyed) == long.height and all(keyed[(n.kind, n.condition, n.metric, n.layer, n.head)] == n.value for n in walked)
    row = timeline([measured], 2000).row(0, named=True)
    shown = named(n for n in walked if n.kind != "time")
    assert {k: row[k] for k in shown} == shown and not any(f"time/{stage}" in row for stage in measured.timings)
    assert shown["gap/logprob_diff_ci_low"] == measured.contrasts["gap"].logprob_diff.ci[0]
    compared = named(n for n in walked if n.compared)  # what a checkpoint's MLflow run is given
    assert "Late_heads/success_rate" in compared and "gap/logprob_diff" in compared and "time/compute_s" in compared
    assert not any(n.name in compared for n in walked if n.kind in ("head", "null") or n.layer is not None and n.kind == "evidence")
