"""The hardware floor's work count, checked against torch's own FLOP counter on a real forward."""

from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from pythia_sweep.measure.conditions import Condition
from pythia_sweep.measure.floor import floor_seconds, matmul_throughput, needed_flops, shapes_of
from pythia_sweep.task.definition import TokenizedPair
from pythia_sweep.task.pairs import PromptPair


def _pair(pid, corrupted, answers):
    pair = PromptPair(pid, "clean", "corrupted", ("a",), ("b",))
    return TokenizedPair(pair, {"clean": corrupted[:-1], "corrupted": corrupted}, {"clean": answers, "corrupted": answers}, 1, {})


def _matmul_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return sum(v for op, v in counter.get_flop_counts()["Global"].items() if "mm" in str(op))


def test_work_count_equals_torchs_count_of_the_same_forwards(neox):
    model = neox.model
    shapes = replace(shapes_of(model), width=0)  # linear maps only: torch counts attention over the full square
    prompt = [5, 6, 7, 8, 9]
    pairs = [_pair("p", prompt, [[11], [12]])]
    baseline = [Condition("baseline", (), "corrupted", "m", "baseline")]
    work = needed_flops(shapes, pairs, baseline, max_new_tokens=1)
    assert set(work) == {"above", "logits"}  # one token decoded from the prefill; single-token answers
    prefill = _matmul_flops(lambda: model(torch.tensor([prompt]), logits_to_keep=1))
    assert work["above"]["flops"] + work["logits"]["flops"] == prefill

    two_steps = needed_flops(shapes, pairs, baseline, max_new_tokens=3)["decode"]["flops"]
    step = _matmul_flops(lambda: model(torch.tensor([[3]])))
    assert two_steps == 2 * step  # each further greedy step: every layer and the output layer, one token

    not_decoded = [replace(baseline[0], decode=False)]
    assert "decode" not in needed_flops(shapes, pairs, not_decoded, max_new_tokens=3)


def test_layers_below_the_lowest_patch_count_once_per_prompt_however_many_conditions(neox):
    shapes = shapes_of(neox.model)
    pairs = [_pair("p", [5, 6, 7, 8], [[11, 13], [12]]), _pair("q", [5, 6, 7], [[11, 13], [12]])]
    one = [Condition("g", ((2, 0),), "corrupted", "m", "group")]
    many = one + [Condition(f"h{i}", ((2, i),), "corrupted", "m", "head", decode=False) for i in range(1, 6)]
    a, b = needed_flops(shapes, pairs, one, 20), needed_flops(shapes, pairs, many, 20)
    assert a["below"] == b["below"] and b["above"]["flops"] == 6 * a["above"]["flops"]
    assert a["decode"] == b["decode"]  # the added conditions are not decoded


def test_throughput_and_floor_seconds(neox):
    shapes = shapes_of(neox.model)
    rate = matmul_throughput(shapes, 8, torch.float32, torch.device("cpu"), seconds=0.2)
    assert rate > 1e6
    work = {"x": {"flops": 2 * rate, "rows": "decode"}, "y": {"flops": rate, "rows": "prefill"}}
    assert floor_seconds(work, {"decode": rate, "prefill": 2 * rate}) == 2.5


def test_an_answer_that_begins_another_needs_no_forward_of_its_own():
    from pythia_sweep.measure.floor import branch_inputs

    # " 9" "." "8" and " 9" "." "1" "1": the second's forward over " 9" "." "1" holds the first's logits
    assert branch_inputs([[9, 0, 8], [9, 0, 1, 1]]) == [(9, 0, 1)]
    assert branch_inputs([[9, 0, 8], [7, 0, 8], [5]]) == [(7, 0), (9, 0)]  # one-token answers need none


def test_decoding_below_the_patch_counts_once_per_prompt(neox):
    shapes = shapes_of(neox.model)
    pairs = [_pair("p", [5, 6, 7, 8], [[11], [12]])]
    one = [Condition("g", ((2, 0),), "corrupted", "m", "group")]
    two = one + [Condition("h", ((2, 1),), "corrupted", "m", "group")]
    a, b = (needed_flops(shapes, pairs, c, 5)["decode"]["flops"] for c in (one, two))
    every_layer = needed_flops(shapes, pairs, [replace(one[0], heads=((0, 0),))], 5)["decode"]["flops"]
    assert a == every_layer  # one row: the same work, wherever it is split
    assert 0 < b - a < a  # a second condition of the prompt adds only its layers from the patch up
