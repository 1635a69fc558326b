"""The fast path: a checkpoint's patched rows scored and decoded with no work done twice.

What it computes is evaluation.evaluate's (and reference.evaluate_plainly's, the plain way it is tested
against row by row); this module is how, and it leans on parts of transformers that are not its public API:
  - the decoder's layers as `model.base_model.layers` (a ModuleList it swaps to run from a layer on, each
    attention keeping its `layer_idx`), and a forward that takes inputs_embeds, position_ids, past_key_values
    and logits_to_keep;
  - DynamicCache's per-layer keys and values (`cache.layers[i].keys`), copied between rows; plain
    `DynamicLayer`s only (a sliding-window layer crops what it keeps);
  - patch hooks registered before a layer swap (module paths shift while swapped).
`unsupported_reason` checks those before a model is run, so a model without them runs the plain way instead
(evaluation.run_conditions) rather than failing or, worse, measuring something else.

Steps, as score_and_generate runs them for a batch of rows:
  1. below the lowest patched layer, run each distinct prompt once (`run_below`), keep its KV cache;
  2. from that layer on, run every row with its patch (`layers_from`), one prefill per row;
  3. decode greedily from the prefill's cache (`_greedy`, mirroring `generate(do_sample=False)`), the layers
     below the patch shared by rows whose tokens so far agree (`_SharedStep`);
  4. score each answer teacher-forced from a copy of the prefill's cache (`_continuation_logprobs`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from pythia_sweep.errors import NonFiniteNumbers
from pythia_sweep.measure.batch import distinct_rows, non_finite_rows, pad
from pythia_sweep.measure.patching import AttentionLayout, ForwardStopped, PatchPlan, patched

FORWARD_ARGUMENTS = ("input_ids", "inputs_embeds", "attention_mask", "position_ids", "past_key_values", "use_cache", "logits_to_keep")


def unsupported_reason(model) -> str | None:
    """Why the fast path cannot run `model` (None: it can): what it relies on, checked before anything runs."""
    base = getattr(model, "base_model", None)
    layers = getattr(base, "layers", None)
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) != n_layers:
        return f"{type(model).__name__} keeps no list of its {n_layers} decoder layers at base_model.layers"
    if not all(any(getattr(m, "layer_idx", None) == i for m in layer.modules()) for i, layer in enumerate(layers)):
        return f"{type(model).__name__}'s attention modules do not carry their layer_idx"
    accepted = inspect.signature(model.forward).parameters
    missing = [a for a in FORWARD_ARGUMENTS if a not in accepted]
    if missing:
        return f"{type(model).__name__}.forward takes no {', '.join(missing)}"
    kinds = {type(layer).__name__ for layer in DynamicCache(config=model.config).layers if type(layer) is not DynamicLayer}
    if kinds:
        return f"its cache has {', '.join(sorted(kinds))} layers (the fast path copies plain DynamicLayer caches only)"
    return None


@dataclass
class SharedBelow:
    """The layers below `depth` for the distinct prompts of a batch: every row's condition patches at
    `depth` or above, so below it a row is its prompt's. `rows` maps each batch row to its distinct prompt."""

    depth: int
    rows: torch.Tensor  # (B,) index into the distinct prompts
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer below depth: keys, values (U, H_kv, T, D)

    def cache_for(self, model, picks: torch.Tensor) -> DynamicCache:
        """A fresh cache holding the layers below `depth` for the distinct prompts `picks` (N,)."""
        cache = DynamicCache(config=model.config)
        for layer, (keys, values) in enumerate(self.kv):
            cache.update(keys[picks], values[picks], layer)
        return cache


def run_below(model, depth: int, cache: DynamicCache, **inputs) -> torch.Tensor:
    """The hidden state entering layer `depth` (N, T, C); the forward stops there, `cache` holds the layers below."""
    seen = {}

    def stop(_module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise ForwardStopped

    handle = model.base_model.layers[depth].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model(**inputs, past_key_values=cache, use_cache=True)
    except ForwardStopped:
        pass
    finally:
        handle.remove()
    return seen["hidden"]


@contextlib.contextmanager
def layers_from(model, depth: int) -> Iterator[None]:
    """Run the model's forward from layer `depth` on: its inputs_embeds are the hidden state entering that
    layer. Swapping the decoder's layer list (and putting it back) keeps the model's own mask, rotary and
    cache handling; each attention keeps its `layer_idx`, so the cache is filled at the right layers. Patch
    hooks must be registered before (module paths shift while swapped)."""
    base = model.base_model
    every = base.layers
    base.layers = torch.nn.ModuleList(list(every)[depth:])
    try:
        yield
    finally:
        base.layers = every


def score_and_generate(
    model,
    layout: AttentionLayout,
    site: str,
    plans: dict[int, PatchPlan],
    prompts: list[list[int]],
    continuations: list[list[list[int]]],
    max_new_tokens: int,
    pad_id: int,
    eos_ids: torch.Tensor,
    *,
    decode: Sequence[bool] | None = None,
    depth: int = 0,
    decided: Callable[[int, list[int]], bool] | None = None,
) -> tuple[list[list[float]], list[list[int]]]:
    """Per row: the summed log-probability of each of its continuations, and its greedy new tokens ([] for a
    row not in `decode`).

    `plans` patch the prompt, one per patched layer, all at `depth` or above: the layers below run once per
    distinct prompt (depth 0: every row runs every layer). The patched prompt is run once: its KV cache is
    shared by the teacher-forced continuations (a copy, one branch per continuation longer than one token,
    with the step patch) and by greedy decoding. Decoding follows `generate(do_sample=False)`: positions
    from the attention mask, a row that emits EOS (or whose outcome `decided(row, tokens)` says is fixed) is
    padded from then on, and decoding ends once every row has. A NaN or an infinity in the logits (the prefill's or a
    decoding step's) raises NonFiniteNumbers: a number read off them would not be one.
    """
    device = next(model.parameters()).device
    decode = [True] * len(prompts) if decode is None else list(decode)
    input_ids, attention = pad(prompts, pad_id, left=True, device=device)  # (B, T)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)  # (B, T), as generate makes them
    cache = DynamicCache(config=model.config)
    below = None
    if depth > 0:
        firsts, rows = (torch.tensor(v, device=device) for v in distinct_rows([tuple(p) for p in prompts]))
        lower = DynamicCache(config=model.config)
        hidden = run_below(model, depth, lower, input_ids=input_ids[firsts], attention_mask=attention[firsts], position_ids=positions[firsts])
        below = SharedBelow(depth, rows, [(lower.layers[i].keys, lower.layers[i].values) for i in range(depth)])
        with patched(model, layout, site, plans), layers_from(model, depth):
            first = model(
                inputs_embeds=hidden[rows], attention_mask=attention, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1,
            ).logits[:, -1].float()  # (B, V)  # fmt: skip
        for layer, (keys, values) in enumerate(below.kv):  # the rows' own copies of the shared layers
            cache.layers[layer].update(keys[rows], values[rows])
    else:
        with patched(model, layout, site, plans):
            first = model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1,
            ).logits[:, -1].float()  # (B, V)  # fmt: skip
    if not torch.isfinite(first).all():
        raise NonFiniteNumbers(f"non-finite logits after the prompt in {model.dtype} (rows {non_finite_rows(first)})")
    decoded = [r for r, d in enumerate(decode) if d]
    multi_token = any(len(c) > 1 for row in continuations for c in row)
    branches = copy.deepcopy(cache) if multi_token and decoded else cache
    new_tokens: list[list[int]] = [[] for _ in prompts]
    if decoded:
        picks = torch.tensor(decoded, device=device)
        if len(decoded) < len(prompts):
            cache.batch_select_indices(picks)
        steps = {layer: plan.steps_only(picks) for layer, plan in plans.items()}
        stop = None if decided is None else (lambda i, tokens: decided(decoded[i], tokens))
        step = _plain_step if below is None else _SharedStep(model, below, below.rows[picks])
        with patched(model, layout, site, steps):
            for i, tokens in enumerate(_greedy(model, cache, first[picks], attention[picks], max_new_tokens, pad_id, eos_ids, stop, step)):
                new_tokens[decoded[i]] = tokens
    logprobs = _continuation_logprobs(model, layout, site, plans, branches, first, attention, continuations, pad_id, below)
    return logprobs, new_tokens


def _plain_step(model, token, attention, position, cache) -> torch.Tensor:
    """One decoding step through every layer: the next logits (B, V) for `token` (B,)."""
    return model(
        input_ids=token[:, None], attention_mask=attention, position_ids=position, past_key_values=cache, use_cache=True
    ).logits[:, -1].float()  # fmt: skip


class _SharedStep:
    """A decoding step whose layers below the patch run once per group of rows with the same prompt and the
    same tokens so far (conditions of a prompt mostly generate alike; below the patch they are the same
    computation). Groups split when their rows' tokens part; a group's cache below is copied as it splits."""

    def __init__(self, model, below: SharedBelow, groups: torch.Tensor):
        self.depth, self.groups = below.depth, groups  # (B,) row -> its group in self.lower
        self.lower = below.cache_for(model, torch.arange(len(below.kv[0][0]), device=groups.device))

    def __call__(self, model, token, attention, position, cache) -> torch.Tensor:
        keys = torch.stack([self.groups, token], dim=1)  # (B, 2): a row's group and its new token
        distinct, groups = torch.unique(keys, dim=0, return_inverse=True)  # (G, 2), (B,)
        parents = distinct[:, 0]
        if not torch.equal(parents, torch.arange(len(self.lower.layers[0].keys), device=parents.device)):  # a group split
            self.lower.batch_select_indices(parents)
        first_row = torch.full((len(distinct),), len(token), device=token.device).scatter_reduce(
            0, groups, torch.arange(len(token), device=token.device), reduce="amin"
        )  # (G,): rows of a group share prompt, padding and history, hence mask and position  # fmt: skip
        hidden = run_below(model, self.depth, self.lower, input_ids=distinct[:, 1:], attention_mask=attention[first_row],
                           position_ids=position[first_row])  # (G, 1, C)  # fmt: skip
        with layers_from(model, self.depth):
            logits = model(
                inputs_embeds=hidden[groups], attention_mask=attention, position_ids=position, past_key_values=cache, use_cache=True
            ).logits[:, -1].float()  # (B, V)  # fmt: skip
        for layer in range(self.depth):  # the rows' own layers below only give the cache its length (read by the mask)
            below = self.lower.layers[layer]
            cache.layers[layer].update(below.keys[groups, :, -1:], below.values[groups, :, -1:])
        self.groups = groups
        return logits


def _greedy(model, cache, logits, attention, max_new_tokens, pad_id, eos_ids, decided=None, step_fn=_plain_step) -> list[list[int]]:
    """Greedy tokens (B, <= max_new_tokens) continuing the prompts in `cache`; `logits` (B, V) is the prefill's.
    A row ends at EOS (kept, as `generate` keeps it) or once `decided(row, tokens)` (its tokens so far)."""
    batch = attention.shape[0]
    next_position = attention.sum(-1, keepdim=True)  # (B, 1): the first new token's position
    unfinished = torch.ones(batch, dtype=torch.bool, device=attention.device)
    ones = torch.ones((batch, 1), dtype=attention.dtype, device=attention.device)
    lengths = [max_new_tokens] * batch
    steps = []
    finite = torch.isfinite(logits).all(-1)  # (B,): kept on the device, read once decoding ends (no sync per step)
    for step in range(max_new_tokens):
        token = torch.where(unfinished, logits.argmax(-1), pad_id)  # (B,)
        steps.append(token)
        unfinished &= ~torch.isin(token, eos_ids)
        if decided is not None:
            so_far = torch.stack(steps, dim=1).tolist()
            for r in torch.nonzero(unfinished).flatten().tolist():
                if decided(r, so_far[r]):
                    unfinished[r], lengths[r] = False, step + 1
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        attention = torch.cat([attention, ones], dim=-1)  # (B, T + step + 1)
        logits = step_fn(model, token, attention, next_position + step, cache)  # (B, V)
        finite &= torch.isfinite(logits).all(-1) | ~unfinished  # a finished row's logits are not read
    if not finite.all():
        raise NonFiniteNumbers(f"non-finite logits while decoding in {model.dtype} (rows {torch.nonzero(~finite).flatten().tolist()})")
    tokens = torch.stack(steps, dim=1).tolist()  # max_new_tokens >= 1: at least one step
    return [row[:n] for row, n in zip(tokens, lengths)]


def _continuation_logprobs(model, layout, site, plans, cache, logits, attention, continuations, pad_id, below=None) -> list[list[float]]:
    """Summed log-probs of each row's continuations: the first token from the prefill's `logits` (B, V),
    the rest from forwards of (row, continuation) branches over a copy of the prompt's cache, at most 2
    branches per row at a time. A continuation whose tokens but the last begin another's is read off that
    one's branch (causal: the same logits), so answers that differ only in their last token share one
    forward. With `below`, the layers below its depth run once per distinct (prompt, continuation) and the
    rows' branches start from there."""
    first = torch.log_softmax(logits, dim=-1)  # (B, V)
    totals = [[first[r, c[0]].item() for c in row] for r, row in enumerate(continuations)]
    readers: dict[tuple[int, int], list[int]] = defaultdict(list)  # (row, branch) -> continuations read off it
    for r, row in enumerate(continuations):
        longer = [j for j, c in enumerate(row) if len(c) > 1]
        for j in longer:
            inputs = row[j][:-1]
            carrier = max((k for k in longer if row[k][: len(inputs)] == inputs), key=lambda k: len(row[k]))
            readers[(r, carrier)].append(j)
    branches = list(readers)
    if not branches:  # every continuation is one token long
        return totals
    chunk = 2 * len(continuations)
    for start in range(0, len(branches), chunk):
        part = branches[start : start + chunk]
        rows = torch.tensor([r for r, _ in part], device=attention.device)
        branch_cache = cache if len(branches) <= chunk else copy.deepcopy(cache)
        branch_cache.batch_select_indices(rows)
        inputs = [continuations[r][j][:-1] for r, j in part]  # token j-1 predicts token j
        input_ids, mask = pad(inputs, pad_id, left=False, device=attention.device)  # (N, L), right padding
        branch_attention = torch.cat([attention[rows], mask], dim=-1)  # (N, T + L)
        positions = attention[rows].sum(-1, keepdim=True) + torch.arange(mask.shape[1], device=mask.device)
        steps = {layer: plan.steps_only(rows) for layer, plan in plans.items()}
        if below is None:
            with patched(model, layout, site, steps):
                out = model(input_ids=input_ids, attention_mask=branch_attention, position_ids=positions, past_key_values=branch_cache)
        else:
            keys = [(below.rows[r].item(), tuple(inputs[i])) for i, (r, _) in enumerate(part)]  # (prompt, continuation)
            picks, spread = (torch.tensor(v, device=attention.device) for v in distinct_rows(keys))
            lower = below.cache_for(model, below.rows[rows[picks]])
            hidden = run_below(model, below.depth, lower, input_ids=input_ids[picks], attention_mask=branch_attention[picks], position_ids=positions[picks])
            with patched(model, layout, site, steps), layers_from(model, below.depth):
                out = model(inputs_embeds=hidden[spread], attention_mask=branch_attention, position_ids=positions, past_key_values=branch_cache)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # (N, L, V)
        for i, (r, k) in enumerate(part):
            for j in readers[(r, k)]:
                rest = torch.tensor(continuations[r][j][1:], device=logp.device)
                totals[r][j] += logp[i, torch.arange(len(rest), device=logp.device), rest].sum().item()
    return totals
