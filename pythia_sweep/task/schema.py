"""A task file's schema: each table a strict pydantic model, read once into a Task (task/definition.py holds it).
The [prompts] table's kinds are task/prompts_schema.py.

Every key's type, bounds and default is declared here once, and what a field allows is its description, which is
also the refusal: one line naming the file, the field, the value and what is allowed (pythia_sweep/validation.py).
An unknown key anywhere is refused with the closest known one, never left to a default. The checks that join two
tables (a contrast names a group) are `TaskFile`'s own. Model-dependent checks (answers tokenize, heads exist)
come with the tokenizer and config (`Task.tokenize`, `Task.resolve_groups`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, RootModel, field_validator, model_validator

from pythia_sweep.config import ALIGNMENTS, read_toml
from pythia_sweep.digest import content_digest
from pythia_sweep.errors import did_you_mean
from pythia_sweep.levels import LEVELS
from pythia_sweep.task.definition import (
    ANSWER_TOKENS,
    GENERIC_HYPOTHESES,
    RESERVED,
    SUCCESS_RULES,
    Contrast,
    SuccessRule,
    Task,
)
from pythia_sweep.task.prompts_schema import Prompts
from pythia_sweep.validation import Refusal, ShortName, Table, at_least, one_of, validated

NULL_POOLS = ("group-layers", "all-layers")  # where the null's random head sets are drawn from
# The largest |value| a contrast can reach on each metric: a level above it can never be crossed.
CONTRAST_BOUND = {"success_rate": 1.0, "prob_diff": 2.0, "logprob_diff": math.inf}

Switch = Annotated[bool, Field(description="true or false")]
Line = Annotated[str, Field(description="a line of text")]
Patterns = Annotated[list[Annotated[str, Field(pattern=r"\{answer\}")]], Field(min_length=1, description="a list of patterns, each containing {answer}")]


class SuccessTable(Table):
    rule: one_of(SUCCESS_RULES) = "first-answer"
    correct_patterns: Patterns = Field(default_factory=lambda: ["{answer}"])  # for "mentions": {answer} is each answer, stripped
    wrong_patterns: Patterns = Field(default_factory=lambda: ["{answer}"])
    lowercase: Switch = True

    def success_rule(self) -> SuccessRule:
        return SuccessRule(self.rule, tuple(self.correct_patterns), tuple(self.wrong_patterns), self.lowercase)


HEADS = 'a non-empty list of head indices, "all", or a stride {from = 0, step = 2}'


class Stride(Table):
    from_: Annotated[int, Field(alias="from", description=HEADS)] = 0
    to: Annotated[int, Field(description=HEADS)] | None = None
    step: Annotated[int, Field(ge=1, description=HEADS)] = 1


class HeadTable(Table):
    """A group written as a table: a layer's heads ({layer = L, heads = [...] | "all" | stride}), or heads the sweep
    finds first ({discover = N})."""

    layer: at_least(0) | None = None
    heads: Annotated[Stride | Literal["all"] | Annotated[list[int], Field(min_length=1)], Field(description=HEADS)] | None = None
    discover: at_least(1, ": how many heads to find at the final checkpoint") | None = None

    @model_validator(mode="after")
    def _one_form(self):
        if self.to_discover:
            for key in sorted(self.model_fields_set - {"discover"}):
                raise Refusal((key,), getattr(self, key), f"{did_you_mean(key, ('discover',))}a known key here (discover)")
        elif self.heads is None:
            raise Refusal(("heads",), None, HEADS)
        return self

    @property
    def to_discover(self) -> bool:
        """Whether the group's heads are found by the sweep (`{ discover = N }`) rather than written."""
        return self.discover is not None

    def heads_at(self, n_heads: int, default_layer: int | None) -> list[tuple[int, int]] | None:
        """The written heads as (layer, head) for a model of `n_heads` per layer; None without a layer to put them in."""
        layer = default_layer if self.layer is None else self.layer
        if layer is None:
            return None
        if isinstance(self.heads, Stride):  # a stride over the layer's heads, sized to the model
            heads = range(self.heads.from_, n_heads if self.heads.to is None else self.heads.to, self.heads.step)
        else:
            heads = range(n_heads) if self.heads == "all" else self.heads
        return [(layer, h) for h in heads]


class HeadList(RootModel[Annotated[list[Annotated[list[int], Field(min_length=2, max_length=2)]], Field(min_length=1)]]):
    """A group written as [layer, head] pairs (it may span layers)."""

    model_config = {"strict": True, "frozen": True}
    discover: ClassVar[None] = None
    to_discover: ClassVar[bool] = False  # written, never found

    def heads_at(self, n_heads: int, default_layer: int | None) -> list[tuple[int, int]]:
        return [(layer, head) for layer, head in self.root]


Group = Annotated[HeadTable | HeadList, Field(description="a non-empty list of [layer, head] pairs, {layer = L, heads = [...]}, or {discover = N}")]


class ContrastTable(Table):
    name: Annotated[str, Field(min_length=1, description="a table with name, plus, minus (and optionally metric, levels)")]
    plus: Annotated[str, Field(description="a group name or baseline")] | None = None  # present: TaskFile checks it names a group
    minus: Annotated[str, Field(description="a group name or baseline")] | None = None
    metric: one_of(tuple(CONTRAST_BOUND)) = "success_rate"
    levels: Annotated[list[int | float], Field(min_length=3, max_length=3, description="three numbers [strong, moderate, weak]")] = Field(default_factory=lambda: list(LEVELS))

    @model_validator(mode="after")
    def _levels_reachable(self):
        levels, bound = self.levels, CONTRAST_BOUND[self.metric]
        if not levels[0] > levels[1] > levels[2] > 0:
            raise Refusal(("levels",), levels, "descending and positive: strong > moderate > weak > 0")
        if levels[0] >= bound:
            raise Refusal(("levels",), levels, f"a strong level below {bound:g}: a contrast of {self.metric} lies in "
                                               f"[-{bound:g}, {bound:g}], so it could never be crossed")  # fmt: skip
        return self

    def contrast(self) -> Contrast:
        return Contrast(self.name, self.plus, self.minus, self.metric, tuple(float(v) for v in self.levels))


class Hypotheses(Table):
    early: Line | None = None
    mid: Line | None = None
    late: Line | None = None


class TaskFile(Table):
    """The whole file: its top-level keys, in the order a refusal lists them."""

    WHEN_MISSING: ClassVar[dict[str, str]] = dict.fromkeys(("name", "prompts", "groups"), "present: every task names itself, its prompts and its head groups")
    name: ShortName
    question: Line | None = None
    layer: at_least(0) | None = None
    align: one_of(ALIGNMENTS) = "shared-text"
    same_length: Switch = False
    answer_tokens: one_of(ANSWER_TOKENS) = "continuation"
    single_token_answers: Switch = False
    null_pool: one_of(NULL_POOLS) | None = None
    prompts: Prompts
    success: Annotated[SuccessTable, Field(description="a [success] table")] = SuccessTable()
    groups: Annotated[dict[str, Group], Field(min_length=1, description="a table of named head groups")]
    contrasts: Annotated[list[Annotated[ContrastTable, Field(description="a table with name, plus, minus (and optionally metric, levels)")]],
                         Field(min_length=1, description="at least one [[contrasts]] table: the first is the headline number")] | None = None  # fmt: skip
    hypotheses: Annotated[Hypotheses, Field(description="a [hypotheses] table of early, mid and late")] = Hypotheses()

    @field_validator("groups", mode="before")
    @classmethod
    def _group_names(cls, groups):
        for name in groups if isinstance(groups, dict) else ():
            if name in RESERVED or name.startswith("null") or re.fullmatch(r"L\d+H\d+", name):
                raise Refusal((name,), name, f"a group name other than {', '.join(RESERVED)}, null* or L<layer>H<head> (the pipeline's own)")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
                raise Refusal((name,), name, "a name of letters, digits, '-' or '_'")
        return groups

    @model_validator(mode="after")
    def _tables_agree(self):
        discovering = [name for name, group in self.groups.items() if group.to_discover]
        if len(discovering) > 1:
            raise Refusal(("groups",), discovering, "at most one group to discover (a second would find the same heads)")
        if not self.contrasts:
            raise Refusal(("contrasts",), None, "at least one [[contrasts]] table: the first is the headline number")
        for i, contrast in enumerate(self.contrasts):
            for side in ("plus", "minus"):
                if getattr(contrast, side) not in (*self.groups, "baseline"):
                    raise Refusal(("contrasts", i, side), getattr(contrast, side), f"a group name ({', '.join(self.groups)}) or baseline")
        names = [c.name for c in self.contrasts]
        if len(set(names)) != len(names):
            raise Refusal(("contrasts",), names, "contrasts with distinct names")
        clash = sorted(set(names) & (set(self.groups) | set(RESERVED)))
        if clash:
            raise Refusal(("contrasts",), clash[0], "a contrast name that is not also a group or condition name")
        return self

    @property
    def pool(self) -> str:
        """The null's pool: a discovered group may lie in any layer, so its null draws from every layer's other heads
        unless the task says otherwise."""
        return self.null_pool or ("all-layers" if any(g.to_discover for g in self.groups.values()) else NULL_POOLS[0])


def load_task(path: str | Path) -> Task:
    """Read and check a task file's shape; model-dependent checks come with the tokenizer and config."""
    return task_from_dict(read_toml(path, "task", "tasks"), str(path))


def task_from_dict(data: dict, source: str = "<task>") -> Task:
    """A task from a file's parsed table (`source` names the file in refusals). `data` travels with the task (to
    workers and the store) and its content digest is the task's identity."""
    file: TaskFile = validated(TaskFile, data, f"{source}: ")
    written = file.hypotheses.model_dump(exclude_none=True)
    return Task(
        name=file.name, question=file.question or file.name, source=source, digest=content_digest(data), data=data,
        prompts=file.prompts, groups=dict(file.groups), layer=file.layer, align=file.align, same_length=file.same_length,
        answer_tokens=file.answer_tokens, single_token_answers=file.single_token_answers, null_pool=file.pool,
        success=file.success.success_rule(), contrasts=tuple(c.contrast() for c in file.contrasts),
        hypotheses={**GENERIC_HYPOTHESES, **written},
    )  # fmt: skip
