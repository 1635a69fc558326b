"""How a task's [prompts] table becomes clean/corrupted prompt pairs, one generator per `kind`:

  pairs             written out, one table per pair
  templates         templates x rows of named values (written out, or the product of named tables), seeded
  repeated-tokens   Olsson et al.'s repeated random-word sequences, drawn from the tokenizer's single-token words

The clean prompt is the patch source, the corrupted one the target. Every generator refuses, by field, what it
cannot make (an empty filter result, a template field no row has, ids that collide).
"""

from __future__ import annotations

import itertools
import random
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pythia_sweep.errors import ConfigError

if TYPE_CHECKING:  # the checked [prompts] tables (task/prompts_schema.py), read here by attribute
    from pythia_sweep.task.prompts_schema import PairsPrompts, Prompts, RepeatedTokensPrompts, TemplatesPrompts


@dataclass(frozen=True)
class PromptPair:
    id: str  # stable name within the task
    clean: str  # the prompt the model answers correctly: the patch source
    corrupted: str  # the prompt whose answer the patch should repair: the patch target
    correct: tuple[str, ...]  # exact continuations that count as right
    wrong: tuple[str, ...]  # exact continuations that count as wrong
    weight: int = 1  # how many identical greedy trials this prompt stands for


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _value_rows(spec: TemplatesPrompts, source: str) -> list[dict]:
    """Rows of named values: written out (`values`), or the product of named tables (`tables`)."""
    if spec.values is not None:
        return [dict(row) for row in spec.values]
    names, columns = [], []
    for name, table in spec.tables.items():
        if not isinstance(table, list):  # {range = [lo, hi], format = "{:02d}"}: integers lo..hi inclusive
            lo, hi = table.range
            table = [table.format.format(n) for n in range(lo, hi + 1)]
        names.append(name)
        columns.append(table)
    rows = [dict(zip(names, combo)) for combo in itertools.product(*columns)]
    distinct = spec.distinct  # fields that must differ within a row (two names of one prompt)
    kept = [row for row in rows if len({row[k] for k in distinct}) == len(distinct)]
    if not kept:
        raise ConfigError(f"{source}: prompts.distinct", distinct, f"fields whose values can differ (no row of {len(rows)} keeps them distinct)")
    return kept


def _fill(template: str, values: dict, where: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(where, template, f"a template whose fields are among {sorted(values)} ({error})") from error


def _answers(spec, values: dict, where: str) -> tuple[str, ...]:
    """Answer templates, or a number range {numbers = "{n:02d}", above|from = .., up_to|below = ..}."""
    out = []
    for item in as_list(spec):
        if not isinstance(item, str):  # a number range
            lo = int(_fill(str(item.above), values, where)) + 1 if item.above is not None else int(_fill(str(item.from_), values, where))
            hi = int(_fill(str(item.below), values, where)) - 1 if item.below is not None else int(_fill(str(item.up_to), values, where))
            out += [item.numbers.format(n=n) for n in range(lo, hi + 1)]
        else:
            out.append(_fill(item, values, where))
    if not out:
        raise ConfigError(where, spec, f"at least one answer for values {values}")
    return tuple(out)


def _template_pairs(source: str, spec: TemplatesPrompts, tokenizer) -> list[PromptPair]:
    rows = _value_rows(spec, source)
    combos = [(t, r) for t in range(len(spec.templates)) for r in range(len(rows))]
    if spec.count and spec.count < len(combos):
        combos = sorted(random.Random(spec.seed).sample(combos, spec.count))
    keep_if = spec.keep_if_single_tokens
    pairs, dropped = [], 0
    for t, r in combos:
        template, values = spec.templates[t], {**rows[r]}
        where = f"{source}: prompts"
        if keep_if and tokenizer is not None and not all(_splits_as(tokenizer, [_fill(p, values, where) for p in parts]) for parts in keep_if):
            dropped += 1
            continue
        pairs.append(PromptPair(
            _fill(spec.id, {**values, "template": t, "row": r}, f"{where}.id"),
            _fill(template.clean, values, f"{where}.templates[{t}].clean"),
            _fill(template.corrupted, values, f"{where}.templates[{t}].corrupted"),
            _answers(spec.correct, values, f"{where}.correct"), _answers(spec.wrong, values, f"{where}.wrong"),
            spec.weight,
        ))  # fmt: skip
    if not pairs:
        raise ConfigError(f"{source}: prompts.keep_if_single_tokens", keep_if,
                          f"a filter that keeps some prompts for this tokenizer (all {dropped} were dropped)")  # fmt: skip
    check_unique_ids([p.id for p in pairs], f"{source}: prompts.id", lambda f, v, a: ConfigError(f, v, a))
    return pairs


def _splits_as(tokenizer, parts: list[str]) -> bool:
    """True where the joined text tokenizes as exactly one token per part, each the part itself."""
    from pythia_sweep.task.align import encode

    whole = encode(tokenizer, "".join(parts))
    return len(whole) == len(parts) and all(tokenizer.decode([t]) == p for t, p in zip(whole, parts))


def word_tokens(tokenizer) -> list[int]:
    """Vocabulary tokens that are a space and a lower-case word, and re-encode to themselves alone: the
    readable random tokens of repeated sequences (each one token wherever it stands after a space)."""
    from pythia_sweep.task.align import encode

    words = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if len(text) >= 3 and text[0] == " " and all(c in string.ascii_lowercase for c in text[1:]):
            if encode(tokenizer, text) == [token_id]:
                words.append(token_id)
    return words


# What the corrupted prompt of a repeated-tokens task changes in the first occurrence (the second is the same):
CORRUPTIONS = {
    # the answer word, replaced by another: induction copies the other word (the copied value changes)
    "answer": "the answer word replaced by another",
    # the word before the answer trades places with the second-to-last word: every word induction could copy stands
    # where it stood, but the match the repeated prefix finds is now before the last word (what changes is where the
    # induction head attends: its key, written by the previous-token head, K-composition)
    "previous": "the word before the answer moved, so the repeated prefix matches before the last word",
}


def _repeated_token_pairs(source: str, spec: RepeatedTokensPrompts, tokenizer) -> list[PromptPair]:
    """Olsson et al.'s repeated random sequences: a sequence of `length` random words, then its first `repeat` words
    again; the clean answer is the word that followed them in the first occurrence. The corrupted prompt changes the
    first occurrence (`corrupt`, CORRUPTIONS) so that induction predicts another word, which is its answer; both
    prompts have the same length."""
    if tokenizer is None:
        raise ConfigError(f"{source}: prompts.kind", "repeated-tokens", "a tokenizer to draw words from (given per model)")
    words = [tokenizer.decode([t]) for t in word_tokens(tokenizer)]
    length, count, repeat = spec.length, spec.count, spec.repeated
    if len(words) < length + 1:
        raise ConfigError(f"{source}: prompts.length", length,
                          f"at most {len(words) - 1} for this tokenizer ({len(words)} single-token words)")  # fmt: skip
    rng = random.Random(spec.seed)
    prefix = spec.prefix
    pairs = []
    for i in range(count):
        drawn = rng.sample(words, length + 1)
        seq, other = drawn[:length], drawn[length]
        answer = seq[repeat]
        if spec.corrupt == "previous":
            corrupted_seq = list(seq)
            corrupted_seq[repeat - 1], corrupted_seq[length - 2] = seq[length - 2], seq[repeat - 1]
            other = seq[length - 1]  # what now follows the repeated prefix's last word
        else:
            corrupted_seq = seq[:repeat] + [other] + seq[repeat + 1 :]
        clean = prefix + "".join(seq) + "".join(seq[:repeat])
        corrupted = prefix + "".join(corrupted_seq) + "".join(seq[:repeat])
        pairs.append(PromptPair(f"seq{i:03d}", clean, corrupted, (answer,), (other,)))
    return pairs


def check_unique_ids(ids: list[str], where: str, bad) -> None:
    """Two prompts of one id would be merged into one observation (and the prompt count would disagree)."""
    seen: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid in seen:
            raise bad(where, pid, f"an id given once (prompts {seen[pid]} and {i} share it; make the id pattern name every field that varies)")
        seen[pid] = i


def _written_pairs(source: str, spec: PairsPrompts, tokenizer) -> list[PromptPair]:
    return [PromptPair(pid, p.clean, p.corrupted, tuple(as_list(p.correct)), tuple(as_list(p.wrong)), p.weight)
            for pid, p in zip(spec.ids(), spec.pairs)]  # fmt: skip


GENERATORS = {"pairs": _written_pairs, "templates": _template_pairs, "repeated-tokens": _repeated_token_pairs}


def make_pairs(source: str, spec: Prompts, tokenizer=None) -> list[PromptPair]:
    """A checked [prompts] table's pairs (`source` names the file in refusals; a tokenizer is needed for repeated-token
    prompts and tokenization filters)."""
    return GENERATORS[spec.kind](source, spec, tokenizer)
