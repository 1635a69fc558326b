"""How prompts become aligned token pairs: which clean position feeds which corrupted position.

A task's clean and corrupted prompts may tokenize to different lengths (a "Q: " prefix, an "\\nA:" suffix),
so which clean position is patched into which corrupted position is an explicit choice, recorded with
every result:
  shared-text  tokens covering the same characters of the text both prompts share
  suffix       the last N positions of each, N = the shorter length
  prefix       the first N positions of each (position by position: right for prompts of the same length;
               the upstream behaviour for prompts of different lengths, where it puts every token out of step)
"""

from __future__ import annotations

import difflib

from pythia_sweep.errors import ConfigError


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as the model reads it mid-sequence (no special tokens added)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def shown_generation(tokenizer, tokens: list[int], eos_ids: set[int]) -> str:
    """New tokens as a person should read them: special tokens kept (an `<|endoftext|>` is shown, where the
    scored response, decoded without them, is an empty string), up to and including the first end of text
    (what follows it in a batch is padding)."""
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
    return tokenizer.decode(tokens[:end], skip_special_tokens=False)


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def align_positions(tokenizer, clean: str, corrupted: str, mode: str) -> list[tuple[int, int]]:
    """Pairs (corrupted_position, clean_position) whose activations correspond, in the chosen mode."""
    clean_ids, clean_offsets = encode_with_offsets(tokenizer, clean)
    corrupted_ids, corrupted_offsets = encode_with_offsets(tokenizer, corrupted)
    n_clean, n_corrupted = len(clean_ids), len(corrupted_ids)
    n = min(n_clean, n_corrupted)
    if mode == "prefix":
        return [(i, i) for i in range(n)]
    if mode == "suffix":
        return [(n_corrupted - n + i, n_clean - n + i) for i in range(n)]
    if mode != "shared-text":
        raise ConfigError("align", mode, "one of shared-text, suffix, prefix")
    # Map each clean character to the corrupted character holding the same shared text.
    char_map: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, clean, corrupted, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            char_map[block.a + k] = block.b + k
    corrupted_by_span = {span: i for i, span in enumerate(corrupted_offsets)}
    pairs = []
    for c, (start, end) in enumerate(clean_offsets):
        if end <= start or start not in char_map or (end - 1) not in char_map:
            continue
        b_start, b_end = char_map[start], char_map[end - 1] + 1
        if b_end - b_start != end - start:  # the span is split across two matching blocks
            continue
        b = corrupted_by_span.get((b_start, b_end))
        if b is not None and corrupted_ids[b] == clean_ids[c]:  # same text and same token: the same input
            pairs.append((b, c))
    return sorted(pairs)
