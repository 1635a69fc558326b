"""The conditions of one checkpoint, run as batched forward and generate calls.

Per checkpoint and prompt: baseline (buggy prompt, no patch), clean (clean prompt, no patch), even heads,
odd heads, all heads, each single head, and K random head subsets the size of the even set (the null
control). Each (condition, prompt) is one row. Rows are batched, and each batch runs its patched prompts
once: that prefill's KV cache is shared by the teacher-forced scoring of both answers and by greedy
decoding (a small loop that mirrors `generate`), so no prompt is run twice. The clean prompts'
activations are computed once per prompt, stopping at the patched layer, and shared by every condition.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from pythia_sweep.errors import UnsupportedModel
from pythia_sweep.patching import (
    AttentionLayout,
    PatchPlan,
    capture,
    empty_plan,
    fill_plan,
    head_columns,
    patched,
)
from pythia_sweep.prompts import PromptPair, align_positions
from pythia_sweep.scoring import check_bug_fixed


@dataclass(frozen=True)
class Condition:
    name: str  # "baseline", "clean", "even", "odd", "all", "head03", "null07"; "upstream/even" for a 2nd method
    heads: tuple[int, ...]  # patched heads; () = no patch
    prompt: str  # which prompt is run: "buggy" or "clean"
    method: str  # label of the measuring method (site/align/patch_during), see SweepConfig.methods


def null_subsets(n_heads: int, size: int, count: int, seed: int, exclude: Sequence[tuple[int, ...]] = ()) -> list[tuple[int, ...]]:
    """`count` distinct random head subsets of `size` (seeded: the same subsets at every checkpoint)."""
    rng = random.Random(seed)
    seen = {tuple(sorted(s)) for s in exclude}
    subsets: list[tuple[int, ...]] = []
    attempts = 0
    while len(subsets) < count and attempts < 100 * count:
        attempts += 1
        subset = tuple(sorted(rng.sample(range(n_heads), size)))
        if subset not in seen:
            seen.add(subset)
            subsets.append(subset)
    return subsets


def make_conditions(config, n_heads: int) -> list[Condition]:
    methods = list(config.methods)
    primary = methods[0]
    conditions = [Condition("baseline", (), "buggy", primary), Condition("clean", (), "clean", primary)]
    for label in methods:
        prefix = "" if label == primary else f"{label}/"
        conditions += [
            Condition(prefix + "even", tuple(config.even_heads), "buggy", label),
            Condition(prefix + "odd", tuple(config.odd_heads), "buggy", label),
            Condition(prefix + "all", tuple(range(n_heads)), "buggy", label),
        ]
    if config.single_heads:
        conditions += [Condition(f"head{h:02d}", (h,), "buggy", primary) for h in range(n_heads)]
    exclude = (tuple(config.even_heads), tuple(config.odd_heads))
    for i, subset in enumerate(null_subsets(n_heads, len(config.even_heads), config.null_subsets, config.seed, exclude)):
        conditions.append(Condition(f"null{i:02d}", subset, "buggy", primary))
    return conditions


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _answer_ids(tokenizer, prompt: str, prompt_ids: list[int], answer: str) -> list[int]:
    """Tokens of " <answer>" continuing the prompt, checked to extend the prompt's own tokens."""
    full = _encode(tokenizer, f"{prompt} {answer}")
    if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
        raise ValueError(f"answer {answer!r} does not tokenize as a continuation of prompt {prompt!r}")
    return full[len(prompt_ids) :]


@torch.inference_mode()
def evaluate(
    model,
    tokenizer,
    layout: AttentionLayout,
    prompts: Sequence[PromptPair],
    conditions: Sequence[Condition],
    methods: dict[str, dict[str, str]],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[dict]:
    """One result row per (condition, prompt): response, success, and log-prob of each answer."""
    device = next(model.parameters()).device
    check_plain_greedy(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model)
    ids = {(p.id, side): _encode(tokenizer, getattr(p, side)) for p in prompts for side in ("clean", "buggy")}
    answers = {
        (p.id, side, kind): _answer_ids(tokenizer, getattr(p, side), ids[(p.id, side)], getattr(p, kind))
        for p in prompts
        for side in ("clean", "buggy")
        for kind in ("correct", "wrong")
    }
    patched_methods = {c.method for c in conditions if c.heads}
    sources = {  # site -> prompt id -> clean activation (Tc, C), computed once per prompt
        site: _clean_activations(model, layout, site, prompts, ids, pad_id, batch_size, device)
        for site in {methods[m]["site"] for m in patched_methods}
    }
    alignments = {
        (p.id, align): align_positions(tokenizer, p.clean, p.buggy, align)
        for p in prompts
        for align in {methods[m]["align"] for m in patched_methods}
    }
    columns = {c.heads: head_columns(c.heads, layout.head_dim) for c in conditions}

    rows = [(c, p) for c in conditions for p in prompts]
    by_method: dict[str, list] = defaultdict(list)
    for row in rows:
        by_method[row[0].method].append(row)

    results: dict[tuple[str, str], dict] = {}
    for label, group in by_method.items():
        method = methods[label]
        every_step = method["patch_during"] == "every-step"

        def fill(plan, r, cond, pair, offset):
            if cond.heads:
                fill_plan(
                    plan, r, sources[method["site"]][pair.id], alignments[(pair.id, method["align"])],
                    columns[cond.heads], offset=offset, every_step=every_step,
                )  # fmt: skip

        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            seqs = [ids[(pair.id, cond.prompt)] for cond, pair in chunk]
            width = max(len(s) for s in seqs)
            plan = empty_plan(len(chunk), width, layout.n_heads * layout.head_dim, model.dtype, device, every_step)
            for r, (cond, pair) in enumerate(chunk):
                fill(plan, r, cond, pair, width - len(seqs[r]))  # left padding shifts the buggy positions
            continuations = [
                [answers[(pair.id, cond.prompt, kind)] for kind in ("correct", "wrong")] for cond, pair in chunk
            ]
            logprobs, new_tokens = score_and_generate(
                model, layout, method["site"], plan, seqs, continuations, max_new_tokens, pad_id, eos_ids
            )
            for r, (cond, pair) in enumerate(chunk):
                response = tokenizer.decode(new_tokens[r], skip_special_tokens=True)
                correct, wrong = logprobs[r]
                results[(cond.name, pair.id)] = {
                    "condition": cond.name,
                    "prompt_id": pair.id,
                    "weight": pair.weight,
                    "response": response,
                    "success": check_bug_fixed(response, pair.correct, pair.wrong),
                    "logprob_correct": correct,
                    "logprob_wrong": wrong,
                    "logprob_diff": correct - wrong,
                }
    return [results[(cond.name, pair.id)] for cond, pair in rows]  # in (condition, prompt) order


def score_and_generate(
    model,
    layout: AttentionLayout,
    site: str,
    plan: PatchPlan,
    prompts: list[list[int]],
    continuations: list[list[list[int]]],
    max_new_tokens: int,
    pad_id: int,
    eos_ids: torch.Tensor,
) -> tuple[list[list[float]], list[list[int]]]:
    """Per row: the summed log-probability of each of its continuations, and its greedy new tokens.

    The patched prompt is run once: its KV cache is shared by the teacher-forced continuations (a copy,
    one branch per continuation, with the step patch) and by greedy decoding. Decoding follows
    `generate(do_sample=False)`: positions from the attention mask, a row that emits EOS is padded from
    then on, and decoding ends once every row has.
    """
    input_ids, attention = _pad(prompts, pad_id, left=True, device=next(model.parameters()).device)  # (B, T)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)  # (B, T), as generate makes them
    cache = DynamicCache(config=model.config)
    with patched(model, layout, site, plan):  # first call: the prompt patch; later calls: the step patch
        first = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
            use_cache=True, logits_to_keep=1,
        ).logits[:, -1].float()  # (B, V)  # fmt: skip
        branches = copy.deepcopy(cache) if any(len(c) > 1 for row in continuations for c in row) else None
        new_tokens = _greedy(model, cache, first, attention, max_new_tokens, pad_id, eos_ids)
    logprobs = _continuation_logprobs(model, layout, site, plan, branches, first, attention, continuations, pad_id)
    return logprobs, new_tokens


def _greedy(model, cache, logits, attention, max_new_tokens, pad_id, eos_ids) -> list[list[int]]:
    """Greedy tokens (B, <= max_new_tokens) continuing the prompts in `cache`; `logits` (B, V) is the prefill's."""
    batch = attention.shape[0]
    next_position = attention.sum(-1, keepdim=True)  # (B, 1): the first new token's position
    unfinished = torch.ones(batch, dtype=torch.bool, device=attention.device)
    ones = torch.ones((batch, 1), dtype=attention.dtype, device=attention.device)
    steps = []
    for step in range(max_new_tokens):
        token = torch.where(unfinished, logits.argmax(-1), pad_id)  # (B,)
        steps.append(token)
        unfinished &= ~torch.isin(token, eos_ids)
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        attention = torch.cat([attention, ones], dim=-1)  # (B, T + step + 1)
        logits = model(
            input_ids=token[:, None], attention_mask=attention, position_ids=next_position + step,
            past_key_values=cache, use_cache=True,
        ).logits[:, -1].float()  # (B, V)  # fmt: skip
    return torch.stack(steps, dim=1).tolist()  # max_new_tokens >= 1: at least one step


def _continuation_logprobs(model, layout, site, plan, cache, logits, attention, continuations, pad_id) -> list[list[float]]:
    """Summed log-probs of each row's K continuations: the first token from the prefill's `logits` (B, V),
    the rest from one forward of every (row, continuation) branch over a copy of the prompt's cache."""
    first = torch.log_softmax(logits, dim=-1)  # (B, V)
    totals = [[first[r, c[0]].item() for c in row] for r, row in enumerate(continuations)]
    if cache is None:  # every continuation is one token long
        return totals
    k = len(continuations[0])
    inputs = [c[:-1] for row in continuations for c in row]  # token j-1 predicts token j
    input_ids, mask = _pad(inputs, pad_id, left=False, device=attention.device)  # (B*K, L), right padding
    cache.batch_repeat_interleave(k)
    attention = torch.cat([attention.repeat_interleave(k, dim=0), mask], dim=-1)  # (B*K, T + L)
    positions = attention[:, : -mask.shape[1]].sum(-1, keepdim=True) + torch.arange(mask.shape[1], device=mask.device)
    with patched(model, layout, site, plan.steps_only(k)):
        logp = torch.log_softmax(
            model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache).logits.float(),
            dim=-1,
        )  # (B*K, L, V)  # fmt: skip
    for i, row in enumerate(continuations):
        for j, c in enumerate(row):
            rest = torch.tensor(c[1:], device=logp.device)
            totals[i][j] += logp[i * k + j, torch.arange(len(rest), device=logp.device), rest].sum().item()
    return totals


# Generation-config fields with which `generate(do_sample=False)` would no longer be plain greedy, and
# the values that leave it plain. The greedy loop here implements plain greedy only.
GREEDY_AS_IS = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "min_length": 0,
    "min_new_tokens": None, "sequence_bias": None,
}  # fmt: skip


def check_plain_greedy(model) -> None:
    """Refuse a model whose generation config would make `generate` differ from the greedy loop here."""
    config = getattr(model, "generation_config", None)
    for field, plain in GREEDY_AS_IS.items():
        value = getattr(config, field, None)
        if value is not None and value != plain:
            raise UnsupportedModel(
                f"generation_config.{field}={value!r}: the sweep decodes plain greedy, which needs "
                f"{field}={plain!r}; set it on the model's generation config to measure this model"
            )


def _eos_ids(model) -> torch.Tensor:
    """The token ids that end generation, as `generate` reads them from the generation config."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return torch.tensor(eos, dtype=torch.long, device=next(model.parameters()).device)


def _clean_activations(model, layout, site, prompts, ids, pad_id, batch_size, device) -> dict[str, torch.Tensor]:
    """Clean-prompt activations at the site, (Tc, C) per prompt id; the forward stops at the site's layer."""
    acts = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seqs = [ids[(p.id, "clean")] for p in chunk]
        input_ids, attention = _pad(seqs, pad_id, left=False, device=device)
        seen = capture(model, layout, site, input_ids=input_ids, attention_mask=attention)  # (B, Tc, C)
        for r, p in enumerate(chunk):
            acts[p.id] = seen[r, : len(seqs[r])]  # (Tc, C)
    return acts


def _pad(seqs: list[list[int]], pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        input_ids[r, span] = torch.tensor(s)
        attention[r, span] = 1
    return input_ids.to(device), attention.to(device)
