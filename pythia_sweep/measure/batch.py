"""A batch of token rows as tensors: rows of unequal length padded into one batch (`pad`: on the left for
generation, so every prompt ends in the last column; on the right for teacher forcing, so every prompt starts in
column 0), the id padding is written with (`pad_id_of`) and the ids generation ends at (`eos_ids`), each distinct row
once (`distinct_rows`: work shared by the rows of one prompt) and the rows of an output that hold a NaN or an infinity
(`non_finite_rows`). Shared by the fast path, the plain way, the head map and the circuits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad(seqs: list[list[int]], pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, T) and their attention mask (N, T), 1 where a token is, T the longest row."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        input_ids[r, span] = torch.tensor(s)
        attention[r, span] = 1
    return input_ids.to(device), attention.to(device)


def pad_id_of(tokenizer) -> int:
    """The id padding is written with: the tokenizer's pad token, else its end-of-text (Pythia has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eos_ids(model) -> torch.Tensor:
    """The token ids that end generation, as `generate` reads them from the generation config."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return torch.tensor(eos, dtype=torch.long, device=next(model.parameters()).device)


def distinct_rows(keys: Sequence) -> tuple[list[int], list[int]]:
    """The first index of each distinct key (in order), and for every key the position of its distinct one."""
    first: dict = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    order = {key: u for u, key in enumerate(first)}
    return list(first.values()), [order[key] for key in keys]


def non_finite_rows(values: torch.Tensor) -> list[int]:
    """The rows of (B, ...) `values` holding a NaN or an infinity."""
    return torch.nonzero(~torch.isfinite(values).flatten(1).all(-1)).flatten().tolist()
