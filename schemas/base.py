"""Shared building blocks of the spec language: the strict base model and field-pointing errors."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def spec_error(field: str, message: str, **values: Any) -> PydanticCustomError:
    """An error for a cross-field rule that points at `field` (dotted, relative to the model raising it).

    The loader appends `field` to pydantic's location so the message lands on the offending key's line.
    """
    return PydanticCustomError("spec", message, {"field": field, **values})


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


def kinded(*members: type[Strict], default: str | None, description: str) -> Any:
    """A union of configs told apart by their `kind`; a mapping without `kind` is read as `default`.

    With `default=None` the `kind` key is required. One member needs no union: its `kind` has a default.
    """
    if len(members) == 1:
        return Annotated[members[0], Field(description=description)]

    def kind_of(value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get("kind", default)
        return getattr(value, "kind", None)

    kind_of.default_kind = default  # type: ignore[attr-defined]  # read by the loader for did-you-mean
    tagged = tuple(Annotated[m, Tag(m.model_fields["kind"].default)] for m in members)
    return Annotated[Union[tagged], Discriminator(kind_of), Field(description=description)]  # noqa: UP007
