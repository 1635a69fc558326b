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
  [groups]     named head groups, each a list of (layer, head); a group may span layers. One group may be left
               to be found (`{ discover = N }`): the N heads that move the answer most at the model's final
               checkpoint, chosen by a first pass over it (headmap.discover) before the sweep.
  [[contrasts]] named differences of two groups (plus - minus) on one metric: the task's headline numbers.

The conditions of a checkpoint follow from it (measure/conditions.py). This module is the task's model; reading and
checking a file is task/schema.py (`load_task`), making prompt pairs task/pairs.py. A task is validated
twice: its shape when the file is read, and against a model when its tokenizer and config are known
(`Task.tokenize`, `Task.resolve_groups`): every answer must tokenize as a continuation of its prompt, every
head must exist. Refusals name the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pythia_sweep.errors import ConfigError
from pythia_sweep.levels import LEVELS
from pythia_sweep.task.pairs import PromptPair, make_pairs

if TYPE_CHECKING:  # the checked tables a Task carries (task/schema.py builds it from them)
    from pythia_sweep.task.prompts_schema import Prompts
    from pythia_sweep.task.schema import Group

SUCCESS_RULES = ("mentions", "first-answer")
ANSWER_TOKENS = ("continuation", "separate")
RESERVED = ("baseline", "clean", "all", "null")  # condition names the pipeline gives; groups may not take them
GENERIC_HYPOTHESES = {
    "early": "H1: early emergence suggests an architectural bias toward this mechanism",
    "mid": "H3: mid emergence suggests the mechanism is driven by capability development",
    "late": "H2: late emergence suggests a complex learned optimization toward this mechanism",
}


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
    levels: tuple[float, float, float] = LEVELS  # strong / moderate / weak; emergence = above strong

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


PROMPT_PARTS = ("measured", "discovery", "all")


def discovery_split(ids: Sequence[str], source: str = "<task>") -> set[str]:
    """The prompts a task with a group to discover finds its heads on: half of them (rounded down), by the sha256 of
    their ids, so the same half in every process and whatever the order. The sweep measures the other half: heads
    chosen on the prompts that then test them would beat the null by construction."""
    if len(ids) < 2:
        raise ConfigError(f"{source}: prompts", f"{len(ids)} prompt", "at least 2 prompts for a task with a group to discover: "
                          "half of them find the heads, the other half measure them")  # fmt: skip
    by_hash = sorted(ids, key=lambda i: hashlib.sha256(str(i).encode()).hexdigest())
    return set(by_hash[: len(ids) // 2])


@dataclass(frozen=True)
class Task:
    name: str  # short name, used in experiment names and run labels
    question: str  # one line: what the sweep asks (report title)
    source: str  # the file it was read from
    digest: str  # hash of the parsed content: editing the task starts a new sweep
    data: dict = field(repr=False, compare=False)  # the parsed file as written: what the store keeps, what `digest` hashes
    prompts: Prompts = field(repr=False, compare=False)  # the checked [prompts] table
    groups: dict[str, Group] = field(repr=False, compare=False)  # the checked [groups]: each a HeadTable or a HeadList
    layer: int | None = None  # default layer of groups written as heads only
    align: str = "shared-text"  # default alignment of clean and corrupted positions
    same_length: bool = False  # clean and corrupted must tokenize to the same length
    answer_tokens: str = "continuation"  # "continuation": re-tokenized with the prompt; "separate": on their own
    single_token_answers: bool = False  # every answer must be exactly one token
    null_pool: str = "group-layers"  # the null's random head sets: from the first group's layers, or from all layers
    success: SuccessRule = SuccessRule("first-answer")
    contrasts: tuple[Contrast, ...] = ()
    hypotheses: dict = field(default_factory=lambda: dict(GENERIC_HYPOTHESES), compare=False)
    discovered: dict = field(default_factory=dict, compare=False)  # group -> its heads, once a first pass found them
    discovery: dict = field(default_factory=dict, compare=False)  # that pass: checkpoint, prompts, each head's effect

    # -- prompts ----------------------------------------------------------------------------------------
    def pairs(self, tokenizer=None) -> list[PromptPair]:
        """The task's prompt pairs (a tokenizer is needed for repeated-token prompts and tokenization filters)."""
        return make_pairs(self.source, self.prompts, tokenizer)

    def tokenize(self, tokenizer, aligns: Sequence[str] = (), part: str = "measured") -> list[TokenizedPair]:
        """Every pair tokenized once, each answer checked to be a continuation of its prompt, and its
        positions aligned in each of the `aligns` modes (each must leave positions to patch). `part`: the
        prompts measured, the ones a discovery pass chooses heads on, or all (`discovery_split`)."""
        from pythia_sweep.task.align import align_positions, encode

        if part not in PROMPT_PARTS:
            raise ValueError(f"part={part!r}: one of {PROMPT_PARTS}")
        pairs = self.pairs(tokenizer)
        if part != "all" and self.to_discover:
            chosen = discovery_split([p.id for p in pairs], self.source)
            pairs = [p for p in pairs if (p.id in chosen) == (part == "discovery")]
        out = []
        for pair in pairs:
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
        from pythia_sweep.task.align import encode

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
    @property
    def to_discover(self) -> dict[str, int]:
        """The groups the task leaves to be found, and how many heads each: `{ discover = N }`."""
        return {name: group.discover for name, group in self.groups.items() if group.to_discover}

    def with_discovered(self, heads: dict[str, Sequence[Sequence[int]]], discovery: dict | None = None) -> Task:
        """This task with its `{ discover = N }` groups filled in (group -> [(layer, head), ...]; each must hold N
        heads), and the pass that found them (measure/checkpoint.discover_groups; None for stand-ins)."""
        for name, size in self.to_discover.items():
            if name not in heads or len(heads[name]) != size:
                raise ConfigError(f"{self.source}: groups.{name}", heads.get(name), f"{size} discovered heads (discover = {size})")
        found = {name: tuple(tuple(h) for h in heads[name]) for name in self.to_discover}
        return replace(self, discovered=found, discovery=discovery or {})

    def found_by(self, discovery: dict) -> Task:
        """This task with the heads a discovery pass (measure/checkpoint.discover_groups) chose."""
        return self.with_discovered({name: group["heads"] for name, group in discovery["groups"].items()}, discovery)

    def resolve_groups(self, n_layers: int, n_heads: int, layer: int | None = None) -> dict[str, tuple[tuple[int, int], ...]]:
        """Named groups as (layer, head) tuples for a model of this shape; `layer` overrides the task's default."""
        default_layer = self.layer if layer is None else layer
        groups = {}
        for name, group in self.groups.items():
            where, spec = f"{self.source}: groups.{name}", self.data["groups"][name]
            if group.to_discover:
                if name not in self.discovered:
                    raise ConfigError(where, spec, "its heads found first (run/driver.run_sweep's discovery pass; Task.with_discovered)")
                pairs = list(self.discovered[name])
            else:
                pairs = group.heads_at(n_heads, default_layer)
                if pairs is None:
                    raise ConfigError(where, spec, "a layer: give `layer = N` in the group or at the top of the task")
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
        return list(self.groups)

    @property
    def headline(self) -> Contrast:
        return self.contrasts[0]

    def describe(self) -> dict:
        """What a record or a report needs to know of the task, JSON-able."""
        return {"name": self.name, "question": self.question, "source": self.source, "digest": self.digest}


