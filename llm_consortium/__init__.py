"""llm-consortium: several models answer, an arbiter synthesizes.

This module holds the two ``llm`` hooks and the public names. The public
names are imported on first use (PEP 562), so loading the plugin — which every
``llm`` command does, even ``llm --version`` — costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

import llm

__version__ = "0.8.0"

_PUBLIC = {
    "ConsortiumConfig": "llm_consortium.config",
    "ConsortiumModel": "llm_consortium.model",
    "ConsortiumOrchestrator": "llm_consortium.orchestrator",
    "DatabaseConnection": "llm_consortium.db",
    "IterationContext": "llm_consortium.results",
    "create_consortium": "llm_consortium.orchestrator",
}

__all__ = [*_PUBLIC, "register_commands", "register_models"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llm_consortium' has no attribute '{name}'")


@llm.hookimpl
def register_commands(cli):
    from .cli import register

    register(cli, *(_commands_of(module) for module in ("reports", "run_command", "batch_commands")))


def _commands_of(module: str) -> Any:
    """A callback adding ``module``'s commands to the ``llm consortium``
    group, importing it only when the group is built."""

    def add(consortium: Any) -> None:
        importlib.import_module(f"{__name__}.{module}").register(consortium)

    return add


_warned: set[tuple[str, str]] = set()


def _warn_once(where: str, message: str) -> None:
    """``llm`` calls ``register_models`` on every ``llm.get_model()`` (once
    per member of a run): say each problem with a database once per process."""
    import click

    from .terminal import printable

    if (where, message) not in _warned:
        _warned.add((where, message))
        click.echo(printable(message), err=True)


@llm.hookimpl
def register_models(register):
    """Every saved consortium becomes a model. Never raises: a problem with
    the store or a row is one warning on stderr, and the rest still load."""
    from .errors import ConsortiumError
    from .db import logs_db_path, read_config_rows_for_startup

    where = ""  # the database, as far as it is known
    try:
        where = str(logs_db_path())
        rows = read_config_rows_for_startup()
    except ConsortiumError as ex:
        _warn_once(where, f"llm-consortium: saved consortia not loaded: {ex}")
        return
    if not rows:
        return
    from .model import ConsortiumModel
    from .saved import configs_from_rows

    for name, config in configs_from_rows(rows, warn=lambda text: _warn_once(where, text)).items():
        register(ConsortiumModel(name, config))
