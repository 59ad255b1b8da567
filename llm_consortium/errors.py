"""The errors llm-consortium raises.

Library code raises these; the CLI turns them into ``click.ClickException`` at
its edge, and ``ConsortiumModel.execute`` turns run failures into
``llm.ModelError`` so that ``llm -m NAME`` prints one line.
"""

from __future__ import annotations

import llm

from .terminal import printable


class ConsortiumError(Exception):
    """Base class for every error this plugin raises on purpose.

    Messages often quote a provider's error or a stored value, and they end
    up printed (by the CLI, by ``llm``, in a traceback): control characters in
    them are made visible here, once, whoever prints them."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(ConsortiumError, ValueError):
    """A consortium configuration or a model spec is invalid."""


def first_invalid(ex: Exception, default: str) -> tuple[str, str, dict]:
    """A pydantic ``ValidationError``'s first error: where (dotted field
    path, else ``default``), its message, and the error itself."""
    error = ex.errors()[0]  # type: ignore[attr-defined]
    return ".".join(str(part) for part in error["loc"]) or default, error["msg"], error


class NotFoundError(ConsortiumError, KeyError):
    """A saved consortium or a run does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not
        return str(self.args[0]) if self.args else ""


class StoreError(ConsortiumError):
    """The consortium database cannot be opened, read or written."""


class RunFailed(ConsortiumError, llm.ModelError):
    """A consortium run could not produce an answer."""
