"""Strict at the door: the tables a user writes (a task file, a run config) are checked by declared types.

Each table is a pydantic model (`Table`: strict, so `layer = "6"` is refused rather than read as 6; unknown keys
forbidden; frozen). A field says what it allows once, in its `description` ("an integer >= 0"), and that text is the
refusal. `validated` turns pydantic's first error into the project's one-line `ConfigError`, naming the field by its
table path (`prompts.pairs[0].wrong`), the value seen and what is allowed; an unknown key gets a single
did-you-mean (`errors.did_you_mean`). A check that needs several fields at once raises `Refusal` from a validator,
naming its field relative to the table. Pydantic's own multi-line text never reaches the user.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, RootModel, Tag, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from pythia_sweep.errors import ConfigError, did_you_mean

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


class Table(BaseModel):
    """A table of a file the user writes: strict types, no unknown key, frozen."""

    model_config = STRICT
    WHEN_MISSING: ClassVar[dict[str, str]] = {}  # field -> what a refusal of its absence says, where not its description


class Refusal(ValueError):
    """Raised by a table's validator: `at` names the field below the table (keys and indices), `value` what was
    seen there, `allowed` what would be right."""

    def __init__(self, at: tuple, value: object, allowed: str):
        self.at, self.value, self.allowed = at, value, allowed
        super().__init__(allowed)


def at_least(minimum: int, why: str = "") -> Any:
    """An integer type with a floor, its refusal written from it: 'an integer >= 1: how many ...'."""
    return Annotated[int, Field(ge=minimum, description=f"an integer >= {minimum}{why}")]


def one_of(choices: tuple[str, ...]) -> Any:
    """A string type of a fixed set of choices: 'one of a, b, c'."""
    return Annotated[Literal[choices], Field(description=f"one of {', '.join(choices)}")]


# A name a user gives (a task's, a study's): it becomes part of experiment names, tags and folders.
ShortName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="a short name of letters, digits, '-', '_' or '.'")]


def validated(model: Any, data: object, prefix: str = "") -> Any:
    """`data` as a `model` (a Table, or any declared type), or the first refusal as one ConfigError line whose field
    starts with `prefix` (a task file's `"<file>: "`; the whole field's name for a lone value). Which error is first:
    an unknown key (a typo explains the value then found missing), then a validator's refusal (the value had the
    shape of the union member that refused it), then pydantic's first."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return TypeAdapter(model).validate_python(data, strict=True)
    except ValidationError as error:
        raise _refusal(error, model, prefix) from None


def _refusal(error: ValidationError, model: Any, prefix: str) -> ConfigError:
    errors = error.errors()
    refused = [e for e in errors if isinstance((e.get("ctx") or {}).get("error"), Refusal)]
    first = next((e for e in errors if e["type"] == "extra_forbidden"), (refused or errors)[0])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, Refusal):
        path, _, _, _ = _walk(model, (*first["loc"], *cause.at))
        return ConfigError(prefix + path, cause.value, cause.allowed)
    path, allowed, owner, known = _walk(model, first["loc"])
    if first["type"] == "extra_forbidden":
        key = first["loc"][-1]
        return ConfigError(prefix + path, first["input"], f"{did_you_mean(key, known)}a known key here ({', '.join(known)})")
    if first["type"] == "missing":
        field = first["loc"][-1]
        return ConfigError(prefix + path, None, getattr(owner, "WHEN_MISSING", {}).get(field, allowed))
    return ConfigError(prefix + path, first["input"], allowed or first["msg"])


def _walk(model: Any, loc: tuple) -> tuple[str, str, type | None, list[str]]:
    """Follow an error's location through the declared types: the table path it names (`contrasts[0].levels`), the
    innermost description on the way (what is allowed there), the table that holds the last key, and that table's
    known keys (for an unknown one)."""
    path, allowed, tp, owner, known = "", "", model, None, []
    for step in loc:
        tp, text = _unwrap(tp)
        allowed = text or allowed
        if isinstance(tp, type) and issubclass(tp, RootModel):
            tp, text = _unwrap(tp.model_fields["root"].annotation)
            allowed = text or allowed
        if _is_union(tp):  # the location names the member: its tag, or its class; another member's label ends the walk
            member = next((m for m in get_args(tp) if _names_member(step, m)), None)
            if member is None:
                break
            tp, text = _unwrap(member)
            allowed = text or allowed
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or name: f for name, f in tp.model_fields.items()}
            owner, known = tp, list(fields)
            path = f"{path}.{step}" if path else str(step)
            if step not in fields:  # an unknown key, or a refusal's name for several fields ("pairs[].id")
                tp = None
                continue
            field = fields[step]
            tp, text = _unwrap(field.annotation)
            allowed = field.description or text
        elif get_origin(tp) in (list, tuple) and isinstance(step, int):
            path += f"[{step}]"
            args = get_args(tp)
            tp = args[0] if get_origin(tp) is list or args[-1] is Ellipsis else args[min(step, len(args) - 1)]
        elif get_origin(tp) is dict and isinstance(step, str):
            path = f"{path}.{step}" if path else step
            tp = get_args(tp)[1]
        else:
            break
    tp, text = _unwrap(tp)
    if _is_union(tp) and not (text or allowed):  # an untagged union: its members' description (`int >= 0 | "auto"`)
        text = next((t for m in get_args(tp) if (t := _unwrap(m)[1])), "")
    return path, text or allowed, owner, known


def _unwrap(tp: Any) -> tuple[Any, str]:
    """A type without its Annotated layers and its `| None`, and the description found on the way."""
    text = ""
    while True:
        if get_origin(tp) is Annotated:
            for meta in tp.__metadata__:
                if isinstance(meta, FieldInfo) and meta.description:
                    text = text or meta.description
            tp = get_args(tp)[0]
        elif _is_union(tp) and type(None) in get_args(tp):
            rest = [m for m in get_args(tp) if m is not type(None)]
            if len(rest) != 1:
                tp = Union[tuple(rest)]  # noqa: UP007 (built from a list)
                continue
            tp = rest[0]
        else:
            return tp, text


def _names_member(label: object, member: Any) -> bool:
    """Whether an error location's `label` is pydantic's name for a union's member: its tag, its class, or its class
    behind a validator (`function-after[_check(), HeadTable]`)."""
    tags = {x.tag for x in getattr(member, "__metadata__", ()) if isinstance(x, Tag)}
    inner = _unwrap(member)[0]
    if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
        return label in tags
    return label in tags or label == inner.__name__ or str(label).endswith(f", {inner.__name__}]")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)
