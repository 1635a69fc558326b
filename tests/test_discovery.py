"""Groups found, not written (`{ discover = N }`): a first pass at the model's final checkpoint chooses the heads on
half of the prompts, the sweep measures them on the other half against random sets of the model's other heads, and
a resumed sweep measures the same heads without finding them again."""

import tomllib

import pytest
import torch

from conftest import _neox, _tokenizer
from pythia_sweep.errors import ConfigError
from pythia_sweep.task.schema import task_from_dict
from pythia_sweep.task.definition import discovery_split

PLANTED = (4, 7)
REPO = "tiny-test/planted"

TASK = """
name = "planted"
question = "Which head carries the name?"
align = "suffix"

[prompts]
kind = "pairs"
pairs = [
  { id = "mary", clean = "Then, Mary and John went to the store. John gave a ring to", corrupted = "Then, Mary and John went to the store. Mary gave a ring to", correct = " Mary", wrong = " John" },
  { id = "kate", clean = "Then, Kate and Tom went to the garden. Tom gave a book to", corrupted = "Then, Kate and Tom went to the garden. Kate gave a book to", correct = " Kate", wrong = " Tom" },
  { id = "alice", clean = "Then, Alice and Dan went to the school. Dan gave a ball to", corrupted = "Then, Alice and Dan went to the school. Alice gave a ball to", correct = " Alice", wrong = " Dan" },
  { id = "anna", clean = "Then, Anna and Tom went to the store. Tom gave a ring to", corrupted = "Then, Anna and Tom went to the store. Anna gave a ring to", correct = " Anna", wrong = " Tom" },
]

[success]
rule = "first-answer"

[groups]
carrier = { discover = 1 }

[[contrasts]]
name = "carrier_gain"
plus = "carrier"
minus = "baseline"
metric = "logprob_diff"
levels = [1.0, 0.5, 0.2]
"""


def _task(**changes):
    data = tomllib.loads(TASK)
    for key, value in changes.items():
        data[key] = value
    return task_from_dict(data, "planted.toml")


@pytest.fixture(scope="module")
def planted_family(hub_cache, tmp_path_factory):
    """Three revisions of a tiny GPT-NeoX; at the last one head 4.7 carries the output (its output projection's
    columns x20, every other head's x0.3), so it is the one head a discovery can rightly choose."""
    work = tmp_path_factory.mktemp("planted")
    _publish_planted(hub_cache, REPO, work, seed=10)
    return hub_cache


def _publish_planted(hub_cache, repo, work, seed):
    from pythia_sweep.demo.hub_cache import save_revision

    tok = _tokenizer()
    for i, step in enumerate((0, 1, 2)):
        model = _neox(len(tok), seed=seed + i)
        if step == 2:
            with torch.no_grad():
                for layer, block in enumerate(model.gpt_neox.layers):
                    dense, width = block.attention.dense.weight, model.config.hidden_size // model.config.num_attention_heads
                    for h in range(model.config.num_attention_heads):
                        dense[:, h * width : (h + 1) * width] *= 20.0 if (layer, h) == PLANTED else 0.3
        save_revision(model, tok, hub_cache, repo, f"step{step}", work / f"{repo.replace('/', '--')}-{step}")


def test_the_planted_head_is_discovered_and_measured_on_the_other_prompts(planted_family, tmp_path, monkeypatch):
    """Through Ray: the discovery pass runs on a worker at the final checkpoint and finds the planted head on half the
    prompts; every record measures that head on the other half, its null sets never hold it, the verdict says it was
    found; the parent run keeps the discovery. Resumed in this process with one more checkpoint, the sweep measures
    the same head and never runs the pass again."""
    import pythia_sweep.run.driver as sweep_module
    import pythia_sweep.run.worker as worker_module
    from pythia_sweep.config import SweepConfig
    from pythia_sweep.report.build import build_report
    from pythia_sweep.tracking.reader import SweepReader

    task = _task()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(model=REPO, checkpoints=("step0", "step2"), null_subsets=6, max_new_tokens=2, bootstrap_resamples=200,
                         evidence=False, workers=1, head_map_top_k=4)  # fmt: skip
    import ray

    try:
        result = sweep_module.run_sweep(config, task, tracking_uri=uri, progress=False)
    finally:
        ray.shutdown()
    reader = SweepReader(uri)
    found = reader.discovery(result.parent_run_id)
    assert found["revision"] == "step2" and found["groups"]["carrier"]["heads"] == [list(PLANTED)]
    found_on = discovery_split(["mary", "kate", "alice", "anna"])
    assert sorted(found["prompts"]) == sorted(found_on) and len(found_on) == 2
    records = reader.load_records(result.parent_run_id)
    assert [r.revision for r in records] == ["step0", "step2"] and all(r.ok for r in records)
    for record in records:
        assert record.settings["discovered"] == {"carrier": [list(PLANTED)]}
        assert record.settings["groups"]["carrier"] == [list(PLANTED)]
        assert set(record.prompts).isdisjoint(found_on) and record.settings["n_prompts"] == 2  # held out
        nulls = [c for c in record.conditions.values() if c.kind == "null"]
        assert len(nulls) == 6 and all(list(PLANTED) not in [list(h) for h in c.heads] for c in nulls)
        assert record.settings["null"]["excluded"] == [list(PLANTED)]
    report = build_report(result.parent_run_id, tracking_uri=uri, reports_dir=str(tmp_path / "reports"))
    assert "The carrier group was found, not written: at step2, on 2 prompts held out from the 2 measured, carrier = 4.7" in report.verdict
    assert report.summary["discovery"]["groups"] == {"carrier": [list(PLANTED)]}

    def not_again(*args, **kwargs):
        raise AssertionError("the discovery pass ran again on a resumed sweep")

    monkeypatch.setattr(worker_module, "discover_groups", not_again)
    again = sweep_module.run_sweep(config.replace(checkpoints=("step0", "step1", "step2"), workers=0), task, tracking_uri=uri, progress=False)
    assert again.parent_run_id == result.parent_run_id and again.recorded == ["step1"]
    assert again.records[0].settings["discovered"] == {"carrier": [list(PLANTED)]}


@pytest.mark.slow
def test_a_study_on_ray_measures_each_model_with_its_own_heads_found_now_or_read_back(planted_family, tmp_path):
    """A study of two runs on one Ray worker: the first run's heads found now, on that worker, the second's read back from
    its earlier, unfinished sweep. The worker that ran the pass measures both, each with its own heads: the heads read
    back are handed to it (before, it measured the second run with a task whose heads it never saw, and the sweep
    stopped with "its heads found first")."""
    import ray

    from pythia_sweep.config import SweepConfig
    from pythia_sweep.run.driver import run_study, run_sweep
    from pythia_sweep.tracking.reader import SweepReader

    twin = f"{REPO}-twin"
    _publish_planted(planted_family, twin, tmp_path / "twin", seed=20)
    task, uri = _task(), f"sqlite:///{tmp_path}/mlflow.db"
    settings = dict(null_subsets=4, max_new_tokens=2, bootstrap_resamples=100, evidence=False, head_map_top_k=4)
    earlier = run_sweep(SweepConfig(model=twin, checkpoints=("step2",), workers=0, **settings), task, tracking_uri=uri, progress=False)
    assert earlier.recorded == ["step2"]  # its heads found and saved; step0 still to measure
    configs = [SweepConfig(model=m, checkpoints=("step0", "step2"), workers=1, **settings) for m in (REPO, twin)]
    try:
        first, second = run_study(configs, task, tracking_uri=uri, progress=False, study="planted-pair")
    finally:
        ray.shutdown()
    assert second.parent_run_id == earlier.parent_run_id and second.recorded == ["step0"] and not second.errors
    reader = SweepReader(uri)
    records = {(r.model, r.revision): r for p in (first.parent_run_id, second.parent_run_id) for r in reader.load_records(p)}
    assert set(records) == {(REPO, "step0"), (REPO, "step2"), (twin, "step0"), (twin, "step2")} and all(r.ok for r in records.values())
    assert len({r.worker["pid"] for k, r in records.items() if k != (twin, "step2")}) == 1  # one worker measured the study
    for model in (REPO, twin):
        heads = reader.discovery(first.parent_run_id if model == REPO else second.parent_run_id)["groups"]["carrier"]["heads"]
        assert {str(records[(model, s)].settings["discovered"]) for s in ("step0", "step2")} == {str({"carrier": heads})}


def test_a_group_to_discover_is_refused_where_it_cannot_be_one():
    with pytest.raises(ConfigError, match=r"groups.carrier.discover=0 .*an integer >= 1"):
        _task(groups={"carrier": {"discover": 0}})
    with pytest.raises(ConfigError, match=r"groups.carrier.layer=1 .*a known key here \(discover\)"):
        _task(groups={"carrier": {"discover": 2, "layer": 1}})
    with pytest.raises(ConfigError, match="at most one group to discover"):
        _task(groups={"a": {"discover": 1}, "b": {"discover": 2}}, contrasts=[{"name": "g", "plus": "a", "minus": "baseline"}])
    with pytest.raises(ConfigError, match="did you mean discover"):
        _task(groups={"carrier": {"discovr": 2}})
    task = _task()
    with pytest.raises(ConfigError, match=r"groups.carrier.*1 discovered heads"):
        task.with_discovered({"carrier": [(0, 0), (0, 1)]})
    with pytest.raises(ConfigError, match="its heads found first"):
        task.resolve_groups(6, 8)
    assert task.null_pool == "all-layers" and _task(null_pool="group-layers").null_pool == "group-layers"


def test_the_discovery_half_is_fixed_by_the_prompt_ids_and_needs_two_prompts():
    ids = [f"p{i}" for i in range(9)]
    half = discovery_split(ids)
    assert len(half) == 4 and half == discovery_split(list(reversed(ids))) and half <= set(ids)
    with pytest.raises(ConfigError, match="at least 2 prompts"):
        discovery_split(["only"])


def test_the_preflight_refuses_a_group_as_large_as_the_model(hub_cache):
    from pythia_sweep.measure.checkpoint import stand_in_heads

    with pytest.raises(ConfigError, match=r"fewer than the model's 16 heads \(2 layers x 8\)"):
        stand_in_heads(_task(groups={"carrier": {"discover": 16}}), 2, 8)
    assert stand_in_heads(_task(), 2, 8) == {"carrier": [(0, 0)]}
