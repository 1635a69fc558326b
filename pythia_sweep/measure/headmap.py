"""Which heads carry the answer, over the whole model: attribution patching of every head at once, checked by
exact patching of the heads it ranks highest.

Attribution (Nanda 2023; Syed et al. 2023, arXiv 2310.10348) is the first-order estimate of what patching head
(l, h) from the clean run into the corrupted one does to the metric M:

    attr(l, h) = sum over aligned positions (p corrupted, p' clean) of (a_clean[l, p', h] - a_corr[l, p, h]) . dM/da_corr[l, p, h]

where a is the head's output (the input of the attention output projection, the engine's `head` site) and M
the answer log-prob difference on the corrupted prompt, teacher-forced (log sum p(correct) - log sum p(wrong),
the engine's `logprob_diff`). One clean forward, one corrupted forward and one backward give every head of
every layer, where exact patching needs a forward per head. It is only a linear estimate: saturated softmaxes
and effects that cancel break it (Kramar et al. 2024, AtP*, arXiv 2403.00745), so the heads it ranks highest
(and the task's named heads) are also patched exactly, the engine's own way, and the map carries how well the
two agree.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from scipy.stats import spearmanr

from pythia_sweep.measure.conditions import Condition
from pythia_sweep.stats import Head, head_label, head_name
from pythia_sweep.errors import ConfigError, NonFiniteNumbers
from pythia_sweep.measure.evaluation import clean_activations, run_conditions
from pythia_sweep.measure.batch import pad, pad_id_of
from pythia_sweep.measure.patching import AttentionLayout, captured
from pythia_sweep.task.definition import TokenizedPair

AGREEMENT_FLOOR = 0.5  # a rank correlation below this (or fewer than half the exact top-k found) is flagged


def attribution(model, layout: AttentionLayout, pairs: Sequence[TokenizedPair], align: str, pad_id: int, batch_size: int,
                steps: int = 0) -> torch.Tensor:  # fmt: skip
    """(n_layers, n_heads): each head's attribution, the mean over prompts, in nats of the log-prob difference.

    `steps` = 0: the gradient at the corrupted run (attribution patching). `steps` = m > 0: EAP-IG-inputs (Hanna et
    al. 2024, arXiv 2403.17806), the gradient averaged over m runs whose input embeddings lie k/m of the way from the
    corrupted prompt's to the clean one's (k = 1..m); it needs clean and corrupted prompts of the same length.
    Rows are (prompt, answer) sequences of the corrupted prompt, `batch_size` rows a batch, a prompt's answers in
    one batch (its metric joins them)."""
    device = next(model.parameters()).device
    if steps:
        uneven = next((tp for tp in pairs if len(tp.ids["clean"]) != len(tp.ids["corrupted"])), None)
        if uneven is not None:
            raise ConfigError("head_map_method", "ig-inputs", f"prompts whose clean and corrupted sides are as long in tokens (the "
                              f"inputs are interpolated position by position); prompt {uneven.pair.id!r} has "
                              f"{len(uneven.ids['clean'])} and {len(uneven.ids['corrupted'])}: set same_length = true in the "
                              "task, or head_map_method = \"attribution\"")  # fmt: skip
    layers = list(range(layout.n_layers))
    with torch.no_grad():
        clean = clean_activations(model, layout, "head", layers, list(pairs), pad_id, batch_size, device)  # layer -> id -> (Tc, C)
    total = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64)
    per_batch = max(1, batch_size // max(len(tp.answers["corrupted"]) for tp in pairs))
    for start in range(0, len(pairs), per_batch):
        chunk = pairs[start : start + per_batch]
        scores = _batch_attribution(model, layout, chunk, align, clean, pad_id, device, steps)
        if not torch.isfinite(scores).all():  # a head map of NaNs ranks nothing: the batch fails, named
            bad = [head_label(layer, head) for layer, head in torch.nonzero(~torch.isfinite(scores)).tolist()]
            raise NonFiniteNumbers(f"non-finite head-map attribution for heads {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
                                   f"on prompts {', '.join(tp.pair.id for tp in chunk[:3])} in {model.dtype}")  # fmt: skip
        total += scores
    return total / len(pairs)


def _batch_attribution(model, layout, chunk, align, clean, pad_id, device, steps: int) -> torch.Tensor:
    rows = [tp.ids["corrupted"] + answer for tp in chunk for answer in tp.answers["corrupted"]]
    input_ids, attention = pad(rows, pad_id, left=False, device=device)  # (R, T), right padding: prompts at 0..
    layers = list(range(layout.n_layers))
    # token j of an answer is read at position n_prompt - 1 + j: the output layer runs only where some row reads one
    read = sorted({len(tp.ids["corrupted"]) - 1 + j for tp in chunk for answer in tp.answers["corrupted"] for j in range(len(answer))})
    column = {position: k for k, position in enumerate(read)}
    embed = model.get_input_embeddings()
    start = embed(input_ids).detach()  # (R, T, d)
    if steps:  # the same answers after the clean prompt: the path runs from the corrupted inputs to the clean ones
        clean_ids, _ = pad([tp.ids["clean"] + answer for tp in chunk for answer in tp.answers["corrupted"]], pad_id, left=False, device=device)
        towards = embed(clean_ids).detach() - start  # (R, T, d)
    exact_dtype = torch.promote_types(start.dtype, torch.float32)  # float32 at least; float64 kept
    grads, acts = None, None
    for k in range(1, steps + 1) if steps else [0]:
        embeds = (start + (k / steps) * towards if steps else start).requires_grad_(True)  # (R, T, d): the graph starts here
        with torch.enable_grad():
            with captured(model, layout, "head", layers, live=True) as seen:
                logits = model(inputs_embeds=embeds, attention_mask=attention, use_cache=False,
                               logits_to_keep=torch.tensor(read, device=device)).logits  # (R, len(read), V)  # fmt: skip
            metric = answer_metric(torch.log_softmax(logits.to(exact_dtype), dim=-1), chunk, column, device)
            step_grads = torch.autograd.grad(metric, [seen[layer][0] for layer in layers])
        step_grads = torch.stack(step_grads).to(exact_dtype)  # (L, R, T, C)
        grads = step_grads if grads is None else grads + step_grads
        if not steps:
            acts = torch.stack([seen[layer][0].detach() for layer in layers]).to(exact_dtype)  # (L, R, T, C)
    if steps:
        grads = grads / steps
        with torch.no_grad(), captured(model, layout, "head", layers) as seen:
            model(input_ids=input_ids, attention_mask=attention, use_cache=False, logits_to_keep=1)
        acts = torch.stack([seen[layer][0] for layer in layers]).to(exact_dtype)  # (L, R, T, C): the corrupted run's
    out = torch.zeros(layout.n_layers, layout.n_heads, dtype=torch.float64)
    r = 0
    for tp in chunk:
        at_corrupted = torch.tensor([c for c, _ in tp.alignments[align]], device=device)
        at_clean = torch.tensor([c for _, c in tp.alignments[align]], device=device)
        source = torch.stack([clean[layer][tp.pair.id][at_clean] for layer in layers]).to(exact_dtype)  # (L, P, C)
        for _ in tp.answers["corrupted"]:  # the prompt's activations are each row's (causal); its gradient is not
            step = (source - acts[:, r, at_corrupted]) * grads[:, r, at_corrupted]  # (L, P, C)
            out += step.sum(1).view(layout.n_layers, layout.n_heads, layout.head_dim).sum(-1).double().cpu()
            r += 1
    return out


def answer_metric(logp: torch.Tensor, chunk, column: dict[int, int], device) -> torch.Tensor:
    """The summed log-prob difference of the chunk's prompts, log sum p(correct) - log sum p(wrong), from `logp`
    (R, len(read), V) at the positions each answer token is read (`column`)."""
    metric, r = logp.new_zeros(()), 0
    for tp in chunk:
        n_prompt = len(tp.ids["corrupted"])
        sums = []
        for answer in tp.answers["corrupted"]:
            at = torch.tensor([column[n_prompt - 1 + j] for j in range(len(answer))], device=device)
            sums.append(logp[r, at, torch.tensor(answer, device=device)].sum())
            r += 1
        sums = torch.stack(sums)
        metric = metric + torch.logsumexp(sums[: tp.n_correct], 0) - torch.logsumexp(sums[tp.n_correct :], 0)
    return metric


def top_heads(scores: torch.Tensor, k: int) -> list[Head]:
    """The k heads whose attribution is largest in size: a head that moves the answer either way matters (negative
    name movers do), as AtP ranks them."""
    order = torch.argsort(scores.flatten().abs(), descending=True)[:k]
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def exact_effects(model, tokenizer, layout, pairs, heads: Sequence[Head], label: str, method: dict, success, batch_size: int,
                  executor: str = "fast") -> dict[Head, float]:  # fmt: skip
    """Each head patched alone, the engine's own way, at the site and positions attribution estimates (`head`,
    prompt positions): mean log-prob difference patched minus unpatched (teacher-forced, nothing decoded)."""
    conditions = [Condition("baseline", (), "corrupted", label, "baseline", decode=False)]
    conditions += [Condition(head_name(*h), (h,), "corrupted", label, "head", decode=False) for h in heads]
    as_estimated = {label: {**method, "site": "head", "patch_during": "prompt"}}
    rows = run_conditions(executor, model, tokenizer, layout, list(pairs), conditions, as_estimated, success,
                          max_new_tokens=1, batch_size=batch_size)  # fmt: skip
    mean = {c.name: sum(r["logprob_diff"] for r in rows if r["condition"] == c.name) / len(pairs) for c in conditions}
    return {h: mean[head_name(*h)] - mean["baseline"] for h in heads}


def agreement(scores: torch.Tensor, exact: dict[Head, float], k: int) -> dict:
    """How attribution and exact patching agree on the exactly patched heads: Spearman's rank correlation of the
    signed effects (None with fewer than 3 heads, or where either side is constant), and how many of the exact
    top-k by size (among them) attribution's top-k holds. `flagged`: the one rule for "they disagree"."""
    heads = list(exact)
    estimated, measured = [float(scores[h]) for h in heads], [exact[h] for h in heads]
    rho = None
    if len(heads) >= 3 and len(set(estimated)) > 1 and len(set(measured)) > 1:
        rho = float(spearmanr(estimated, measured).statistic)
    k = min(k, len(heads))
    found = len(set(top_heads(scores, k)) & set(sorted(heads, key=lambda h: abs(exact[h]), reverse=True)[:k]))
    flagged = (rho is not None and rho < AGREEMENT_FLOOR) or found < k / 2
    return {"rank_correlation": rho, "top_k": k, "top_k_found": found, "flagged": flagged, "size_ratio": size_ratio(scores, exact)}


def size_ratio(scores: torch.Tensor, exact: dict[Head, float], share: float = 0.1) -> float | None:
    """The median of attribution / exact effect over the checked heads that matter (|exact| at least `share` of the
    largest): below 1, the linear estimate falls short of what patching does, as it does where attention
    saturates (AtP*). None when no head's exact effect is above zero."""
    largest = max((abs(v) for v in exact.values()), default=0.0)
    if largest == 0:
        return None
    return statistics.median(float(scores[h]) / v for h, v in exact.items() if abs(v) >= share * largest)


def head_map(model, tokenizer, layout, pairs, label: str, method: dict, success, *, batch_size: int, top_k: int,
             named: Sequence[Head] = (), executor: str = "fast", steps: int = 0) -> dict:  # fmt: skip
    """The whole-model map of one checkpoint: every head's attribution (`steps`: see `attribution`), the top-k and
    the task's named heads patched exactly, and how the two agree (a record's `head_map`)."""
    scores = attribution(model, layout, pairs, method["align"], pad_id_of(tokenizer), batch_size, steps)
    verified = list(dict.fromkeys(top_heads(scores, top_k) + [tuple(h) for h in named]))
    exact = exact_effects(model, tokenizer, layout, pairs, verified, label, method, success, batch_size, executor)
    return {
        "method": "ig-inputs" if steps else "attribution", "steps": steps,  # how `attribution` was estimated
        "attribution": [[float(v) for v in row] for row in scores],  # (n_layers, n_heads), nats
        "exact": {head_name(*h): exact[h] for h in verified},
        "exact_heads": {head_name(*h): list(h) for h in verified},  # identity as data: never parsed from the name
        **agreement(scores, exact, top_k),
    }


def discover(model, tokenizer, layout, pairs, label: str, method: dict, success, *, size: int, batch_size: int, top_k: int,
             executor: str = "fast", steps: int = 0) -> dict:  # fmt: skip
    """A group left to be found (`{ discover = N }`): the N heads whose exact effect (patched alone) raises the answer
    most, among the heads attribution ranks highest (at least 2N of them are patched exactly). Run on the discovery
    half of the prompts (task.definition.discovery_split), at the model's final checkpoint, before the sweep."""
    found = head_map(model, tokenizer, layout, pairs, label, method, success, batch_size=batch_size, top_k=max(top_k, 2 * size),
                     executor=executor, steps=steps)  # fmt: skip
    by_effect = sorted(found["exact"], key=lambda name: found["exact"][name], reverse=True)[:size]
    return {
        "heads": [found["exact_heads"][name] for name in by_effect],  # [layer, head] each, largest effect first
        "exact": {name: found["exact"][name] for name in by_effect},  # nats of log-prob difference, patched alone
        "attribution": {name: found["attribution"][found["exact_heads"][name][0]][found["exact_heads"][name][1]] for name in by_effect},
        "checked": len(found["exact"]),  # heads patched exactly to choose among
        "rank_correlation": found["rank_correlation"],
        "top_k_found": found["top_k_found"],
        "top_k": found["top_k"],
    }
