"""Reading a task file: every table and key checked, then the Task built (tasks.py holds the model).

A refusal is one line naming the file, the field, the value and what is allowed; an unknown key anywhere is
refused with the closest known one, never left to a default. Model-dependent checks (answers tokenize, heads
exist) come with the tokenizer and config (`Task.tokenize`, `Task.resolve_groups`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from pythia_sweep.levels import LEVELS
from pythia_sweep.config import ALIGNMENTS, read_toml
from pythia_sweep.task.pairs import CORRUPTIONS
from pythia_sweep.errors import ConfigError
from pythia_sweep.task.pairs import PROMPT_KINDS, as_list, check_unique_ids
from pythia_sweep.task.definition import (
    ANSWER_TOKENS,
    GENERIC_HYPOTHESES,
    RESERVED,
    SUCCESS_RULES,
    Contrast,
    SuccessRule,
    Task,
)


TOP_KEYS = ("name", "question", "layer", "align", "same_length", "answer_tokens", "single_token_answers", "null_pool",
            "prompts", "success", "groups", "contrasts", "hypotheses")  # fmt: skip

PROMPT_KEYS = {
    "pairs": ("kind", "pairs"),
    "templates": ("kind", "templates", "values", "tables", "distinct", "count", "seed", "id", "correct", "wrong",
                  "keep_if_single_tokens", "weight"),
    "repeated-tokens": ("kind", "count", "length", "seed", "repeat", "prefix", "corrupt"),
}  # fmt: skip

PAIR_KEYS = ("id", "clean", "corrupted", "correct", "wrong", "weight")

TEMPLATE_KEYS = ("clean", "corrupted")

RANGE_TABLE_KEYS = ("range", "format")

NUMBER_ANSWER_KEYS = ("numbers", "above", "from", "below", "up_to")

SUCCESS_KEYS = ("rule", "correct_patterns", "wrong_patterns", "lowercase")

GROUP_KEYS = ("layer", "heads")

DISCOVER_KEYS = ("discover",)  # a group left to be found: { discover = N }

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
    return task_from_dict(read_toml(path, "task", "tasks"), str(path))


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
    discovering = [name for name, spec in data["groups"].items() if isinstance(spec, dict) and "discover" in spec] if isinstance(data["groups"], dict) else []
    if len(discovering) > 1:
        raise bad("groups", discovering, "at most one group to discover (a second would find the same heads)")
    # a discovered group may lie in any layer: its null draws from every layer's other heads unless the task says
    null_pool = data.get("null_pool", "all-layers" if discovering else NULL_POOLS[0])
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
        check_unique_ids(ids, "prompts.pairs[].id", bad)
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
            for j, item in enumerate(as_list(spec[key])):
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
        corrupt = spec.get("corrupt", "answer")
        if corrupt not in CORRUPTIONS:
            raise bad("prompts.corrupt", corrupt, f"one of {', '.join(CORRUPTIONS)}")
        if corrupt == "previous" and repeat > spec["length"] - 3:
            raise bad("prompts.repeat", repeat, f"at most {spec['length'] - 3} with corrupt = \"previous\" (the word before the "
                      "answer trades places with the second-to-last word, which must lie after the answer)")


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
    if isinstance(spec, dict) and "discover" in spec:
        check_keys(spec, DISCOVER_KEYS, where, source)
        n = spec["discover"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad(f"{where}.discover", n, "an integer >= 1: how many heads to find at the final checkpoint")
    elif isinstance(spec, dict):
        check_keys(spec, GROUP_KEYS + DISCOVER_KEYS, where, source)
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
        raise bad(where, spec, "a non-empty list of [layer, head] pairs, {layer = L, heads = [...]}, or {discover = N}")


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
    levels = spec.get("levels", list(LEVELS))
    if not isinstance(levels, list) or len(levels) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        raise bad(f"{where}.levels", levels, "three numbers [strong, moderate, weak]")
    if not levels[0] > levels[1] > levels[2] > 0:
        raise bad(f"{where}.levels", levels, "descending and positive: strong > moderate > weak > 0")
    bound = CONTRAST_BOUND[metric]
    if levels[0] >= bound:
        raise bad(f"{where}.levels", levels, f"a strong level below {bound:g}: a contrast of {metric} lies in "
                                             f"[-{bound:g}, {bound:g}], so it could never be crossed")  # fmt: skip
    return Contrast(spec["name"], spec["plus"], spec["minus"], metric, tuple(float(v) for v in levels))
