"""A second line of evidence beside patching: attention patterns and in-context learning on repeated tokens.

Patching asks whether a group of heads *carries* the answer; this module asks whether heads *look* where an
induction circuit looks, and whether the model predicts a sequence better the second time it sees it. Both
come from one forward pass, with attention weights returned, over a few random repeated sequences, as
Olsson et al. (2022) and TransformerLens's head detector measure them:

    tokens   (N, T)   BOS, then L random vocabulary tokens (distinct within a sequence), then the same L again
                      T = 2L + 1 (T = 2L where the tokenizer has neither a BOS nor an EOS token to start with)

(TransformerLens prepends BOS too; it draws tokens with replacement, where distinct tokens give every row of
the second repeat exactly one earlier occurrence, and no row of the first repeat any.)

Scores, per (layer, head), from the attention weights A (N, H, T, T) (row = query position, column = key):
  previous_token  mean over query positions i >= 1 of A[i, i-1]: TransformerLens's previous-token detection
                  pattern (ones just below the diagonal).
  induction       mean over query positions i in the second repeat of the attention on the token right after
                  an earlier occurrence of token i (the prefix-matching score): TransformerLens's induction
                  detection pattern (the duplicate-token pattern shifted one key to the right).
Both read as "the share of attention on the pattern", in [0, 1], where 1 is a perfect head. TransformerLens's
`detect_head(..., error_measure="mul")` divides the same sum by every query row (all T of them), not only by
the rows where the pattern has a target; on these sequences its value is ours x 2L/(2L+1) for previous-token
and ours x L/(2L+1) for induction.

The in-context-learning score follows Olsson et al.'s "loss late in the context minus loss early", on the
repeated sequences: mean loss (nats) on the L tokens of the second repeat minus mean loss on the L tokens of the
first. Negative means the model predicts better once it has seen the sequence: an induction circuit drives it
from about 0 to several nats below 0. (Olsson et al. take token 500 minus token 50 of natural text; on random
repeated tokens the same difference isolates copying from the context.)

Everything returned is plain JSON-able data (floats, lists of lists [n_layers][n_heads]), small enough for a
Ray worker to ship beside its patching record. The model's attention implementation is switched to "eager"
for the one forward (sdpa and flash kernels return no weights) and restored afterwards, even on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from pythia_sweep.errors import ConfigError


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with the model's attention implementation set to "eager" (the one that returns attention
    weights), and put back whatever implementation it had, also when the block raises."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def start_token(tokenizer) -> int | None:
    """The token a sequence starts with: BOS, else EOS (GPT-NeoX's <|endoftext|> is both), else none."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def random_token_ids(tokenizer, vocab_size: int) -> list[int]:
    """Token ids random sequences may draw from: the tokenizer's vocabulary that the model embeds, without
    special tokens (the named ones, and added tokens marked special, such as Llama 3's reserved ones)."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(token, "special", False)}
    return [t for t in range(min(len(tokenizer), vocab_size)) if t not in special]


def repeated_tokens(candidates: Sequence[int], n_sequences: int, length: int, seed: int = 0, start: int | None = None) -> torch.Tensor:
    """(n_sequences, [1 +] 2 * length) token ids: `start` (if given), then `length` distinct tokens drawn from
    `candidates`, then the same tokens again. Seeded: the same arguments give the same tokens."""
    if length < 2:
        raise ConfigError("length", length, "an integer >= 2 (tokens in the first occurrence)")
    if len(candidates) < length:
        raise ConfigError("length", length, f"at most {len(candidates)} (the distinct tokens available)")
    generator = torch.Generator().manual_seed(seed)
    pool = torch.as_tensor(list(candidates), dtype=torch.long)
    first = torch.stack([pool[torch.randperm(len(pool), generator=generator)[:length]] for _ in range(n_sequences)])  # (N, L)
    prefix = torch.full((n_sequences, 1), start, dtype=torch.long) if start is not None else first[:, :0]
    return torch.cat([prefix, first, first], dim=1)  # (N, [1 +] 2L)


def detection_patterns(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens's detection patterns for a batch of token sequences, as boolean masks (N, T, T):
    previous_token[i, i-1]; induction[i, j+1] for every earlier position j < i holding the same token as i."""
    n, t = tokens.shape
    previous = torch.zeros(n, t, t, dtype=torch.bool)
    previous[:, torch.arange(1, t), torch.arange(t - 1)] = True
    earlier = torch.ones(t, t, dtype=torch.bool).tril(-1)  # key j strictly before query i
    duplicate = (tokens[:, :, None] == tokens[:, None, :]) & earlier  # (N, T, T): token j repeats token i
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # the key right after each earlier occurrence
    return {"previous_token": previous, "induction": induction}


def pattern_scores(attentions: Sequence[torch.Tensor], mask: torch.Tensor) -> list[list[float]]:
    """Per (layer, head): the attention on `mask`'s keys, summed per query row and averaged over the rows
    (of every sequence) where the mask has a key. `attentions`: one (N, H, T, T) tensor per layer."""
    rows = mask.any(dim=-1)  # (N, T): query rows the pattern scores
    if not rows.any():
        raise ValueError("the detection pattern has no query row with a target")
    out = []
    for layer_attention in attentions:
        on_pattern = (layer_attention.float() * mask[:, None].to(layer_attention.device)).sum(-1)  # (N, H, T)
        per_head = (on_pattern * rows[:, None].to(on_pattern.device)).sum(dim=(0, 2)) / rows.sum()  # (H,)
        out.append([float(v) for v in per_head])
    return out


def attention_evidence(model: torch.nn.Module, tokenizer, *, n_sequences: int = 8, length: int = 16, seed: int = 0) -> dict:
    """One forward pass over `n_sequences` random sequences of `length` tokens repeated once (after a BOS):
    the in-context-learning score and, per (layer, head), the previous-token and induction scores.

    Returns {"icl_score", "loss_first_repeat", "loss_second_repeat": floats (nats),
             "previous_token", "induction": [n_layers][n_heads] floats in [0, 1],
             "n_sequences", "length", "seed": the settings}. See the module docstring for the definitions.
    Works on any causal LM whose attention implementation can be set to "eager" (GPT-NeoX, Llama, ...);
    the model's attention implementation and train/eval mode are as they were afterwards.

    `length` 16 by default: 8 x 16 scored query rows already tell an induction head from chance, and the demo
    family copies only over the distances it was trained on (its repeats are at most 16 tokens apart; at 25
    its scores are lower and noisier). TransformerLens's tutorials use 50; any length the model's context
    holds is valid for Pythia.
    """
    if n_sequences < 1:
        raise ConfigError("n_sequences", n_sequences, "an integer >= 1")
    start = start_token(tokenizer)
    width = 2 * length + (start is not None)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and width > limit:
        raise ConfigError("length", length, f"at most {(limit - (start is not None)) // 2} ({width} positions; the model has {limit})")
    tokens = repeated_tokens(random_token_ids(tokenizer, model.config.vocab_size), n_sequences, length, seed, start)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad():
            out = model(input_ids=tokens.to(device), output_attentions=True)
    finally:
        model.train(was_training)
    if not out.attentions or any(a is None for a in out.attentions):
        raise RuntimeError(f"{type(model).__name__} returned no attention weights under attn_implementation='eager'")
    logprobs = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # (N, T-1, V): predicts tokens 1..T-1
    loss = -logprobs.gather(-1, tokens[:, 1:, None].to(device))[..., 0]  # (N, T-1): loss[:, p-1] is token p's
    b = int(start is not None)
    first = loss[:, max(b, 1) - 1 : b + length - 1]  # tokens b..b+L-1 (without a start token, token 0 has no loss)
    second = loss[:, b + length - 1 : b + 2 * length - 1]  # tokens b+L..b+2L-1
    patterns = detection_patterns(tokens)
    loss_first, loss_second = float(first.mean()), float(second.mean())
    return {
        "icl_score": loss_second - loss_first,
        "loss_first_repeat": loss_first,
        "loss_second_repeat": loss_second,
        "previous_token": pattern_scores(out.attentions, patterns["previous_token"]),
        "induction": pattern_scores(out.attentions, patterns["induction"]),
        "n_sequences": n_sequences,
        "length": length,
        "seed": seed,
    }
