"""The [prompts] table's schema: one strict pydantic model per kind (written pairs, templates x values, repeated
random tokens), chosen by `kind`.

What each key allows is its description and its refusal (pythia_sweep/validation.py); the defaults declared here are
the ones the generators (task/pairs.py) read, by attribute. A table whose kind is missing or unknown is refused at
`prompts.kind`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from pythia_sweep.task.pairs import CORRUPTIONS, as_list, check_unique_ids
from pythia_sweep.validation import STRICT, Refusal, Table, at_least, one_of

MAX_PROMPTS = 2000  # a templates task without `count` may expand to at most this many prompts

Text = Annotated[str, Field(min_length=1, description="present and not empty")]
OneOrMore = BeforeValidator(lambda value: as_list(value) if isinstance(value, (str, dict)) else value)  # `x` reads as `[x]`


class PairTable(Table):
    id: Annotated[str, Field(description="a prompt id (default p<index>)")] | None = None
    clean: Text
    corrupted: Text
    correct: Annotated[list[Text], OneOrMore, Field(min_length=1, description="present and not empty")]
    wrong: Annotated[list[Text], OneOrMore, Field(min_length=1, description="present and not empty")]
    weight: at_least(1, ": how many identical greedy trials this prompt stands for") = 1


class PairsPrompts(Table):
    kind: Literal["pairs"]
    pairs: Annotated[list[Annotated[PairTable, Field(description="a {clean, corrupted, correct, wrong} table")]],
                     Field(min_length=1, description="a non-empty list of {clean, corrupted, correct, wrong} tables")]  # fmt: skip

    def ids(self) -> list[str]:
        """Each pair's id: its own, or its place in the list (p0, p1, ...)."""
        return [p.id or f"p{i}" for i, p in enumerate(self.pairs)]

    @model_validator(mode="after")
    def _ids_once(self):
        check_unique_ids(self.ids(), "pairs[].id", lambda at, v, a: Refusal((at,), v, a))
        return self


class TemplateTable(Table):
    clean: Text
    corrupted: Text


class RangeTable(Table):
    range: Annotated[list[int], Field(min_length=2, max_length=2, description="[low, high]: two integers, low <= high (both included)")]
    format: Annotated[str, Field(description='a format for each integer, e.g. "{:02d}"')] = "{}"

    @model_validator(mode="after")
    def _low_first(self):
        if self.range[0] > self.range[1]:
            raise Refusal(("range",), self.range, "[low, high]: two integers, low <= high (both included)")
        return self


class NumberRange(Table):
    """Answers that are a range of numbers: {numbers = "{n:02d}", above or from (default 0), below or up_to}."""

    ALLOWED: ClassVar[str] = '{numbers = "{n:02d}", above or from (default 0), below or up_to}'
    numbers: Annotated[str, Field(description=ALLOWED)]
    above: Annotated[int | str, Field(description="an integer, or a template of one")] | None = None
    from_: Annotated[int | str, Field(alias="from", description="an integer, or a template of one")] = 0
    below: Annotated[int | str, Field(description="an integer, or a template of one")] | None = None
    up_to: Annotated[int | str, Field(description="an integer, or a template of one")] | None = None

    @model_validator(mode="after")
    def _has_an_end(self):
        if self.below is None and self.up_to is None:
            raise Refusal((), self.model_dump(by_alias=True, exclude_unset=True), self.ALLOWED)
        return self


AnswerItem = Annotated[Text | NumberRange, Field(description="an answer template (a string) or a number range table")]
Answers = Annotated[list[AnswerItem], OneOrMore, Field(min_length=1, description='one or more answer templates (e.g. " {correct}")')]
Values = Annotated[RangeTable | Annotated[list[Any], Field(min_length=1)],
                   Field(description='a non-empty list of values, or {range = [low, high], format = "{:02d}"}')]


class TemplatesPrompts(Table):
    kind: Literal["templates"]
    templates: Annotated[list[TemplateTable], Field(min_length=1, description="a non-empty list of {clean, corrupted} template tables")]
    values: Annotated[list[dict[str, Any]], Field(min_length=1, description="a non-empty list of rows, each a table of named values")] | None = None
    tables: Annotated[dict[str, Values], Field(min_length=1, description='a table of named value lists, e.g. {noun = ["war", "siege"]}')] | None = None
    distinct: Annotated[list[str], Field(default_factory=list, description="the value names that must differ within a row")]
    count: at_least(1, ": how many (template, row) combinations to draw") | None = None
    seed: Annotated[int, Field(description="an integer: seeds the draw of `count` prompts")] = 0
    id: Annotated[str, Field(description='an id pattern, e.g. "t{template}-r{row}"')] = "t{template}-r{row}"
    correct: Answers
    wrong: Answers
    keep_if_single_tokens: Annotated[list[list[str]], BeforeValidator(lambda v: [v] if isinstance(v, list) and v and isinstance(v[0], str) else v),
                                     Field(default_factory=list, description="the parts that must each be one token (a list, or a list of them)")]  # fmt: skip
    weight: at_least(1, ": how many identical greedy trials each prompt stands for") = 1

    @model_validator(mode="after")
    def _rows_and_size(self):
        if (self.values is None) == (self.tables is None):
            raise Refusal((), sorted(self.model_fields_set), "exactly one of values = [rows] or tables = {name = [values]} to fill the templates")
        n = len(self.templates) * self.row_count()
        if self.count is None and n > MAX_PROMPTS:
            raise Refusal((), f"{len(self.templates)} templates x {self.row_count()} rows = {n} prompts",
                          f"at most {MAX_PROMPTS} prompts without `count`: set count = N to draw N of them (seeded)")  # fmt: skip
        return self

    def row_count(self) -> int:
        """Rows the values or tables give, before `distinct` filtering (cheap: no product built)."""
        if self.values is not None:
            return len(self.values)
        return math.prod(t.range[1] - t.range[0] + 1 if isinstance(t, RangeTable) else len(t) for t in self.tables.values())


class RepeatedTokensPrompts(Table):
    kind: Literal["repeated-tokens"]
    count: at_least(1)
    length: at_least(4)
    seed: Annotated[int, Field(description="an integer: seeds the words drawn")] = 0
    repeat: Annotated[int, Field(description="an integer in 1..length - 1 (words repeated before the answer)")] | None = None
    prefix: Annotated[str, Field(description="text before each sequence")] = ""
    corrupt: one_of(tuple(CORRUPTIONS)) = "answer"

    @model_validator(mode="after")
    def _repeat_fits(self):
        if not 1 <= self.repeated < self.length:
            raise Refusal(("repeat",), self.repeat, f"an integer in 1..{self.length - 1} (words repeated before the answer)")
        if self.corrupt == "previous" and self.repeated > self.length - 3:
            raise Refusal(("repeat",), self.repeat, f"at most {self.length - 3} with corrupt = \"previous\" (the word before the "
                          "answer trades places with the second-to-last word, which must lie after the answer)")  # fmt: skip
        return self

    @property
    def repeated(self) -> int:
        """Words repeated before the answer (default: half the sequence)."""
        return self.length // 2 if self.repeat is None else self.repeat


KINDS = (PairsPrompts, TemplatesPrompts, RepeatedTokensPrompts)
PROMPT_KINDS = tuple(get_args(m.model_fields["kind"].annotation)[0] for m in KINDS)  # "pairs", "templates", "repeated-tokens"


class UnknownKind(Table):
    """Where a [prompts] table whose kind is missing or unknown is sent: its refusal names `prompts.kind`."""

    model_config = STRICT | {"extra": "allow"}
    kind: one_of(PROMPT_KINDS)


Prompts = Annotated[Union[(*(Annotated[m, Tag(k)] for m, k in zip(KINDS, PROMPT_KINDS)), Annotated[UnknownKind, Tag("?")])],
                    Discriminator(lambda v: v.get("kind") if isinstance(v, dict) and v.get("kind") in PROMPT_KINDS else "?"),
                    Field(description="a table with kind = one of " + ", ".join(PROMPT_KINDS))]  # fmt: skip
