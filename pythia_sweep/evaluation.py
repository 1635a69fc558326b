"""The conditions of one checkpoint, run as batched forward and generate calls.

Per checkpoint and prompt: baseline (buggy prompt, no patch), clean (clean prompt, no patch), even heads,
odd heads, all heads, each single head, and K random head subsets the size of the even set (the null
control). Each (condition, prompt) is one row. Rows are batched: one teacher-forced forward pass scores
both answers' log-probabilities, one greedy `generate` call per batch produces the responses. The clean
prompts' activations are computed once per prompt and shared by every condition that patches from them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pythia_sweep.patching import (
    AttentionLayout,
    captured,
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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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

        def fill(plan, r, cond, pair, offset, extra=()):
            if cond.heads:
                fill_plan(
                    plan, r, sources[method["site"]][pair.id], alignments[(pair.id, method["align"])],
                    columns[cond.heads], offset=offset, every_step=every_step, extra_positions=extra,
                )  # fmt: skip

        # 1. Teacher-forced log-probabilities of both answers (right padding: positions stay natural).
        items = [(cond, pair, kind) for cond, pair in group for kind in ("correct", "wrong")]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            seqs, prompt_lens = [], []
            for cond, pair, kind in chunk:
                prompt_ids = ids[(pair.id, cond.prompt)]
                seqs.append(prompt_ids + answers[(pair.id, cond.prompt, kind)])
                prompt_lens.append(len(prompt_ids))
            input_ids, attention = _pad(seqs, pad_id, left=False, device=device)  # (B, T)
            plan = empty_plan(len(chunk), input_ids.shape[1], layout.n_heads * layout.head_dim, model.dtype, device)
            for r, (cond, pair, _) in enumerate(chunk):
                fill(plan, r, cond, pair, 0, extra=range(prompt_lens[r], len(seqs[r])))
            with patched(model, layout, method["site"], plan):
                logits = model(input_ids=input_ids, attention_mask=attention).logits  # (B, T, V)
            for r, (cond, pair, kind) in enumerate(chunk):
                n, targets = prompt_lens[r], seqs[r][prompt_lens[r] :]
                logp = torch.log_softmax(logits[r, n - 1 : len(seqs[r]) - 1].float(), dim=-1)  # (A, V)
                total = logp[torch.arange(len(targets)), torch.tensor(targets, device=device)].sum().item()
                results.setdefault((cond.name, pair.id), {})[f"logprob_{kind}"] = total

        # 2. Greedy generation (left padding; generate derives positions from the attention mask).
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            seqs = [ids[(pair.id, cond.prompt)] for cond, pair in chunk]
            input_ids, attention = _pad(seqs, pad_id, left=True, device=device)  # (B, T)
            width = input_ids.shape[1]
            plan = empty_plan(len(chunk), width, layout.n_heads * layout.head_dim, model.dtype, device, every_step)
            for r, (cond, pair) in enumerate(chunk):
                fill(plan, r, cond, pair, width - len(seqs[r]))
            with patched(model, layout, method["site"], plan):
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                    do_sample=False, num_beams=1, pad_token_id=pad_id,
                )  # (B, T + new)  # fmt: skip
            for r, (cond, pair) in enumerate(chunk):
                response = tokenizer.decode(out[r, width:], skip_special_tokens=True)
                results[(cond.name, pair.id)]["response"] = response
                results[(cond.name, pair.id)]["success"] = check_bug_fixed(response, pair.correct, pair.wrong)

    table = []
    for cond, pair in rows:
        res = results[(cond.name, pair.id)]
        table.append(
            {
                "condition": cond.name,
                "prompt_id": pair.id,
                "weight": pair.weight,
                "response": res["response"],
                "success": res["success"],
                "logprob_correct": res["logprob_correct"],
                "logprob_wrong": res["logprob_wrong"],
                "logprob_diff": res["logprob_correct"] - res["logprob_wrong"],
            }
        )
    return table


def _clean_activations(model, layout, site, prompts, ids, pad_id, batch_size, device) -> dict[str, torch.Tensor]:
    acts = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seqs = [ids[(p.id, "clean")] for p in chunk]
        input_ids, attention = _pad(seqs, pad_id, left=False, device=device)
        with captured(model, layout, site) as seen:
            model(input_ids=input_ids, attention_mask=attention)
        for r, p in enumerate(chunk):
            acts[p.id] = seen[0][r, : len(seqs[r])]  # (Tc, C)
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
