"""The whole-model head map: attribution patching of every head checked against exact patching where the two
must agree (a model whose metric is linear in the last layer's heads), against finite differences where it is
not, and on a planted head that both must rank first."""

import copy
import dataclasses
import tomllib

import pytest
import torch

from pythia_sweep.stats import head_name
from pythia_sweep.errors import ConfigError
from pythia_sweep.measure.batch import pad_id_of
from pythia_sweep.measure.headmap import attribution, exact_effects, head_map, top_heads
from pythia_sweep.measure.patching import PatchPlan, attention_layout, capture, head_columns, patched
from pythia_sweep.task.schema import task_from_dict

NAMES_TASK = """
name = "names"
question = "Which heads move the name?"
align = "suffix"

[prompts]
kind = "pairs"
pairs = [
  { clean = "Then, Mary and John went to the store. John gave a ring to", corrupted = "Then, Mary and John went to the store. Mary gave a ring to", correct = " Mary", wrong = " John" },
  { clean = "Then, Kate and Tom went to the garden. Tom gave a book to", corrupted = "Then, Kate and Tom went to the garden. Kate gave a book to", correct = " Kate", wrong = " Tom" },
  { clean = "Then, Alice and Dan went to the school. Dan gave a ball to", corrupted = "Then, Alice and Dan went to the school. Alice gave a ball to", correct = " Alice", wrong = " Dan" },
]

[success]
rule = "first-answer"

[groups]
some = [[2, 1], [5, 3]]

[[contrasts]]
name = "some_gap"
plus = "some"
minus = "some"
metric = "logprob_diff"
levels = [1.0, 0.5, 0.2]
"""
TASK = task_from_dict(tomllib.loads(NAMES_TASK), "names.toml")
METHOD = {"site": "head", "align": "suffix", "patch_during": "prompt"}


def setup(loaded, dtype=torch.float32):
    model = copy.deepcopy(loaded.model).to(dtype)
    pairs = TASK.tokenize(loaded.tokenizer, {"suffix"})
    return model, attention_layout(model), pairs, pad_id_of(loaded.tokenizer)


def test_attribution_is_exact_where_the_metric_is_linear_in_the_heads(neox):
    """With the final layer norm taken out, the log-prob difference of one correct and one wrong answer is linear in
    the last layer's head outputs (the softmax's normaliser cancels, no later layer reads them): attribution and
    exact patching must give the same number for each of its heads, to float precision."""
    model, layout, pairs, pad_id = setup(neox)
    model.gpt_neox.final_layer_norm = torch.nn.Identity()
    with torch.no_grad():
        model.gpt_neox.layers[-1].attention.dense.weight *= 100.0  # effects of some size (a random model's are tiny); still linear
    assert all(len(tp.answers["corrupted"]) == 2 and tp.n_correct == 1 for tp in pairs)
    scores = attribution(model, layout, pairs, "suffix", pad_id, batch_size=16)
    last = [(layout.n_layers - 1, h) for h in range(layout.n_heads)]
    exact = exact_effects(model, neox.tokenizer, layout, pairs, last, "m", METHOD, TASK.success, batch_size=16)
    assert max(abs(v) for v in exact.values()) > 1e-3  # effects to compare, not zeros
    for head in last:
        assert float(scores[head]) == pytest.approx(exact[head], rel=1e-4, abs=1e-5), head_name(*head)


def test_attribution_is_the_derivative_along_the_patch(neox):
    """Elsewhere attribution is the metric's derivative along the straight line from the corrupted to the clean
    activation of the head: a central finite difference of patches a small step along it, in float64."""
    model, layout, pairs, pad_id = setup(neox, torch.float64)
    scores = attribution(model, layout, pairs, "suffix", pad_id, batch_size=16)
    for layer, head in [(1, 4), (4, 7), (6, 0)]:
        eps = 1e-4
        slope = (_metric_along(model, layout, pairs, layer, head, eps) - _metric_along(model, layout, pairs, layer, head, -eps)) / (2 * eps)
        assert float(scores[layer, head]) == pytest.approx(slope, rel=1e-5, abs=1e-8), (layer, head)


def _metric_along(model, layout, pairs, layer, head, t, run_on="corrupted"):
    """Mean over prompts of the log-prob difference of the corrupted answers with head (layer, head) moved t times
    (its clean - its corrupted activation) at the aligned positions, on the corrupted prompt or (`run_on` = "clean")
    on the clean one."""
    columns = head_columns([head], layout.head_dim)
    total = 0.0
    for tp in pairs:
        clean = capture(model, layout, "head", [layer], input_ids=torch.tensor([tp.ids["clean"]]))[layer][0]  # (Tc, C)
        values = []
        for answer in tp.answers["corrupted"]:
            ids = torch.tensor([tp.ids[run_on] + answer])
            base = capture(model, layout, "head", [layer], input_ids=ids)[layer]  # (1, T, C)
            corrupted = capture(model, layout, "head", [layer], input_ids=torch.tensor([tp.ids["corrupted"] + answer]))[layer]
            target, mask = base.clone(), torch.zeros_like(base, dtype=torch.bool)
            for c, k in tp.alignments["suffix"]:
                target[0, c, columns] += t * (clean[k, columns] - corrupted[0, c, columns])
                mask[0, c, columns] = True
            with torch.no_grad(), patched(model, layout, "head", {layer: PatchPlan(target, mask)}):
                logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0], -1)  # (T, V)
            n = len(tp.ids["corrupted"])
            values.append(sum(float(logp[n - 1 + j, a]) for j, a in enumerate(answer)))
        total += values[0] - values[1]  # one correct answer, one wrong
    return total / len(pairs)


def test_integrated_gradients_over_the_inputs_run_from_the_corrupted_prompt_to_the_clean_one(neox):
    """EAP-IG-inputs: where the metric is linear in the last layer's heads it equals exact patching at any number of
    steps; elsewhere one step is the gradient at the clean end of the path (a finite difference on the clean prompt),
    and more steps move it from there (the average along the path). Prompts of unequal length are refused."""
    model, layout, pairs, pad_id = setup(neox, torch.float64)
    even = [tp for tp in pairs if len(tp.ids["clean"]) == len(tp.ids["corrupted"])]
    assert even and all(c == k for tp in even for c, k in tp.alignments["suffix"])  # positions line up one to one
    one = attribution(model, layout, even, "suffix", pad_id, batch_size=16, steps=1)
    eps = 1e-4
    for layer, head in [(1, 4), (4, 7)]:
        slope = (_metric_along(model, layout, even, layer, head, eps, "clean") - _metric_along(model, layout, even, layer, head, -eps, "clean")) / (2 * eps)
        assert float(one[layer, head]) == pytest.approx(slope, rel=1e-5, abs=1e-8), (layer, head)
    many = attribution(model, layout, even, "suffix", pad_id, batch_size=16, steps=8)
    assert not torch.allclose(many, one)

    linear = copy.deepcopy(model)
    linear.gpt_neox.final_layer_norm = torch.nn.Identity()
    with torch.no_grad():
        linear.gpt_neox.layers[-1].attention.dense.weight *= 100.0
    last = [(layout.n_layers - 1, h) for h in range(layout.n_heads)]
    exact = exact_effects(linear, neox.tokenizer, layout, even, last, "m", METHOD, TASK.success, batch_size=16)
    ig = attribution(linear, layout, even, "suffix", pad_id, batch_size=16, steps=3)
    for h in last:
        assert float(ig[h]) == pytest.approx(exact[h], rel=1e-4, abs=1e-5), head_name(*h)  # exact runs in float32

    longer = dataclasses.replace(even[0], ids={**even[0].ids, "clean": even[0].ids["clean"][:1] + even[0].ids["clean"]})
    with pytest.raises(ConfigError, match=f"head_map_method='ig-inputs'.*prompt '{longer.pair.id}' has {len(longer.ids['clean'])} and"):
        attribution(model, layout, [longer], "suffix", pad_id, batch_size=16, steps=2)


def test_a_planted_head_is_found_first_by_attribution_and_by_exact_patching(neox):
    """One head made to carry the model's output (its output projection columns scaled up, every other head's
    scaled down): the map ranks it first by attribution, and its exact effect is the largest of those verified."""
    model, layout, pairs, pad_id = setup(neox)
    planted = (4, 7)
    with torch.no_grad():
        for layer in range(layout.n_layers):
            dense = model.gpt_neox.layers[layer].attention.dense.weight  # (d_model, H*D)
            for h in range(layout.n_heads):
                dense[:, h * layout.head_dim : (h + 1) * layout.head_dim] *= 20.0 if (layer, h) == planted else 0.3
    found = head_map(model, neox.tokenizer, layout, pairs, "m", METHOD, TASK.success, batch_size=16, top_k=5)
    scores = torch.tensor(found["attribution"])
    assert top_heads(scores, 1) == [planted]
    assert max(found["exact"], key=lambda name: abs(found["exact"][name])) == head_name(*planted)
    assert found["top_k_found"] >= 3 and not found["flagged"], found


def test_a_checkpoint_record_carries_the_map_and_the_long_table_every_head(neox):
    """`head_map = true`: the record holds every head's attribution, the exact effects of its top-k and of the
    task's named heads, and their agreement; the long table has a row per head and per checked head; MLflow
    compares the agreement. Left at its default, the setting leaves the sweep's identity as it was."""
    import hashlib
    import json

    from pythia_sweep.measure.checkpoint import measure
    from pythia_sweep.measure.plan import compile_for
    from pythia_sweep.config import SweepConfig
    from pythia_sweep.numbers import long_table, named, numbers
    from pythia_sweep.records import CheckpointRecord
    from pythia_sweep.task.schema import load_task

    seed_task = load_task("tasks/decimal-seed.toml")  # groups even / odd of layer 6
    config = SweepConfig(model="tiny-test/neox", null_subsets=2, max_new_tokens=4, bootstrap_resamples=200, evidence=False,
                         head_map=True, head_map_top_k=4)  # fmt: skip
    measured = measure(config, compile_for(config, seed_task, neox), neox)
    found = measured["head_map"]
    layout = attention_layout(neox.model)
    assert len(found["attribution"]) == layout.n_layers and {len(r) for r in found["attribution"]} == {layout.n_heads}
    named_heads = {head_name(6, h) for h in range(layout.n_heads)}  # even and odd: every head of layer 6
    assert named_heads <= set(found["exact"]) and len(found["exact"]) <= len(named_heads) + 4
    record = CheckpointRecord(model=config.model, revision="step1000", step=1000, sweep_id="x", task={}, status="ok", **measured)
    rows = long_table([record]).filter(kind="head_map")
    assert rows.filter(condition="attribution").height == layout.n_layers * layout.n_heads
    assert rows.filter(condition="exact").height == len(found["exact"])
    exact = rows.filter(condition="exact", layer=6, head=3)["value"].item()
    assert exact == pytest.approx(found["exact"][head_name(6, 3)])
    compared, every = named(n for n in numbers(record) if n.compared), named(numbers(record))
    assert "head_map/top_k_found" in compared
    assert compared["head_map/exact/L06H03"] == pytest.approx(found["exact"][head_name(6, 3)])  # charted against step
    assert "head_map/attribution/L06H03" in every and "head_map/attribution/L06H03" not in compared

    plain = SweepConfig(model="tiny-test/neox")
    assert plain.sweep_id("d") == "5d28600e974e"  # pinned, the value before the map and the circuits existed: old sweeps resume
    assert SweepConfig(model="tiny-test/neox", circuits=True).sweep_id("d") != "5d28600e974e"  # a sweep with circuits is another
    assert plain.replace(head_map=True).sweep_id("d") != plain.sweep_id("d")
    assert plain.replace(head_map=True, head_map_method="ig-inputs").sweep_id("d") != plain.replace(head_map=True).sweep_id("d")


def test_the_scan_sets_attribution_against_its_exact_effects(hub_cache, tmp_path, capsys):
    """`python -m jobs.scan ... --attribution`: a line per revision with the rank correlation over every head and
    the exact and attribution top 3, read from the same scan rows and map the library returns."""
    from pythia_sweep.commands.scan import main

    config = tmp_path / "tiny.toml"
    config.write_text('model = "tiny-test/neox"\ntask = "tasks/decimal-seed.toml"\nmax_new_tokens = 4\n')
    assert main([str(config), "--revisions", "step1000", "--attribution", "--reports-dir", str(tmp_path)]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    layers, heads = 8, 12
    assert said.startswith(f"  step1000: attribution patching against exact patching over all {layers * heads} heads: rank correlation ")
    assert "top 3 by size: exact " in said and "of 3 found" in said


def test_head_timelines_name_when_each_head_appears_and_which_fall_back():
    """A head that rises and stays, one that rises and falls, one that only ever reaches the weak level, and one
    that never matters: each course named, its first crossings and peak at the right steps."""
    from pythia_sweep.report.heads import head_timelines

    steps, revisions = [0, 100, 200, 300, 400], ["step0", "step100", "step200", "step300", "step400"]
    courses = {(0, 0): [0.0, 0.2, 0.6, 1.5, 2.0], (0, 1): [0.0, 1.2, 1.8, 0.4, 0.1], (1, 0): [0.0, 0.0, 0.7, 0.8, 0.6],
               (1, 1): [0.0, 0.1, -0.2, 0.3, 0.2]}  # fmt: skip
    maps = [{"attribution": [[courses[(layer, h)][i] for h in range(2)] for layer in range(2)]} for i in range(len(steps))]
    found = {(t["layer"], t["head"]): t for t in head_timelines(steps, revisions, maps, strong=1.0, weak=0.5)}
    assert set(found) == {(0, 0), (0, 1), (1, 0)}  # (1, 1) never exceeds the weak level
    assert [found[(0, 0)][k] for k in ("first_weak_step", "first_strong_step", "peak_step", "course")] == [200, 300, 400, "stays"]
    assert [found[(0, 1)][k] for k in ("first_weak_step", "first_strong_step", "peak_step", "course")] == [100, 100, 200, "rises and falls"]
    assert [found[(1, 0)][k] for k in ("first_strong_step", "course")] == [None, "weak only"]
    assert [(t["layer"], t["head"]) for t in head_timelines(steps, revisions, maps, 1.0, 0.5)][0] == (0, 0)  # largest peak first


def test_the_size_ratio_is_the_median_over_the_heads_that_matter_and_said_only_when_off():
    from pythia_sweep.measure.headmap import size_ratio
    from pythia_sweep.report.heads import sizes_caveat

    scores = torch.tensor([[4.0, 3.0, 0.05], [1.0, 0.0, 0.0]])
    exact = {(0, 0): 8.0, (0, 1): 5.0, (0, 2): 0.5, (1, 0): 1.0}  # (0, 2) is under a tenth of the largest: left out
    assert size_ratio(scores, exact) == pytest.approx(sorted([0.5, 0.6, 1.0])[1])
    assert size_ratio(scores, {(0, 0): 0.0}) is None
    assert "0.60x the exact effect" in sizes_caveat({"final_size_ratio": 0.6}) and sizes_caveat({"final_size_ratio": 0.9}) is None
