"""Strategy parameters declared as pydantic models, and the one path that
turns raw values (CLI strings, saved JSON, Python values) into typed ones.

A strategy declares ``class Params(StrategyParams)`` with one field per
parameter — ``Field(default, description=..., ge=..., le=...)``; ``Literal``
for a choice, ``list[str]`` for a repeatable one. :func:`validate_params`
reads the CLI's conventions before pydantic validates:

* a bare ``KEY`` (``True``) is true for a boolean, and needs a value otherwise;
* a repeated key (a list) is a list parameter's values, and an error otherwise;
* words (``false``/``0``/``no``/``off`` …) are booleans; numbers are range-checked.

Each failure becomes one line: ``Invalid strategy parameter 'NAME': …``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, StringConstraints

from ..defaults import FALSE_WORDS, TRUE_WORDS
from ..errors import ConfigError

#: One non-empty, stripped text value (the items of a list parameter).
NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class StrategyParams(BaseModel):
    """Base of every strategy's ``Params`` model."""

    model_config = ConfigDict(
        extra="ignore", allow_inf_nan=False, str_strip_whitespace=True, frozen=True
    )


def kind(annotation: Any) -> str:
    """``int``, ``float``, ``bool``, ``str`` or ``list``: the CLI's name of a
    field's type (``Optional`` and ``Literal`` unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        [annotation] = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return kind(annotation)
    if origin is Literal:
        return "str"
    if origin in (list, tuple):
        return "list"
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> tuple[str, ...] | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def _bounds(field: pydantic.fields.FieldInfo) -> tuple[float | None, float | None]:
    low = next((rule.ge for rule in field.metadata if isinstance(rule, Ge)), None)
    high = next((rule.le for rule in field.metadata if isinstance(rule, Le)), None)
    return low, high


def _default(field: pydantic.fields.FieldInfo) -> Any:
    return field.get_default(call_default_factory=True)


def _prepared(name: str, field: pydantic.fields.FieldInfo, value: Any) -> Any:
    """A raw value shaped for pydantic, or the CLI-convention error."""
    field_kind = kind(field.annotation)
    label = f"Invalid strategy parameter '{name}'"
    if value is True and field_kind != "bool":  # a bare --strategy-param KEY
        example = "NUMBER" if field_kind in ("int", "float") else "VALUE"
        raise ConfigError(f"{label}: needs a value, as in {name}={example}")
    if field_kind == "list":
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)):
        raise ConfigError(f"{label}: given more than once")
    if field_kind == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"{label}: '{value}' is not true/false/yes/no/1/0")
        return word in TRUE_WORDS
    if isinstance(value, bool):
        raise ConfigError(f"{label}: expected a number, got '{value}'")
    if isinstance(value, str) and _choices(field.annotation):
        return value.strip().lower()
    return value


def _message(model: type[StrategyParams], error: Any, raw: Mapping[str, Any]) -> str:
    """One line for pydantic's first error, in the CLI's words."""
    name = str(error["loc"][0]) if error["loc"] else ""
    if not name:
        return f"Invalid strategy parameters: {error['ctx']['error'] if 'ctx' in error else error['msg']}"
    label = f"Invalid strategy parameter '{name}'"
    field = model.model_fields[name]
    field_kind = kind(field.annotation)
    kind_of_error = error["type"]
    if kind_of_error == "value_error":
        return f"{label}: {error['ctx']['error']}"
    if field_kind == "list":
        return f"{label}: expected non-empty text values"
    if kind_of_error in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(field)
        if low is not None and high is not None:
            rule = f"{name} must be between {low:g} and {high:g}"
        elif low is not None:
            rule = f"{name} must be at least {low:g}"
        else:
            rule = f"{name} must be at most {high:g}"
        return f"{label}: {rule}, got {float(error['input']):g}"
    choices = _choices(field.annotation)
    if choices:
        return f"{label}: '{error['input']}'; choose one of {', '.join(choices)}"
    expected = {"int": "a whole number", "float": "a number"}.get(field_kind, f"a {field_kind}")
    return f"{label}: expected {expected}, got '{raw[name]}'"


def validate_params(model: type[StrategyParams], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The declared parameters of ``raw`` typed and range-checked, with defaults
    filled in; ``ConfigError`` (one line) for the first invalid one. Keys the
    model does not declare are not returned."""
    given: dict[str, Any] = {}
    for name, value in (raw or {}).items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        if value is None and _default(field) is None:
            continue  # an optional parameter left unset (as saved configs store it)
        given[name] = _prepared(name, field, value)
    try:
        return model.model_validate(given).model_dump()
    except pydantic.ValidationError as ex:
        raise ConfigError(_message(model, ex.errors()[0], raw or {})) from None


def describe_params(model: type[StrategyParams]) -> list[dict[str, Any]]:
    """Name, type, default and help of each field, with its bounds and choices."""
    described = []
    for name, field in model.model_fields.items():
        info: dict[str, Any] = {
            "name": name,
            "type": kind(field.annotation),
            "default": _default(field),
            "help": field.description or "",
        }
        low, high = _bounds(field)
        if low is not None:
            info["min"] = low
        if high is not None:
            info["max"] = high
        choices = _choices(field.annotation)
        if choices:
            info["choices"] = list(choices)
        described.append(info)
    return described
