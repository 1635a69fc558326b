"""The conditions of one checkpoint (conditions.py) over its prompt pairs: one result row per (condition, prompt).

Two executors compute the same rows. `evaluate` is the fast one, in numbered steps:
  1. the clean prompts' activations at each patched layer, once per prompt (the forward stops at the deepest);
  2. rows batched by prompt (all conditions of a prompt together), each with its patch plan: which heads'
     columns of which positions take the clean activation (left padding shifts the corrupted positions);
  3. per batch, fastpath.score_and_generate: the layers below the lowest patch run once per distinct prompt,
     each row's patched prompt once; its KV cache serves teacher-forced scoring of every answer and greedy
     decoding of the conditions whose metrics read a generation (a rule decided early, first-answer, stops
     decoding a row once its outcome is fixed);
  4. each row's response, success and answer log-probabilities (log-sum over the correct and the wrong answers).
`reference.evaluate_plainly` is the plain one (one prompt at a time, separate forwards and `generate`), which
the fast one is tested against and which runs a model the fast path does not support (`run_conditions`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from scipy.special import logsumexp

from pythia_sweep.measure.conditions import Condition
from pythia_sweep.config import EXECUTORS
from pythia_sweep.errors import ConfigError, NonFiniteNumbers, UnsupportedModel
from pythia_sweep.measure.batch import eos_ids, pad, pad_id_of
from pythia_sweep.measure.fastpath import score_and_generate, unsupported_reason
from pythia_sweep.measure.patching import AttentionLayout, capture, empty_plan, fill_plan, head_columns
from pythia_sweep.task.align import shown_generation
from pythia_sweep.measure.reference import evaluate_plainly
from pythia_sweep.measure.scoring import check_finite, describe_rows
from pythia_sweep.task.definition import TokenizedPair

def choose_executor(model, wanted: str) -> tuple[str, str | None]:
    """The executor that runs `model` ("fast" or "plain") and, for plain, why. "auto" takes the fast path where
    it is supported and says why not where it is not; "fast" refuses a model it cannot run."""
    if wanted not in EXECUTORS:
        raise ConfigError("executor", wanted, f"one of {', '.join(EXECUTORS)}")
    if wanted == "plain":
        return "plain", 'asked for (executor = "plain")'
    problem = unsupported_reason(model)
    if problem is None:
        return "fast", None
    if wanted == "fast":
        raise UnsupportedModel(f'executor = "fast" cannot run this model: {problem}; use "auto" or "plain"')
    return "plain", problem


def run_conditions(executor: str, *work, max_new_tokens: int, batch_size: int, batching: dict | None = None) -> list[dict]:
    """The rows of `evaluate` (executor "fast") or of `reference.evaluate_plainly` ("plain"; see choose_executor).
    `work` is their positional arguments: model, tokenizer, layout, pairs, conditions, methods, success."""
    if executor == "plain":
        check_plain_greedy(work[0])
        return evaluate_plainly(*work, max_new_tokens=max_new_tokens)
    return evaluate(*work, max_new_tokens=max_new_tokens, batch_size=batch_size, batching=batching)


def release_memory(device: torch.device) -> None:
    """Give a failed batch's cached blocks back to the device before the smaller retry."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.inference_mode()
def evaluate(
    model,
    tokenizer,
    layout: AttentionLayout,
    pairs: Sequence[TokenizedPair],
    conditions: Sequence[Condition],
    methods: dict[str, dict[str, str]],
    success: Callable[[str, Sequence[str], Sequence[str]], bool],
    *,
    max_new_tokens: int,
    batch_size: int,
    share_below: bool = True,
    batching: dict | None = None,
) -> list[dict]:
    """One result row per (condition, prompt): response, success, and the answers' log-probabilities.

    `pairs` carry their token ids and, per alignment mode in `methods`, their aligned positions. A condition
    that is not decoded has response and success None. `share_below=False` runs every row through every
    layer (the reference the shared path is tested against). A batch that runs out of device memory is run
    again with half its rows, down to one row; `batching` (if given) gets the rows per batch used and how many
    halvings it took. A batch that gives a NaN or an infinity (logits, an answer's log-probability) raises
    NonFiniteNumbers naming its rows: checkpoint.run_checkpoint measures the checkpoint again in a wider dtype.
    """
    batching = {} if batching is None else batching
    device = next(model.parameters()).device
    check_plain_greedy(model)
    pad_id = pad_id_of(tokenizer)
    eos = eos_ids(model)
    ends = set(eos.tolist())  # where `generate` stops: what follows in a row is padding
    by_id = {tp.pair.id: tp for tp in pairs}
    layers_by_site: dict[str, set[int]] = defaultdict(set)
    for c in conditions:
        layers_by_site[methods[c.method]["site"]].update(layer for layer, _ in c.heads)
    sources = {  # site -> layer -> prompt id -> clean activation (Tc, C), computed once per prompt
        site: clean_activations(model, layout, site, sorted(layers), pairs, pad_id, batch_size, device)
        for site, layers in layers_by_site.items() if layers
    }  # fmt: skip
    columns = {heads: head_columns(heads, layout.head_dim) for c in conditions for heads in c.by_layer().values()}
    # a rule whose outcome is fixed before max_new_tokens (first-answer) stops decoding a row there
    decided = success.decided if getattr(success, "can_decide_early", False) else None

    results: dict[tuple[str, str], dict] = {}
    for label, method in methods.items():
        own = [c for c in conditions if c.method == label]
        if not own:
            continue
        every_step = method["patch_during"] == "every-step"
        patched_layers = [layer for c in own for layer, _ in c.heads]
        depth = min(patched_layers, default=0) if share_below else 0  # layers below it are the same for every condition
        group = [(cond, tp.pair) for tp in pairs for cond in own]  # by prompt: a batch holds few distinct prompts
        # `batch_size` rows are decoded at a time; rows only scored ride along (up to as many again), so that
        # decoding steps keep the batch's width where small matmuls waste the most
        per_batch = min(2 * batch_size, batch_size * len(own) // max(1, sum(c.decode for c in own)))
        start = 0
        while start < len(group):
            chunk = group[start : start + per_batch]
            seqs = [by_id[pair.id].ids[cond.prompt] for cond, pair in chunk]
            width = max(len(s) for s in seqs)
            layers = sorted({layer for cond, _ in chunk for layer, _ in cond.heads})
            plans = {layer: empty_plan(len(chunk), width, layout.width, model.dtype, device, every_step) for layer in layers}
            for r, (cond, pair) in enumerate(chunk):
                for layer, heads in cond.by_layer().items():  # left padding shifts the corrupted positions
                    fill_plan(
                        plans[layer], r, sources[method["site"]][layer][pair.id], by_id[pair.id].alignments[method["align"]],
                        columns[heads], offset=width - len(seqs[r]), every_step=every_step,
                    )  # fmt: skip
            continuations = [by_id[pair.id].answers[cond.prompt] for cond, pair in chunk]
            stop = None
            if decided is not None:
                answers = [(pair.correct, pair.wrong) for _, pair in chunk]
                stop = lambda r, tokens: decided(tokenizer.decode(tokens, skip_special_tokens=True), *answers[r])  # noqa: E731
            try:
                logprobs, new_tokens = score_and_generate(
                    model, layout, method["site"], plans, seqs, continuations, max_new_tokens, pad_id, eos,
                    decode=[cond.decode for cond, _ in chunk], depth=depth, decided=stop,
                )  # fmt: skip
            except NonFiniteNumbers as error:  # said with the batch's conditions and prompts
                raise NonFiniteNumbers(f"{error} in the batch of {describe_rows(chunk)}") from error
            except torch.OutOfMemoryError:  # the batch does not fit: the same rows again, half as many at a time
                if len(chunk) == 1:
                    raise
                del plans
                release_memory(device)
                per_batch = len(chunk) // 2
                batching["halvings"] = batching.get("halvings", 0) + 1
                continue
            check_finite(logprobs, chunk, model.dtype)
            batching["rows_per_batch"] = min(batching.get("rows_per_batch", per_batch), per_batch)
            start += len(chunk)
            for r, (cond, pair) in enumerate(chunk):
                response = tokenizer.decode(new_tokens[r], skip_special_tokens=True) if cond.decode else None
                shown = shown_generation(tokenizer, new_tokens[r], ends) if cond.decode else None
                n = by_id[pair.id].n_correct
                correct, wrong = logprobs[r][:n], logprobs[r][n:]
                results[(cond.name, pair.id)] = {
                    "condition": cond.name,
                    "prompt_id": pair.id,
                    "weight": pair.weight,
                    "response": response,  # what the success rule reads: decoded without special tokens
                    "generation": shown,  # what a person reads: special tokens shown (task.align.shown_generation)
                    "success": None if response is None else bool(success(response, pair.correct, pair.wrong)),
                    "logprob_correct": float(logsumexp(correct)),  # log sum p over the correct answers
                    "logprob_wrong": float(logsumexp(wrong)),
                    "logprob_diff": float(logsumexp(correct)) - float(logsumexp(wrong)),
                    "prob_diff": sum(math.exp(v) for v in correct) - sum(math.exp(v) for v in wrong),
                }
    return [results[(cond.name, tp.pair.id)] for cond in conditions for tp in pairs]  # in (condition, prompt) order


# Generation-config fields with which `generate(do_sample=False)` would no longer be plain greedy, and the
# values that leave it plain. The sweep measures plain greedy with either executor: the fast path's loop is
# plain greedy, and the plain executor's `generate` would read these fields.
GREEDY_AS_IS = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "min_length": 0,
    "min_new_tokens": None, "sequence_bias": None,
}  # fmt: skip


def check_plain_greedy(model) -> None:
    """Refuse a model whose generation config would make `generate` something other than plain greedy."""
    config = getattr(model, "generation_config", None)
    for field, plain in GREEDY_AS_IS.items():
        value = getattr(config, field, None)
        if value is not None and value != plain:
            raise UnsupportedModel(
                f"generation_config.{field}={value!r}: the sweep decodes plain greedy, which needs "
                f"{field}={plain!r}; set it on the model's generation config to measure this model"
            )


def clean_activations(model, layout, site, layers, pairs, pad_id, batch_size, device) -> dict[int, dict[str, torch.Tensor]]:
    """Clean-prompt activations at the site of each layer, (Tc, C) per prompt id; the forward stops at
    the deepest layer."""
    acts: dict[int, dict[str, torch.Tensor]] = {layer: {} for layer in layers}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [tp.ids["clean"] for tp in chunk]
        input_ids, attention = pad(seqs, pad_id, left=False, device=device)
        seen = capture(model, layout, site, layers, input_ids=input_ids, attention_mask=attention)  # layer -> (B, Tc, C)
        for layer, batch in seen.items():
            for r, tp in enumerate(chunk):
                acts[layer][tp.pair.id] = batch[r, : len(seqs[r])]  # (Tc, C)
    return acts

