"""The plain way to run a checkpoint's conditions, beside the fast one: one prompt at a time, one unpadded forward
per answer (teacher-forced) and transformers' own `generate` for the text, each under the same patch plans.

Slow and obviously right. evaluation.evaluate (shared layers below the patch, one prefill shared by scoring
and a greedy loop that mirrors `generate`, batches of many rows) is tested against it row by row: the same
log-probabilities, the same generations. One difference is by design: where the task's success rule decides
early (first-answer), the fast path stops decoding a row once its outcome is fixed, so its response is a
prefix of this one's and the success is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from scipy.special import logsumexp

from pythia_sweep.measure.conditions import Condition
from pythia_sweep.measure.batch import eos_ids, pad_id_of
from pythia_sweep.measure.patching import AttentionLayout, capture, empty_plan, fill_plan, head_columns, patched
from pythia_sweep.task.align import shown_generation
from pythia_sweep.measure.scoring import check_finite
from pythia_sweep.task.definition import TokenizedPair


@torch.inference_mode()
def evaluate_plainly(
    model,
    tokenizer,
    layout: AttentionLayout,
    pairs: Sequence[TokenizedPair],
    conditions: Sequence[Condition],
    methods: dict[str, dict[str, str]],
    success: Callable[[str, Sequence[str], Sequence[str]], bool],
    *,
    max_new_tokens: int,
) -> list[dict]:
    """One row per (condition, prompt), in evaluate's order and format."""
    return [_row(model, tokenizer, layout, tp, cond, methods[cond.method], success, max_new_tokens) for cond in conditions for tp in pairs]


def _row(model, tokenizer, layout: AttentionLayout, tp: TokenizedPair, cond: Condition, method: dict, success, max_new_tokens: int) -> dict:
    device = next(model.parameters()).device
    site, every_step = method["site"], method["patch_during"] == "every-step"
    prompt = tp.ids[cond.prompt]
    by_layer = cond.by_layer()
    clean = torch.tensor([tp.ids["clean"]], device=device)
    sources = capture(model, layout, site, sorted(by_layer), input_ids=clean) if by_layer else {}  # layer -> (1, Tc, C)

    def plans(length: int) -> dict:
        """The patch of every layer the condition touches, for a sequence of `length` tokens."""
        out = {}
        for layer, heads in by_layer.items():
            plan = empty_plan(1, length, layout.width, model.dtype, device, every_step)
            fill_plan(plan, 0, sources[layer][0], tp.alignments[method["align"]], head_columns(heads, layout.head_dim), every_step=every_step)
            if every_step:  # teacher-forced answer tokens stand where decoding steps would be
                plan.mask[0, len(prompt) :] = plan.step_mask[0]
                plan.values[0, len(prompt) :] = plan.step_values[0]
            out[layer] = plan
        return out

    logprobs = []
    for answer in tp.answers[cond.prompt]:  # correct answers first, then wrong ones
        seq = prompt + answer
        with patched(model, layout, site, plans(len(seq))):
            logp = torch.log_softmax(model(torch.tensor([seq], device=device)).logits[0].float(), -1)  # (T, V)
        logprobs.append(sum(logp[i - 1, seq[i]].item() for i in range(len(prompt), len(seq))))
    response = shown = None
    if cond.decode:
        pad = pad_id_of(tokenizer)
        with patched(model, layout, site, plans(len(prompt))):
            out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        response = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        ends = set(eos_ids(model).tolist())
        shown = shown_generation(tokenizer, out[0, len(prompt) :].tolist(), ends)
    check_finite([logprobs], [(cond, tp.pair)], model.dtype)  # a NaN or an infinity is never a row's number
    correct, wrong = logprobs[: tp.n_correct], logprobs[tp.n_correct :]
    pair = tp.pair
    return {
        "condition": cond.name,
        "prompt_id": pair.id,
        "weight": pair.weight,
        "response": response,
        "generation": shown,
        "success": None if response is None else bool(success(response, pair.correct, pair.wrong)),
        "logprob_correct": float(logsumexp(correct)),
        "logprob_wrong": float(logsumexp(wrong)),
        "logprob_diff": float(logsumexp(correct)) - float(logsumexp(wrong)),
        "prob_diff": sum(math.exp(v) for v in correct) - sum(math.exp(v) for v in wrong),
    }
