"""What a sweep asks: a task file (TOML, under tasks/) read into prompt pairs, answers, head groups and contrasts.

The experiment is data. A task file says everything task-specific, and no other module names a task,
an answer or a group:

  [prompts]    clean/corrupted pairs: written out (kind = "pairs"), generated from templates x value tables
               (kind = "templates", seeded), or repeated random-token sequences (kind = "repeated-tokens",
               Olsson et al. 2022). The clean prompt is the patch source, the corrupted one the target.
  answers      exact continuations of the prompt (a leading space is part of the answer), one or several
               correct and one or several wrong ones per pair; scored teacher-forced.
  [success]    how a generated text counts as a success: "mentions" (a correct pattern and no wrong one,
               the methodology's check written as data) or "first-answer" (the text begins with a correct answer).
  [groups]     named head groups, each a list of (layer, head); a group may span layers.
  [[contrasts]] named differences of two groups (plus - minus) on one metric: the task's headline numbers.

The conditions of a checkpoint follow from it (see `conditions`): baseline, clean, each group, all heads of
every layer the groups touch, each single head of those layers, and the null (random head sets of the
first group's size from the same layers, never equal to a named group).

A task is validated twice: its shape when the file is read (`load_task`), and against a model when its
tokenizer and config are known (`Task.tokenize`, `Task.resolve_groups`): every answer must tokenize as a
continuation of its prompt, every head must exist. Refusals name the file, the field, the value and what
is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pythia_sweep.config import read_toml
from pythia_sweep.errors import ConfigError

PROMPT_KINDS = ("pairs", "templates", "repeated-tokens")
SUCCESS_RULES = ("mentions", "first-answer")
ALIGNMENTS = ("shared-text", "suffix", "prefix")
ANSWER_TOKENS = ("continuation", "separate")
RESERVED = ("baseline", "clean", "all", "null")  # condition names the pipeline gives; groups may not take them
GENERIC_HYPOTHESES = {
    "early": "H1: early emergence suggests an architectural bias toward this mechanism",
    "mid": "H3: mid emergence suggests the mechanism is driven by capability development",
    "late": "H2: late emergence suggests a complex learned optimization toward this mechanism",
}


@dataclass(frozen=True)
class PromptPair:
    id: str  # stable name within the task
    clean: str  # the prompt the model answers correctly: the patch source
    corrupted: str  # the prompt whose answer the patch should repair: the patch target
    correct: tuple[str, ...]  # exact continuations that count as right
    wrong: tuple[str, ...]  # exact continuations that count as wrong
    weight: int = 1  # how many identical greedy trials this prompt stands for


@dataclass(frozen=True)
class TokenizedPair:
    """A prompt pair tokenized once per checkpoint: prompt ids and answer ids, per side."""

    pair: PromptPair
    ids: dict[str, list[int]]  # "clean" / "corrupted" -> prompt token ids
    answers: dict[str, list[list[int]]]  # side -> token ids of each correct answer, then each wrong one
    n_correct: int
    alignments: dict[str, list[tuple[int, int]]]  # align mode -> (corrupted position, clean position) pairs


@dataclass(frozen=True)
class Contrast:
    name: str  # the headline number's name, e.g. "strength"
    plus: str  # group whose metric is counted positive
    minus: str  # group subtracted ("baseline" is allowed: the group's effect over no patch)
    metric: str = "success_rate"  # which per-condition metric the contrast is taken on
    levels: tuple[float, float, float] = (0.5, 0.3, 0.1)  # strong / moderate / weak; emergence = above strong

    @property
    def threshold(self) -> float:
        return self.levels[0]


@dataclass(frozen=True)
class SuccessRule:
    rule: str  # "mentions" or "first-answer"
    correct_patterns: tuple[str, ...] = ("{answer}",)  # for "mentions": {answer} is each answer, stripped
    wrong_patterns: tuple[str, ...] = ("{answer}",)
    lowercase: bool = True  # for "mentions": compare in lower case

    def __call__(self, text: str, correct: Sequence[str], wrong: Sequence[str]) -> bool:
        if self.rule == "first-answer":  # the longest answer the text begins with must be a correct one
            starts = [(len(a), a in correct) for a in (*correct, *wrong) if a and text.startswith(a)]
            return bool(starts) and max(starts)[1]
        seen = text.lower() if self.lowercase else text

        def mentions(patterns, answers):
            found = (p.format(answer=a.strip()) for p in patterns for a in answers)
            return any((f.lower() if self.lowercase else f) in seen for f in found)

        return mentions(self.correct_patterns, correct) and not mentions(self.wrong_patterns, wrong)

    @property
    def can_decide_early(self) -> bool:
        """Whether a generation's outcome can be fixed before it ends (first-answer reads only its start)."""
        return self.rule == "first-answer"

    def decided(self, text: str, correct: Sequence[str], wrong: Sequence[str]) -> bool:
        """Whether more text could no longer change the outcome: no answer extends `text` (first-answer)."""
        return self.can_decide_early and not any(a.startswith(text) and len(a) > len(text) for a in (*correct, *wrong))


@dataclass(frozen=True)
class Task:
    name: str  # short name, used in experiment names and run labels
    question: str  # one line: what the sweep asks (report title)
    source: str  # the file it was read from
    digest: str  # hash of the parsed content: editing the task starts a new sweep
    data: dict = field(repr=False, compare=False)  # the parsed file: what travels to workers
    layer: int | None = None  # default layer of groups written as heads only
    align: str = "shared-text"  # default alignment of clean and corrupted positions
    same_length: bool = False  # clean and corrupted must tokenize to the same length
    answer_tokens: str = "continuation"  # "continuation": re-tokenized with the prompt; "separate": on their own
    single_token_answers: bool = False  # every answer must be exactly one token
    null_pool: str = "group-layers"  # the null's random head sets: from the first group's layers, or from all layers
    success: SuccessRule = SuccessRule("first-answer")
    contrasts: tuple[Contrast, ...] = ()
    hypotheses: dict = field(default_factory=lambda: dict(GENERIC_HYPOTHESES), compare=False)

    # -- prompts ----------------------------------------------------------------------------------------
    def pairs(self, tokenizer=None) -> list[PromptPair]:
        """The task's prompt pairs (a tokenizer is needed for repeated-token prompts and tokenization filters)."""
        spec = self.data["prompts"]
        kind = spec["kind"]
        if kind == "pairs":
            return [_pair_from_table(self, i, p) for i, p in enumerate(spec["pairs"])]
        if kind == "templates":
            return _template_pairs(self, spec, tokenizer)
        return _repeated_token_pairs(self, spec, tokenizer)

    def tokenize(self, tokenizer, aligns: Sequence[str] = ()) -> list[TokenizedPair]:
        """Every pair tokenized once, each answer checked to be a continuation of its prompt, and its
        positions aligned in each of the `aligns` modes (each must leave positions to patch)."""
        from pythia_sweep.prompts import align_positions, encode

        out = []
        for pair in self.pairs(tokenizer):
            ids = {side: encode(tokenizer, getattr(pair, side)) for side in ("clean", "corrupted")}
            if self.same_length and len(ids["clean"]) != len(ids["corrupted"]):
                raise ConfigError(
                    f"{self.source}: prompts[{pair.id}]", (pair.clean, pair.corrupted),
                    f"clean and corrupted prompts of the same length in tokens (same_length = true): "
                    f"{len(ids['clean'])} vs {len(ids['corrupted'])}",
                )  # fmt: skip
            answers = {
                side: [self._answer_ids(tokenizer, pair, getattr(pair, side), ids[side], a) for a in (*pair.correct, *pair.wrong)]
                for side in ("clean", "corrupted")
            }
            alignments = {mode: align_positions(tokenizer, pair.clean, pair.corrupted, mode) for mode in aligns}
            for mode, positions in alignments.items():
                if not positions:
                    raise ConfigError(f"{self.source}: prompts[{pair.id}]", pair.corrupted, f"a pair with positions to patch under align={mode!r}")
            out.append(TokenizedPair(pair, ids, answers, len(pair.correct), alignments))
        return out

    def _answer_ids(self, tokenizer, pair: PromptPair, prompt: str, prompt_ids: list[int], answer: str) -> list[int]:
        from pythia_sweep.prompts import encode

        side = "correct" if answer in pair.correct else "wrong"
        where = f"{self.source}: prompts[{pair.id}].{side}"
        if prompt[-1:].isalpha() and answer[:1].isalpha():  # "...is" + "Paris": a word glued to the prompt's last word
            raise ConfigError(where, answer, f"write it with its leading space, {' ' + answer!r} (the prompt {prompt!r} ends in a word)")
        if self.answer_tokens == "separate":
            ids = encode(tokenizer, answer)
            if tokenizer.decode(ids) != answer:
                raise ConfigError(where, answer, "an answer this tokenizer encodes and decodes unchanged")
        else:
            full = encode(tokenizer, prompt + answer)
            if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
                raise ConfigError(
                    where, answer, f"an exact continuation of the prompt {prompt!r} (its tokens must extend the prompt's; "
                    "set answer_tokens = \"separate\" to score the answer's own tokens)",
                )  # fmt: skip
            ids = full[len(prompt_ids) :]
        unk = getattr(tokenizer, "unk_token_id", None)
        if not ids or (unk is not None and unk in ids):
            raise ConfigError(where, answer, "an answer in the tokenizer's vocabulary (it encodes to the unknown token)")
        if self.single_token_answers and len(ids) != 1:
            raise ConfigError(where, answer, f"one token of the vocabulary (single_token_answers = true); it encodes as {len(ids)} tokens")
        return ids

    # -- heads ------------------------------------------------------------------------------------------
    def resolve_groups(self, n_layers: int, n_heads: int, layer: int | None = None) -> dict[str, tuple[tuple[int, int], ...]]:
        """Named groups as (layer, head) tuples for a model of this shape; `layer` overrides the task's default."""
        default_layer = self.layer if layer is None else layer
        groups = {}
        for name, spec in self.data["groups"].items():
            where = f"{self.source}: groups.{name}"
            if isinstance(spec, dict):
                group_layer = spec.get("layer", default_layer)
                if group_layer is None:
                    raise ConfigError(where, spec, "a layer: give `layer = N` in the group or at the top of the task")
                heads = spec["heads"]
                if isinstance(heads, dict):  # a stride over the layer's heads, sized to the model
                    heads = list(range(heads.get("from", 0), heads.get("to", n_heads), heads.get("step", 1)))
                elif heads == "all":
                    heads = list(range(n_heads))
                pairs = [(group_layer, h) for h in heads]
            else:
                pairs = [tuple(p) for p in spec]
            for lay, head in pairs:
                if not 0 <= lay < n_layers:
                    raise ConfigError(where, [list(p) for p in pairs], f"layers in 0..{n_layers - 1} (the model has {n_layers} layers)")
                if not 0 <= head < n_heads:
                    raise ConfigError(where, [list(p) for p in pairs], f"heads in 0..{n_heads - 1} (the model has {n_heads} heads per layer)")
            if len(set(pairs)) != len(pairs):
                raise ConfigError(where, [list(p) for p in pairs], "(layer, head) pairs without repeats")
            groups[name] = tuple(pairs)
        return groups

    @property
    def group_names(self) -> list[str]:
        return list(self.data["groups"])

    @property
    def headline(self) -> Contrast:
        return self.contrasts[0]

    def describe(self) -> dict:
        """What a record or a report needs to know of the task, JSON-able."""
        return {"name": self.name, "question": self.question, "source": self.source, "digest": self.digest}


# -- reading a task file --------------------------------------------------------------------------------
# Every table of a task file, and the keys it may hold: anything else is refused with a "did you mean".
TOP_KEYS = ("name", "question", "layer", "align", "same_length", "answer_tokens", "single_token_answers", "null_pool",
            "prompts", "success", "groups", "contrasts", "hypotheses")  # fmt: skip
PROMPT_KEYS = {
    "pairs": ("kind", "pairs"),
    "templates": ("kind", "templates", "values", "tables", "distinct", "count", "seed", "id", "correct", "wrong",
                  "keep_if_single_tokens", "weight"),
    "repeated-tokens": ("kind", "count", "length", "seed", "repeat", "prefix"),
}  # fmt: skip
PAIR_KEYS = ("id", "clean", "corrupted", "correct", "wrong", "weight")
TEMPLATE_KEYS = ("clean", "corrupted")
RANGE_TABLE_KEYS = ("range", "format")
NUMBER_ANSWER_KEYS = ("numbers", "above", "from", "below", "up_to")
SUCCESS_KEYS = ("rule", "correct_patterns", "wrong_patterns", "lowercase")
GROUP_KEYS = ("layer", "heads")
STRIDE_KEYS = ("from", "to", "step")
CONTRAST_KEYS = ("name", "plus", "minus", "metric", "levels")
NULL_POOLS = ("group-layers", "all-layers")  # where the null's random head sets are drawn from
MAX_PROMPTS = 2000  # a templates task without `count` may expand to at most this many prompts
# The largest |value| a contrast can reach on each metric: a level above it can never be crossed.
CONTRAST_BOUND = {"success_rate": 1.0, "prob_diff": 2.0, "logprob_diff": math.inf}


def check_keys(table: dict, allowed: Sequence[str], where: str, source: str) -> None:
    """Refuse the first key of `table` not in `allowed`, naming the file, the table, the key and the closest
    allowed key: a typo never falls back to a default."""
    unknown = [k for k in table if k not in allowed]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        at = f"{where}.{key}" if where else str(key)
        raise ConfigError(f"{source}: {at}", table[key], f"{hint}a known key here ({', '.join(allowed)})")


def load_task(path: str | Path) -> Task:
    """Read and check a task file's shape; model-dependent checks come with the tokenizer and config."""
    return task_from_dict(read_toml(path, "task", "tasks/"), str(path))


def task_from_dict(data: dict, source: str = "<task>") -> Task:
    def bad(field_name, value, allowed):
        return ConfigError(f"{source}: {field_name}", value, allowed)

    check_keys(data, TOP_KEYS, "", source)
    for key in ("name", "prompts", "groups"):
        if key not in data:
            raise bad(key, None, "present: every task names itself, its prompts and its head groups")
    if not isinstance(data["name"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", data["name"]):
        raise bad("name", data["name"], "a short name of letters, digits, '-', '_' or '.'")
    layer = data.get("layer")
    if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 0):
        raise bad("layer", layer, "an integer >= 0")
    align = data.get("align", "shared-text")
    if align not in ALIGNMENTS:
        raise bad("align", align, f"one of {', '.join(ALIGNMENTS)}")
    answer_tokens = data.get("answer_tokens", "continuation")
    if answer_tokens not in ANSWER_TOKENS:
        raise bad("answer_tokens", answer_tokens, f"one of {', '.join(ANSWER_TOKENS)}")
    null_pool = data.get("null_pool", NULL_POOLS[0])
    if null_pool not in NULL_POOLS:
        raise bad("null_pool", null_pool, f"one of {', '.join(NULL_POOLS)}")
    for key in ("same_length", "single_token_answers"):
        if not isinstance(data.get(key, False), bool):
            raise bad(key, data[key], "true or false")
    _check_prompts(data["prompts"], bad, source)
    if not isinstance(data.get("success", {}), dict):
        raise bad("success", data["success"], "a [success] table")
    success = _success_rule(data.get("success", {}), bad, source)
    groups = data["groups"]
    if not isinstance(groups, dict) or not groups:
        raise bad("groups", groups, "a table of named head groups")
    for name, spec in groups.items():
        _check_group(name, spec, bad, source)
    if not data.get("contrasts") or not isinstance(data["contrasts"], list):
        raise bad("contrasts", data.get("contrasts"), "at least one [[contrasts]] table: the first is the headline number")
    contrasts = tuple(_contrast(i, c, groups, bad, source) for i, c in enumerate(data["contrasts"]))
    if len({c.name for c in contrasts}) != len(contrasts):
        raise bad("contrasts", [c.name for c in contrasts], "contrasts with distinct names")
    clash = sorted({c.name for c in contrasts} & (set(groups) | set(RESERVED)))
    if clash:
        raise bad("contrasts", clash[0], "a contrast name that is not also a group or condition name")
    written = data.get("hypotheses", {})
    if not isinstance(written, dict):
        raise bad("hypotheses", written, "a [hypotheses] table of early, mid and late")
    check_keys(written, tuple(GENERIC_HYPOTHESES), "hypotheses", source)
    hypotheses = {**GENERIC_HYPOTHESES, **written}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return Task(
        name=data["name"], question=str(data.get("question", data["name"])), source=source, digest=digest, data=data,
        layer=layer, align=align, same_length=bool(data.get("same_length", False)), answer_tokens=answer_tokens,
        single_token_answers=bool(data.get("single_token_answers", False)), null_pool=null_pool, success=success,
        contrasts=contrasts, hypotheses=hypotheses,
    )  # fmt: skip


def _check_prompts(spec, bad, source: str) -> None:
    if not isinstance(spec, dict):
        raise bad("prompts", spec, "a table with kind = one of " + ", ".join(PROMPT_KINDS))
    kind = spec.get("kind")
    if kind not in PROMPT_KINDS:
        raise bad("prompts.kind", kind, f"one of {', '.join(PROMPT_KINDS)}")
    check_keys(spec, PROMPT_KEYS[kind], "prompts", source)
    if kind == "pairs":
        pairs = spec.get("pairs")
        if not isinstance(pairs, list) or not pairs:
            raise bad("prompts.pairs", pairs, "a non-empty list of {clean, corrupted, correct, wrong} tables")
        for i, p in enumerate(pairs):
            if not isinstance(p, dict):
                raise bad(f"prompts.pairs[{i}]", p, "a {clean, corrupted, correct, wrong} table")
            check_keys(p, PAIR_KEYS, f"prompts.pairs[{i}]", source)
            for key in ("clean", "corrupted", "correct", "wrong"):
                if not p.get(key):
                    raise bad(f"prompts.pairs[{i}].{key}", p.get(key), "present and not empty")
        ids = [str(p.get("id", f"p{i}")) for i, p in enumerate(pairs)]
        _check_unique_ids(ids, "prompts.pairs[].id", bad)
    elif kind == "templates":
        templates = spec.get("templates")
        if not isinstance(templates, list) or not templates or not all(isinstance(t, dict) and t.get("clean") and t.get("corrupted") for t in templates):
            raise bad("prompts.templates", templates, "a non-empty list of {clean, corrupted} template tables")
        for t, template in enumerate(templates):
            check_keys(template, TEMPLATE_KEYS, f"prompts.templates[{t}]", source)
        if ("values" in spec) == ("tables" in spec):
            raise bad("prompts", sorted(spec), "exactly one of values = [rows] or tables = {name = [values]} to fill the templates")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"] or not all(isinstance(r, dict) for r in spec["values"])):
            raise bad("prompts.values", spec["values"], "a non-empty list of rows, each a table of named values")
        if "tables" in spec:
            tables = spec["tables"]
            if not isinstance(tables, dict) or not tables:
                raise bad("prompts.tables", tables, "a table of named value lists, e.g. {noun = [\"war\", \"siege\"]}")
            for name, table in tables.items():
                if isinstance(table, dict):
                    check_keys(table, RANGE_TABLE_KEYS, f"prompts.tables.{name}", source)
                    rng = table.get("range")
                    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in rng) and rng[0] <= rng[1]):
                        raise bad(f"prompts.tables.{name}.range", rng, "[low, high]: two integers, low <= high (both included)")
                elif not isinstance(table, list) or not table:
                    raise bad(f"prompts.tables.{name}", table, "a non-empty list of values, or {range = [low, high], format = \"{:02d}\"}")
        for key in ("correct", "wrong"):
            if not spec.get(key):
                raise bad(f"prompts.{key}", spec.get(key), "one or more answer templates (e.g. \" {correct}\")")
            for j, item in enumerate(_as_list(spec[key])):
                if isinstance(item, dict):
                    check_keys(item, NUMBER_ANSWER_KEYS, f"prompts.{key}[{j}]", source)
                    if "numbers" not in item or not {"below", "up_to"} & set(item):
                        raise bad(f"prompts.{key}[{j}]", item, "{numbers = \"{n:02d}\", above or from (default 0), below or up_to}")
                elif not isinstance(item, str):
                    raise bad(f"prompts.{key}[{j}]", item, "an answer template (a string) or a number range table")
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise bad("prompts.count", count, "an integer >= 1: how many (template, row) combinations to draw")
        n = len(templates) * _row_count(spec)
        if count is None and n > MAX_PROMPTS:
            raise bad("prompts", f"{len(templates)} templates x {_row_count(spec)} rows = {n} prompts",
                      f"at most {MAX_PROMPTS} prompts without `count`: set count = N to draw N of them (seeded)")  # fmt: skip
    else:
        for key, minimum in (("count", 1), ("length", 4)):
            value = spec.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise bad(f"prompts.{key}", value, f"an integer >= {minimum}")
        repeat = spec.get("repeat", spec["length"] // 2)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat < spec["length"]:
            raise bad("prompts.repeat", repeat, f"an integer in 1..{spec['length'] - 1} (words repeated before the answer)")


def _check_unique_ids(ids: list[str], where: str, bad) -> None:
    """Two prompts of one id would be merged into one observation (and the prompt count would disagree)."""
    seen: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid in seen:
            raise bad(where, pid, f"an id given once (prompts {seen[pid]} and {i} share it; make the id pattern name every field that varies)")
        seen[pid] = i


def _row_count(spec: dict) -> int:
    """Rows a templates task's values or tables give, before `distinct` filtering (cheap: no product built)."""
    if "values" in spec:
        return len(spec["values"])
    n = 1
    for table in spec["tables"].values():
        n *= table["range"][1] - table["range"][0] + 1 if isinstance(table, dict) else len(table)
    return n


def _success_rule(spec, bad, source: str) -> SuccessRule:
    check_keys(spec, SUCCESS_KEYS, "success", source)
    rule = spec.get("rule", "first-answer")
    if rule not in SUCCESS_RULES:
        raise bad("success.rule", rule, f"one of {', '.join(SUCCESS_RULES)}")
    patterns = {}
    for key in ("correct_patterns", "wrong_patterns"):
        value = spec.get(key, ["{answer}"])
        if not isinstance(value, list) or not value or not all(isinstance(p, str) and "{answer}" in p for p in value):
            raise bad(f"success.{key}", value, "a list of patterns, each containing {answer}")
        patterns[key] = tuple(value)
    if not isinstance(spec.get("lowercase", True), bool):
        raise bad("success.lowercase", spec["lowercase"], "true or false")
    return SuccessRule(rule, patterns["correct_patterns"], patterns["wrong_patterns"], bool(spec.get("lowercase", True)))


def _check_group(name, spec, bad, source: str) -> None:
    where = f"groups.{name}"
    if name in RESERVED or name.startswith("null") or re.fullmatch(r"L\d+H\d+", name):
        raise bad(where, name, f"a group name other than {', '.join(RESERVED)}, null* or L<layer>H<head> (the pipeline's own)")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise bad(where, name, "a name of letters, digits, '-' or '_'")
    if isinstance(spec, dict):
        check_keys(spec, GROUP_KEYS, where, source)
        heads = spec.get("heads")
        if isinstance(heads, dict):
            check_keys(heads, STRIDE_KEYS, f"{where}.heads", source)
        ints = lambda xs: all(isinstance(h, int) and not isinstance(h, bool) for h in xs)  # noqa: E731
        stride = isinstance(heads, dict) and ints(heads.values()) and heads.get("step", 1) > 0
        ok = heads == "all" or stride or (isinstance(heads, list) and heads and ints(heads))
        if not ok:
            raise bad(f"{where}.heads", heads, 'a non-empty list of head indices, "all", or a stride {from = 0, step = 2}')
        if "layer" in spec and (not isinstance(spec["layer"], int) or isinstance(spec["layer"], bool) or spec["layer"] < 0):
            raise bad(f"{where}.layer", spec["layer"], "an integer >= 0")
    elif not (isinstance(spec, list) and spec and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in p) for p in spec)):
        raise bad(where, spec, "a non-empty list of [layer, head] pairs, or {layer = L, heads = [...]}")


def _contrast(i, spec, groups, bad, source: str) -> Contrast:
    where = f"contrasts[{i}]"
    if not isinstance(spec, dict) or not spec.get("name"):
        raise bad(where, spec, "a table with name, plus, minus (and optionally metric, levels)")
    check_keys(spec, CONTRAST_KEYS, where, source)
    for key in ("plus", "minus"):
        if spec.get(key) not in (*groups, "baseline"):
            raise bad(f"{where}.{key}", spec.get(key), f"a group name ({', '.join(groups)}) or baseline")
    metric = spec.get("metric", "success_rate")
    if metric not in CONTRAST_BOUND:
        raise bad(f"{where}.metric", metric, f"one of {', '.join(CONTRAST_BOUND)}")
    levels = spec.get("levels", [0.5, 0.3, 0.1])
    if not isinstance(levels, list) or len(levels) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        raise bad(f"{where}.levels", levels, "three numbers [strong, moderate, weak]")
    if not levels[0] > levels[1] > levels[2] > 0:
        raise bad(f"{where}.levels", levels, "descending and positive: strong > moderate > weak > 0")
    bound = CONTRAST_BOUND[metric]
    if levels[0] >= bound:
        raise bad(f"{where}.levels", levels, f"a strong level below {bound:g}: a contrast of {metric} lies in "
                                             f"[-{bound:g}, {bound:g}], so it could never be crossed")  # fmt: skip
    return Contrast(spec["name"], spec["plus"], spec["minus"], metric, tuple(float(v) for v in levels))


# -- generating prompts -----------------------------------------------------------------------------------
def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _pair_from_table(task: Task, i: int, p: dict) -> PromptPair:
    return PromptPair(
        str(p.get("id", f"p{i}")), p["clean"], p["corrupted"], tuple(_as_list(p["correct"])), tuple(_as_list(p["wrong"])),
        int(p.get("weight", 1)),
    )  # fmt: skip


def _value_rows(spec: dict, source: str) -> list[dict]:
    """Rows of named values: written out (`values`), or the product of named tables (`tables`)."""
    if "values" in spec:
        return [dict(row) for row in spec["values"]]
    names, columns = [], []
    for name, table in spec["tables"].items():
        if isinstance(table, dict):  # {range = [lo, hi], format = "{:02d}"}: integers lo..hi inclusive
            lo, hi = table["range"]
            table = [table.get("format", "{}").format(n) for n in range(lo, hi + 1)]
        names.append(name)
        columns.append(table)
    rows = [dict(zip(names, combo)) for combo in itertools.product(*columns)]
    distinct = spec.get("distinct", [])  # fields that must differ within a row (two names of one prompt)
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
    for item in _as_list(spec):
        if isinstance(item, dict):
            lo = int(_fill(str(item["above"]), values, where)) + 1 if "above" in item else int(_fill(str(item.get("from", 0)), values, where))
            hi = int(_fill(str(item["below"]), values, where)) - 1 if "below" in item else int(_fill(str(item["up_to"]), values, where))
            out += [item["numbers"].format(n=n) for n in range(lo, hi + 1)]
        else:
            out.append(_fill(item, values, where))
    if not out:
        raise ConfigError(where, spec, f"at least one answer for values {values}")
    return tuple(out)


def _template_pairs(task: Task, spec: dict, tokenizer) -> list[PromptPair]:
    rows = _value_rows(spec, task.source)
    combos = [(t, r) for t in range(len(spec["templates"])) for r in range(len(rows))]
    count = spec.get("count", 0)
    if count and count < len(combos):
        combos = sorted(random.Random(spec.get("seed", 0)).sample(combos, count))
    id_format = spec.get("id", "t{template}-r{row}")
    keep_if = spec.get("keep_if_single_tokens")
    if keep_if and isinstance(keep_if[0], str):
        keep_if = [keep_if]
    pairs, dropped = [], 0
    for t, r in combos:
        template, values = spec["templates"][t], {**rows[r]}
        where = f"{task.source}: prompts"
        if keep_if and tokenizer is not None and not all(_splits_as(tokenizer, [_fill(p, values, where) for p in parts]) for parts in keep_if):
            dropped += 1
            continue
        pairs.append(PromptPair(
            _fill(id_format, {**values, "template": t, "row": r}, f"{where}.id"),
            _fill(template["clean"], values, f"{where}.templates[{t}].clean"),
            _fill(template["corrupted"], values, f"{where}.templates[{t}].corrupted"),
            _answers(spec["correct"], values, f"{where}.correct"), _answers(spec["wrong"], values, f"{where}.wrong"),
            int(spec.get("weight", 1)),
        ))  # fmt: skip
    if not pairs:
        raise ConfigError(f"{task.source}: prompts.keep_if_single_tokens", keep_if,
                          f"a filter that keeps some prompts for this tokenizer (all {dropped} were dropped)")  # fmt: skip
    _check_unique_ids([p.id for p in pairs], f"{task.source}: prompts.id", lambda f, v, a: ConfigError(f, v, a))
    return pairs


def _splits_as(tokenizer, parts: list[str]) -> bool:
    """True where the joined text tokenizes as exactly one token per part, each the part itself."""
    from pythia_sweep.prompts import encode

    whole = encode(tokenizer, "".join(parts))
    return len(whole) == len(parts) and all(tokenizer.decode([t]) == p for t, p in zip(whole, parts))


def word_tokens(tokenizer) -> list[int]:
    """Vocabulary tokens that are a space and a lower-case word, and re-encode to themselves alone: the
    readable random tokens of repeated sequences (each one token wherever it stands after a space)."""
    from pythia_sweep.prompts import encode

    words = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if len(text) >= 3 and text[0] == " " and all(c in string.ascii_lowercase for c in text[1:]):
            if encode(tokenizer, text) == [token_id]:
                words.append(token_id)
    return words


def _repeated_token_pairs(task: Task, spec: dict, tokenizer) -> list[PromptPair]:
    """Olsson et al.'s repeated random sequences: a sequence of `length` random words, then its first half
    again; the clean answer is the word that followed in the first occurrence. The corrupted prompt replaces
    that word (first occurrence only) by another, so induction predicts the other word; both prompts have
    the same length."""
    if tokenizer is None:
        raise ConfigError(f"{task.source}: prompts.kind", "repeated-tokens", "a tokenizer to draw words from (given per model)")
    words = [tokenizer.decode([t]) for t in word_tokens(tokenizer)]
    length, count = spec["length"], spec["count"]
    if len(words) < length + 1:
        raise ConfigError(f"{task.source}: prompts.length", length,
                          f"at most {len(words) - 1} for this tokenizer ({len(words)} single-token words)")  # fmt: skip
    rng = random.Random(spec.get("seed", 0))
    repeat = spec.get("repeat", length // 2)
    prefix = spec.get("prefix", "")
    pairs = []
    for i in range(count):
        drawn = rng.sample(words, length + 1)
        seq, other = drawn[:length], drawn[length]
        answer = seq[repeat]
        corrupted_seq = seq[:repeat] + [other] + seq[repeat + 1 :]
        clean = prefix + "".join(seq) + "".join(seq[:repeat])
        corrupted = prefix + "".join(corrupted_seq) + "".join(seq[:repeat])
        pairs.append(PromptPair(f"seq{i:03d}", clean, corrupted, (answer,), (other,)))
    return pairs
