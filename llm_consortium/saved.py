"""Saved consortium configurations: loading rows tolerantly, and nesting checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .config import ConsortiumConfig
from .errors import ConfigError, ConsortiumError
from .db import Store


def parse_config_row(row: dict[str, Any]) -> ConsortiumConfig:
    try:
        data = json.loads(row["config"])
    except (TypeError, ValueError) as ex:
        raise ConfigError(f"stored configuration is not valid JSON ({ex})") from None
    if not isinstance(data, dict):
        raise ConfigError("stored configuration is not a JSON object")
    data["created_at"] = row.get("created_at")
    return ConsortiumConfig.from_dict(data)


def configs_from_rows(
    rows: list[dict[str, Any]], warn: bool | Callable[[str], None] = True
) -> dict[str, ConsortiumConfig]:
    """Parse every row; a row that cannot be parsed is skipped with a warning
    (on stderr, or passed to ``warn`` when it is a callable)."""
    configs: dict[str, ConsortiumConfig] = {}
    for row in rows:
        try:
            configs[row["name"]] = parse_config_row(row)
        except ConsortiumError as ex:
            message = f"llm-consortium: skipping saved consortium '{row.get('name')}': {ex}"
            if callable(warn):
                warn(message)
            elif warn:
                click.echo(message, err=True)
    return configs


def load_configs(store: Store, warn: bool = True) -> dict[str, ConsortiumConfig]:
    return configs_from_rows(store.config_rows(), warn=warn)


def find_cycle(
    name: str, config: ConsortiumConfig, configs: dict[str, ConsortiumConfig]
) -> list[str] | None:
    """The nesting path that leads back to ``name``, if any.

    ``configs`` are the other saved consortia; ``config`` is the (new)
    definition of ``name``. Members and the arbiter both count.
    """
    graph = dict(configs)
    graph[name] = config

    def children(node: str) -> list[str]:
        node_config = graph.get(node)
        if node_config is None:
            return []
        names = list(node_config.models) + ([node_config.arbiter] if node_config.arbiter else [])
        return [child for child in names if child in graph]

    def visit(node: str, path: list[str]) -> list[str] | None:
        for child in children(node):
            if child == name:
                return [*path, child]
            if child not in path:
                found = visit(child, [*path, child])
                if found:
                    return found
        return None

    return visit(name, [name])


def check_no_cycle(
    name: str, config: ConsortiumConfig, configs: dict[str, ConsortiumConfig]
) -> None:
    cycle = find_cycle(name, config, configs)
    if cycle:
        raise ConfigError(
            f"Consortium '{name}' would contain itself: {' -> '.join(cycle)}"
        )
