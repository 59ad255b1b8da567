"""Parsing ``MODEL[:COUNT]`` member specs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import ConfigError

MAX_COUNT = 1000
# ASCII digits only: "ok:٣" (an Arabic-Indic three) is a model id, not "ok" × 3.
_COUNT_SUFFIX = re.compile(r"^(?P<model>.+):(?P<count>-?[0-9]+)$")


def parse_model_spec(spec: str, default_count: int = 1) -> tuple[str, int]:
    """Split ``"gpt-4o:2"`` into ``("gpt-4o", 2)``.

    Only a trailing ``:`` followed by digits is a count, so
    ``ollama/llama3.2:3b`` stays one model id.
    """
    text = (spec or "").strip()
    if not text:
        raise ConfigError("Empty model spec: give a model id, optionally with :COUNT")
    match = _COUNT_SUFFIX.match(text)
    if match:
        model, count = match.group("model"), int(match.group("count"))
    else:
        model, count = text, default_count
    check_count(model, count, entry=text)
    return model, count


def check_count(model: str, count: object, entry: str | None = None) -> int:
    label = entry or f"{model}:{count}"
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigError(f"Invalid count in '{label}': must be a whole number")
    if count < 1:
        raise ConfigError(f"Invalid count in '{label}': must be at least 1")
    if count > MAX_COUNT:
        raise ConfigError(f"Invalid count in '{label}': at most {MAX_COUNT} instances")
    return count


def parse_models(
    models: Iterable[str] | Mapping[str, int], default_count: int = 1
) -> dict[str, int]:
    """Turn specs (or a ``{model: count}`` mapping) into an ordered dict.

    The same model given twice adds up: ``["a:1", "a:2"]`` → ``{"a": 3}``.
    """
    check_count("-n/--count", default_count, entry=f"--count {default_count}")
    result: dict[str, int] = {}
    if isinstance(models, Mapping):
        pairs = [
            (str(model).strip(), check_count(str(model), count))
            for model, count in models.items()
        ]
    elif isinstance(models, str):
        pairs = [parse_model_spec(models, default_count)]
    else:
        pairs = [parse_model_spec(spec, default_count) for spec in models]
    for model, count in pairs:
        if not model:
            raise ConfigError("Empty model id in the member list")
        result[model] = result.get(model, 0) + count
        if result[model] > MAX_COUNT:
            raise ConfigError(f"Too many instances of '{model}': at most {MAX_COUNT}")
    if not result:
        raise ConfigError("A consortium needs at least one member model (-m MODEL)")
    return result
