"""Shared building blocks of the spec language: the strict base model and field-pointing errors."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Union

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

# Integers up to 2**53 are exactly representable as floats: YAML reads `1e5` as the float 100000.0, which is
# taken as the integer 100000; `1e26` is not exactly the integer it looks like, so it is an error.
EXACT_FLOAT_INT = 2**53


@dataclass(frozen=True)
class Why:
    """Why an int field has the upper bound it has (`le=` in its Field); the error message says it."""

    reason: str


def at_most(limit: int, reason: str) -> Any:
    """An int with an upper bound past which no value can be meant: `steps: at_most(99_999_999, "...")`.

    The JSON Schema gets `maximum`; a larger value is an error naming the bound and `reason`.
    """
    return Annotated[int, Field(le=limit), Why(reason)]


# Upper bounds past which a value cannot be meant (a slipped exponent, a value pasted into the wrong key):
# larger values are errors that give the bound and its reason. Memory that a real value needs is what
# `engine plan` checks against the device instead.
Steps = at_most(99_999_999, "checkpoint directories number steps with 8 digits")
Examples = at_most(2**24, "16.7M examples, 16x the largest training batches studied")
Width = at_most(2**16, "one transformer block that wide already holds 51.5B parameters")
Hidden = at_most(2**18, "an FFN that wide at width 4,096 already holds 2.1B parameters")
Depth = at_most(4096, "4x DeepNet's 1,000 layers, the deepest transformers trained")
Heads = at_most(2**16, "heads divide the width, which is at most 2^16")
Experts = at_most(2**20, "as many as the largest published mixture of experts")
Tokens = at_most(2**24, "16.7M tokens, far past any tokenizer's vocabulary or trained context")
Nodes = at_most(2**16, "more nodes than the largest clusters hold")
ProcsPerNode = at_most(1024, "more ranks than any node has GPUs or CPU cores")


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are validated on assignment.

    Numbers are taken as written: a count (int field) takes a whole number, a boolean is not a number, a
    quoted number is a string, and infinities and NaN are not accepted anywhere.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        """Apply the field's plain-value rule (whole numbers for ints, no booleans or quoted numbers)."""
        rule = _rule(cls, info.field_name)
        return value if rule is None else rule.check(value)


def spec_error(field: str, message: str, **values: Any) -> PydanticCustomError:
    """An error for a cross-field rule that points at `field` (dotted, relative to the model raising it).

    The loader appends `field` to pydantic's location so the message lands on the offending key's line.
    """
    return PydanticCustomError("spec", message, {"field": field, **values})


# ----------------------------------------------------------------------------- plain values


@dataclass(frozen=True)
class _Rule:
    """What a field's scalar (and list items) must be: 'int', 'float' or 'bool', and an int's upper bound."""

    scalar: str | None
    item: str | None
    limit: int | None
    reason: str | None

    def check(self, value: Any) -> Any:
        """`value` as the field should see it, or a 'spec' error saying what is wrong with it."""
        if isinstance(value, list | tuple) and self.item:
            items, problems = list(value), Problems()
            for i, v in enumerate(items):
                try:
                    items[i] = _plain(self.item, v, None, None, str(i))
                except PydanticCustomError as e:
                    problems.add(str(i), e.message())
            problems.check()
            return items if isinstance(value, list) else tuple(items)
        if self.scalar:
            return _plain(self.scalar, value, self.limit, self.reason, "")
        return value


def _show(value: Any) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def _plain(kind: str, value: Any, limit: int | None, reason: str | None, at: str) -> Any:
    bound = f" of at most {limit:,} ({reason})" if limit is not None else ""
    if kind == "bool":
        if not isinstance(value, bool) and isinstance(value, int | float | str):
            raise spec_error(at, f"{_show(value)} is not a boolean; write true or false")
        return value
    if isinstance(value, bool):
        raise spec_error(at, f"{_show(value)} is a boolean, not a number; write a number")
    if isinstance(value, str):
        try:
            float(value.replace("_", ""))
        except ValueError:
            return value  # not a number at all: pydantic says what it expected
        raise spec_error(at, f"{value!r} is a quoted string, not a number; write it without quotes")
    if kind == "int" and isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise spec_error(at, f"{value!r} is not a whole number; write an integer{bound}")
        if abs(value) >= EXACT_FLOAT_INT:
            raise spec_error(
                at,
                f"{value!r} is a float too large to stand for an exact integer (YAML reads a number "
                f"with an exponent as a float); write an integer{bound}",
            )
        value = int(value)
    if kind == "int" and limit is not None and isinstance(value, int) and value > limit:
        raise spec_error(at, f"{value:,} is too large: at most {limit:,} ({reason})")
    return value


def _members(tp: Any) -> list[Any]:
    """The members of a union (through Optional and Annotated), or [tp]."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _bound(tp: Any, metadata: list[Any]) -> tuple[int | None, str | None]:
    """The `le` bound and its `Why` of an annotation built by `at_most` (or of the field itself)."""
    found = list(metadata)
    todo = [tp]
    while todo:
        t = todo.pop()
        if typing.get_origin(t) is Annotated:
            inner, *meta = typing.get_args(t)
            for m in meta:
                found.extend(getattr(m, "metadata", [m]))
            todo.append(inner)
        elif typing.get_origin(t) in (Union, types.UnionType):
            todo.extend(typing.get_args(t))
    reasons = [m.reason for m in found if isinstance(m, Why)]
    limits = [m.le for m in found if isinstance(m, annotated_types.Le)]
    return (min(limits), reasons[0]) if reasons and limits else (None, None)


def _kind_of_number(members: list[Any]) -> str | None:
    if bool in members:
        return "bool" if not ({int, float, str} & set(members)) else None
    if str in members:
        return None
    if float in members:
        return "float"
    return "int" if int in members else None


@cache
def _rule(cls: type[BaseModel], name: str) -> _Rule | None:
    """The plain-value rule of field `name` of `cls` (None when the field holds no numbers or booleans)."""
    field = cls.model_fields.get(name)
    if field is None:
        return None
    members = _members(field.annotation)
    items: list[Any] = []
    for m in members:
        if typing.get_origin(m) in (list, tuple):
            args = [a for a in typing.get_args(m) if a is not Ellipsis]
            items.extend(x for a in args for x in _members(a))
    scalar, item = _kind_of_number(members), _kind_of_number(items)
    if scalar is None and item is None:
        return None
    limit, reason = _bound(field.annotation, field.metadata) if scalar == "int" else (None, None)
    return _Rule(scalar, item, limit, reason)


# ----------------------------------------------------------------------------- rules across fields


class Problems:
    """Collects what a cross-field rule finds wrong, so that every problem is reported at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        """Record a problem at `field` (dotted, relative to the model being validated)."""
        self.items.append((field, message))

    def check(self) -> None:
        """Raise one error carrying all recorded problems (the loader reports each on its own line)."""
        if self.items:
            field, message = self.items[0]
            raise PydanticCustomError("spec", message, {"field": field, "problems": list(self.items)})


# ----------------------------------------------------------------------------- kinded unions


@dataclass(frozen=True)
class _KindRequired:
    """JSON Schema of a kinded union: every member but the default one requires its `kind` key.

    Without it, a mapping without `kind` (read as the default kind) would match every member that has the
    same keys, and editors would flag a valid spec as "valid under each of" the members of a `oneOf`.
    """

    kinds: tuple[str, ...]  # the members' kinds, in the order of the union (and of its `oneOf`)
    default: str | None

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        options = schema["oneOf"]
        if len(options) != len(self.kinds):
            raise AssertionError(f"oneOf of {len(options)} schemas for the kinds {self.kinds}")
        for i, kind in enumerate(self.kinds):
            if kind != self.default:
                options[i] = {"allOf": [options[i], {"required": ["kind"]}]}
        return schema


def kinded(*members: type[Strict], default: str | None, description: str) -> Any:
    """A union of configs told apart by their `kind`; a mapping without `kind` is read as `default`.

    With `default=None` the `kind` key is required. One member needs no union: its `kind` has a default.
    In the JSON Schema, `kind` is required of every member but the default one, as the loader reads it.
    """
    if len(members) == 1:
        return Annotated[members[0], Field(description=description)]

    def kind_of(value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get("kind", default)
        return getattr(value, "kind", None)

    kind_of.default_kind = default  # type: ignore[attr-defined]  # read by the loader for did-you-mean
    kinds = tuple(m.model_fields["kind"].default for m in members)
    tagged = tuple(Annotated[m, Tag(k)] for m, k in zip(members, kinds, strict=True))
    union = Union[tagged]  # noqa: UP007
    return Annotated[
        union, Discriminator(kind_of), _KindRequired(kinds, default), Field(description=description)
    ]
