"""How prompts become aligned token pairs.

A trial is a (clean, buggy) prompt pair asking which of two decimals is bigger, where the trap holds:
X.Y vs X.ZW with Y > ZW as a decimal but ZW > Y as an integer (9.8 vs 9.11). The `seed` set is the
methodology's single pair with 15 identical greedy trials (computed once, counted 15 times); `robust`
varies the pair, the order and the template, each prompt one trial.

The clean and buggy prompts tokenize to different lengths ("Q: " prefix, "\\nA:" suffix), so which clean
position feeds which buggy position is an explicit choice, recorded with every result:
  shared-text  tokens covering the same characters of the text both prompts share (default)
  suffix       the last N positions of each, N = the shorter length
  prefix       the first N positions of each (upstream behaviour: puts every token out of step here)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from pythia_sweep.errors import ConfigError

SEED_TEMPLATE = ("Which is bigger: {a} or {b}?", "Q: Which is bigger: {a} or {b}?\nA:")
TEMPLATES = (
    SEED_TEMPLATE,
    ("Which number is larger: {a} or {b}?", "Q: Which number is larger: {a} or {b}?\nA:"),
    ("Compare {a} and {b}. Which is bigger?", "Question: Compare {a} and {b}. Which is bigger?\nAnswer:"),
)
# (correct, buggy): the correct answer is bigger as a decimal, the buggy one has the bigger digits after the point.
TRAP_PAIRS = (
    ("9.8", "9.11"), ("3.9", "3.11"), ("5.7", "5.12"), ("8.6", "8.13"),
    ("2.5", "2.15"), ("7.4", "7.21"), ("6.3", "6.25"), ("4.7", "4.45"),
)  # fmt: skip


@dataclass(frozen=True)
class PromptPair:
    id: str  # stable name, e.g. "t0-9.8-9.11-ab"
    clean: str  # the prompt the model answers correctly (the patch source)
    buggy: str  # the prompt with the bug (the patch target)
    correct: str  # the right answer, e.g. "9.8"
    wrong: str  # the buggy answer, e.g. "9.11"
    weight: int = 1  # how many identical greedy trials this prompt stands for


def is_trap(correct: str, wrong: str) -> bool:
    """True where `correct` > `wrong` as decimals while `wrong`'s fractional digits form the bigger integer."""
    (ci, cf), (wi, wf) = correct.split("."), wrong.split(".")
    return ci == wi and float(correct) > float(wrong) and int(wf) > int(cf)


def make_prompts(preset: str, trials: int = 15) -> list[PromptPair]:
    """The prompt set of a preset, with identical trials merged into one weighted prompt."""
    if preset == "seed":
        clean, buggy = (t.format(a="9.8", b="9.11") for t in SEED_TEMPLATE)
        pairs = [PromptPair("seed-9.8-9.11", clean, buggy, "9.8", "9.11", weight=trials)]
    elif preset == "robust":
        pairs = []
        for t, (clean_t, buggy_t) in enumerate(TEMPLATES):
            for correct, wrong in TRAP_PAIRS:
                for order, (a, b) in (("ab", (correct, wrong)), ("ba", (wrong, correct))):
                    pairs.append(
                        PromptPair(
                            f"t{t}-{correct}-{wrong}-{order}",
                            clean_t.format(a=a, b=b),
                            buggy_t.format(a=a, b=b),
                            correct,
                            wrong,
                        )
                    )
    else:
        raise ConfigError("preset", preset, "one of seed, robust")
    for pair in pairs:
        validate_pair(pair)
    return pairs


def validate_pair(pair: PromptPair) -> None:
    """Refuse a prompt whose answers do not both appear in it, or that is not a trap."""
    for field in ("clean", "buggy"):
        text = getattr(pair, field)
        for answer in (pair.correct, pair.wrong):
            if answer not in text:
                raise ConfigError(f"prompt {pair.id}.{field}", text, f"a prompt that mentions the answer {answer!r}")
    if not is_trap(pair.correct, pair.wrong):
        raise ConfigError(
            f"prompt {pair.id}", (pair.correct, pair.wrong), "a trap pair X.Y vs X.ZW with X.Y bigger and ZW > Y"
        )


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def align_positions(tokenizer, clean: str, buggy: str, mode: str) -> list[tuple[int, int]]:
    """Pairs (buggy_position, clean_position) whose activations correspond, in the chosen mode."""
    clean_ids, clean_offsets = encode_with_offsets(tokenizer, clean)
    buggy_ids, buggy_offsets = encode_with_offsets(tokenizer, buggy)
    n_clean, n_buggy = len(clean_ids), len(buggy_ids)
    n = min(n_clean, n_buggy)
    if mode == "prefix":
        return [(i, i) for i in range(n)]
    if mode == "suffix":
        return [(n_buggy - n + i, n_clean - n + i) for i in range(n)]
    if mode != "shared-text":
        raise ConfigError("align", mode, "one of shared-text, suffix, prefix")
    # Map each clean character to the buggy character holding the same shared text.
    char_map: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, clean, buggy, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            char_map[block.a + k] = block.b + k
    buggy_by_span = {span: i for i, span in enumerate(buggy_offsets)}
    pairs = []
    for c, (start, end) in enumerate(clean_offsets):
        if end <= start or start not in char_map or (end - 1) not in char_map:
            continue
        b_start, b_end = char_map[start], char_map[end - 1] + 1
        if b_end - b_start != end - start:  # the span is split across two matching blocks
            continue
        b = buggy_by_span.get((b_start, b_end))
        if b is not None and buggy_ids[b] == clean_ids[c]:  # same text and same token: the same input
            pairs.append((b, c))
    return sorted(pairs)
