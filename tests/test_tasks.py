"""Task files: the shipped tasks run on the tiny models, malformed files are refused in one line, and a task
the code has never seen sweeps with its own names everywhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import discover_groups, run_checkpoint
from pythia_sweep.errors import ConfigError
from pythia_sweep.task.schema import load_task, task_from_dict

from conftest import NEOX_REPO

REPO = Path(__file__).resolve().parents[1]
FAST = dict(model=NEOX_REPO, null_subsets=2, max_new_tokens=3, bootstrap_resamples=100, single_heads=False)
SHIPPED = ["decimal-seed", "decimal-robust", "induction", "ioi", "greater-than"]

OWN_TASK = """
name = "capitals"
question = "When do the capital heads appear?"
align = "suffix"

[prompts]
kind = "pairs"
pairs = [
  { clean = "The capital of France is", corrupted = "The capital of Spain is", correct = [" Paris"], wrong = [" Madrid"] },
  { clean = "The capital of Italy is", corrupted = "The capital of Japan is", correct = " Rome", wrong = [" Tokyo", " Kyoto"] },
  { clean = "The capital of Egypt is", corrupted = "The capital of Kenya is", correct = " Cairo", wrong = " Nairobi" },
]

[success]
rule = "first-answer"

[groups]
capital_heads = [[2, 1], [5, 3]]
other_heads = [[2, 4], [5, 7]]

[[contrasts]]
name = "capital_gap"
plus = "capital_heads"
minus = "other_heads"
metric = "logprob_diff"
levels = [1.0, 0.5, 0.2]
"""


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tasks_load_validate_and_run_on_the_tiny_model(hub_cache, name):
    task = load_task(REPO / "tasks" / f"{name}.toml")
    layer = 4 if (task.layer or 0) > 7 else None  # the tiny model has 8 layers: move a deeper default layer
    config = SweepConfig(**FAST, task=f"tasks/{name}.toml", layer=layer)
    if task.to_discover:  # its group found first, as the sweep does, at the checkpoint measured
        task = task.found_by(discover_groups(config, task, "step1000"))
        assert [len(heads) for heads in task.discovered.values()] == list(task.to_discover.values())
    record = run_checkpoint(config, "step1000", task=task)
    assert record.status == "ok", record.error
    contrast = task.headline.name
    assert set(record.contrasts) == {contrast}
    groups = record.settings["groups"]
    assert list(groups) == task.group_names and all(groups.values())
    n_prompts = record.settings["n_prompts"]
    pairs = {tp.pair.id: tp.pair for tp in task.tokenize(_tokenizer(), [task.align])}  # the measured ones
    every = len(task.pairs(_tokenizer()))
    assert n_prompts == len(pairs) == ((every + 1) // 2 if task.to_discover else every)
    assert len(record.responses) == len(record.conditions) * n_prompts
    # Oracles from the raw rows, not from the summary's own aggregation: the task's success rule applied to each
    # generated text, and the headline as the mean of per-prompt differences (a paired contrast).
    rows = {(r["condition"], r["prompt_id"]): r for r in record.responses}
    for name, c in record.conditions.items():
        accepted = [task.success(rows[(name, pid)]["response"], p.correct, p.wrong) for pid, p in pairs.items()]
        assert c.success_rate.value == pytest.approx(sum(accepted) / len(accepted)), name
    key = {"success_rate": "success", "logprob_diff": "logprob_diff", "prob_diff": "prob_diff"}[task.headline.metric]
    plus, minus = task.headline.plus, task.headline.minus
    paired = [float(rows[(plus, pid)][key]) - float(rows[(minus, pid)][key]) for pid in pairs]
    assert record.contrasts[contrast].value == pytest.approx(sum(paired) / len(paired))


def _tokenizer():
    from transformers import AutoTokenizer

    from pythia_sweep.hub.fetch import fetch

    return AutoTokenizer.from_pretrained(fetch(NEOX_REPO, "step1000").path)


def test_induction_pairs_differ_in_one_token_and_predict_different_words(hub_cache):
    task = load_task(REPO / "tasks" / "induction.toml")
    tok = _tokenizer()
    for tp in task.tokenize(tok, ["prefix"])[:5]:
        clean, corrupted = tp.ids["clean"], tp.ids["corrupted"]
        assert len(clean) == len(corrupted) and sum(a != b for a, b in zip(clean, corrupted)) == 1
        changed = next(i for i, (a, b) in enumerate(zip(clean, corrupted)) if a != b)
        assert tp.answers["clean"][0] == [clean[changed]] and tp.answers["clean"][1] == [corrupted[changed]]
        assert clean[changed - 1] == clean[-1]  # the answer follows the repeated token's first occurrence


def test_greater_than_answers_are_the_years_above_and_at_most_the_start(hub_cache):
    task = load_task(REPO / "tasks" / "greater-than.toml")
    pair = task.pairs(_tokenizer())[0]
    start = int(pair.clean.split("year ")[1][2:4])
    assert pair.correct == tuple(f"{n:02d}" for n in range(start + 1, 100))
    assert pair.wrong == tuple(f"{n:02d}" for n in range(0, start + 1))


def _refusal(data: dict, source="bad.toml", tokenizer=None, n_layers=8, n_heads=12) -> str:
    with pytest.raises(ConfigError) as error:
        task = task_from_dict(data, source)
        task.resolve_groups(n_layers, n_heads)
        task.tokenize(tokenizer or _tokenizer(), [task.align])
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def _own() -> dict:
    import tomllib

    return tomllib.loads(OWN_TASK)


def test_malformed_task_files_are_refused_naming_file_field_value_and_what_is_allowed(hub_cache):
    data = _own()
    del data["prompts"]["pairs"][0]["wrong"]
    assert _refusal(data) == "bad.toml: prompts.pairs[0].wrong=None is not valid: present and not empty"

    data = _own() | {"single_token_answers": True}
    data["prompts"]["pairs"][0]["correct"] = [" Parisxylophone"]
    message = _refusal(data)
    assert "prompts[p0].correct=' Parisxylophone'" in message and "one token of the vocabulary" in message

    data = _own()
    data["groups"]["capital_heads"] = [[2, 1], [5, 99]]
    assert _refusal(data) == ("bad.toml: groups.capital_heads=[[2, 1], [5, 99]] is not valid: heads in 0..11 "
                              "(the model has 12 heads per layer)")  # fmt: skip

    data = _own()
    data["success"]["rule"] = "contains"
    assert _refusal(data) == "bad.toml: success.rule='contains' is not valid: one of mentions, first-answer"

    data = _own()
    data["contrasts"][0]["plus"] = "capitals"
    assert "contrasts[0].plus='capitals' is not valid: a group name (capital_heads, other_heads) or baseline" in _refusal(data)


def test_group_head_out_of_range_stops_the_command_before_ray(hub_cache, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(OWN_TASK.replace("[5, 3]", "[5, 30]"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache}
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO, "--task", str(bad), "--checkpoints", "step0,step1",
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {bad}: groups.capital_heads=[[2, 1], [5, 30]] is not valid: heads in 0..11 (the model has 12 heads per layer)"
    assert "ray" not in done.stdout.lower()


@pytest.mark.slow
def test_a_task_the_code_has_never_seen_sweeps_with_its_own_names(hub_cache, tmp_path):
    import ray

    from pythia_sweep.report.build import build_report
    from pythia_sweep.run.driver import run_sweep
    from pythia_sweep.tracking.reader import SweepReader

    path = tmp_path / "capitals.toml"
    path.write_text(OWN_TASK)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(**{**FAST, "single_heads": True}, task=str(path), checkpoints=("step0", "step1000"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)
    try:
        result = run_sweep(config, tracking_uri=uri, progress=False)
    finally:
        ray.shutdown()
    reader = SweepReader(uri)
    child = reader.checkpoint_runs(result.parent_run_id)[0]
    assert {"capital_gap/logprob_diff", "capital_heads/success_rate", "other_heads/prob_diff"} <= set(child.data.metrics)
    experiment = reader.client.get_experiment(child.info.experiment_id)
    assert experiment.name == f"capitals · {NEOX_REPO}" and experiment.tags["task"] == "capitals" and experiment.tags["model"] == NEOX_REPO
    report = build_report(result.parent_run_id, tracking_uri=uri, reports_dir=tmp_path / "r")
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["headline"] == "capital_gap/logprob_diff" and "capital_gap/logprob_diff" in summary["results"]
    assert "capital_gap (capital_heads - other_heads" in summary["verdict"]
    page = report.html_path.read_text()
    assert "When do the capital heads appear?" in page and "capital_heads" in page and "layer 5 head 3" in page
    assert {"capital_gap/logprob_diff", "L02H01/logprob_diff", "L05H07/logprob_diff"} <= set(report.frame.columns)


def _decimal() -> dict:
    import tomllib

    return tomllib.loads((REPO / "tasks" / "decimal-robust.toml").read_text())


def _load_refusal(data: dict, source="bad.toml") -> str:
    """A refusal at load time (no model needed): one line naming the file."""
    with pytest.raises(ConfigError) as error:
        task_from_dict(data, source)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def test_case1_an_unknown_key_in_any_table_is_refused_with_a_did_you_mean():
    """`metirc` inside [[contrasts]] used to default the metric to success_rate with levels [2, 1, 0.5] and a
    verdict impossible by construction; `cout` inside [prompts] expanded a templates task to 84,000 prompts."""
    data = _own()
    data["contrasts"][0]["metirc"] = data["contrasts"][0].pop("metric")
    assert _load_refusal(data) == ("bad.toml: contrasts[0].metirc='logprob_diff' is not valid: did you mean metric? "
                                   "a known key here (name, plus, minus, metric, levels)")  # fmt: skip
    data = _decimal()
    data["prompts"]["cout"] = 48
    assert "bad.toml: prompts.cout=48 is not valid: did you mean count? " in _load_refusal(data)
    for table, key, wrong in (("success", "rule", "rul"), ("hypotheses", "early", "erly")):
        data = _decimal()
        data[table][wrong] = data[table].pop(key)
        assert f"bad.toml: {table}.{wrong}=" in _load_refusal(data) and f"did you mean {key}?" in _load_refusal(data)
    data = _decimal()
    data["groups"]["even"] = {"heds": [0, 2]}
    assert "bad.toml: groups.even.heds=[0, 2] is not valid: did you mean heads?" in _load_refusal(data)
    data = _decimal()
    data["groups"]["even"] = {"heads": {"form": 0, "step": 2}}
    assert "groups.even.heads.form=0 is not valid: did you mean from?" in _load_refusal(data)
    data = _own()
    data["prompts"]["pairs"][1]["corect"] = " Rome"
    assert "prompts.pairs[1].corect=' Rome' is not valid: did you mean correct?" in _load_refusal(data)
    data = _decimal() | {"layr": 6}
    assert "bad.toml: layr=6 is not valid: did you mean layer?" in _load_refusal(data)


def test_case1_a_templates_task_too_big_without_count_is_refused_naming_its_size():
    import tomllib

    data = tomllib.loads((REPO / "tasks" / "greater-than.toml").read_text())
    del data["prompts"]["count"]
    assert _load_refusal(data) == ("bad.toml: prompts='1 templates x 5432 rows = 5432 prompts' is not valid: at most 2000 prompts "
                                   "without `count`: set count = N to draw N of them (seeded)")  # fmt: skip


def test_case2_levels_the_metric_cannot_reach_or_not_descending_are_refused():
    data = _decimal()
    data["contrasts"][0]["levels"] = [2, 1, 0.5]
    assert "contrasts[0].levels=[2, 1, 0.5] is not valid: a strong level below 1: a contrast of success_rate lies in [-1, 1]" in _load_refusal(data)
    data["contrasts"][0]["levels"] = [0.1, 0.3, 0.5]
    assert "levels=[0.1, 0.3, 0.5] is not valid: descending and positive: strong > moderate > weak > 0" in _load_refusal(data)
    data["contrasts"][0] |= {"metric": "prob_diff", "levels": [2.5, 1, 0.5]}
    assert "a contrast of prob_diff lies in [-2, 2]" in _load_refusal(data)
    data["contrasts"][0] |= {"metric": "logprob_diff", "levels": [5, 2, 1]}  # nats: unbounded, accepted
    assert task_from_dict(data, "ok.toml").headline.levels == (5.0, 2.0, 1.0)


def test_case3_colliding_ids_empty_values_and_answer_mistakes_are_refused_by_their_own_field(hub_cache):
    """A templates `id` pattern that gave one id twice was accepted (the report said "6 of 47" with 48 prompts,
    and the shipped IOI task merged prompts that differ only in their object)."""
    data = _decimal()
    data["prompts"]["id"] = "t{template}-{correct}"  # each number pair appears in both orders: ids collide
    with pytest.raises(ConfigError, match=r"bad.toml: prompts.id='t0-9.8' is not valid: an id given once \(prompts 0 and 1 share it"):
        task_from_dict(data, "bad.toml").pairs()
    data = _own()
    data["prompts"]["pairs"][1]["id"] = "p0"
    assert "prompts.pairs[].id='p0' is not valid: an id given once" in _load_refusal(data)
    data = _decimal()
    data["prompts"]["values"] = []
    assert _load_refusal(data) == "bad.toml: prompts.values=[] is not valid: a non-empty list of rows, each a table of named values"

    data = _own()
    data["prompts"]["pairs"][0]["correct"] = ["Paris"]  # no leading space
    assert "bad.toml: prompts[p0].correct='Paris' is not valid: write it with its leading space, ' Paris'" in _refusal(data)
    data = _own()
    data["prompts"]["pairs"][2]["wrong"] = "Nairobi"
    assert "bad.toml: prompts[p2].wrong='Nairobi' is not valid: write it with its leading space" in _refusal(data)


def test_a_repeated_tokens_corruption_is_one_the_generator_knows_and_fits_the_sequence():
    import tomllib

    data = tomllib.loads((REPO / "tasks" / "induction-kcomp.toml").read_text())
    data["prompts"]["corrupt"] = "prev"
    assert _load_refusal(data) == "bad.toml: prompts.corrupt='prev' is not valid: one of answer, previous"
    data["prompts"] |= {"corrupt": "previous", "repeat": 8}
    assert _load_refusal(data).startswith("bad.toml: prompts.repeat=8 is not valid: at most 7 with corrupt = \"previous\"")
