"""The errors llm-consortium raises.

Library code raises these; the CLI turns them into ``click.ClickException`` at
its edge, and ``ConsortiumModel.execute`` turns run failures into
``llm.ModelError`` so that ``llm -m NAME`` prints one line.
"""

from __future__ import annotations

import llm


class ConsortiumError(Exception):
    """Base class for every error this plugin raises on purpose."""


class ConfigError(ConsortiumError, ValueError):
    """A consortium configuration or a model spec is invalid."""


class NotFoundError(ConsortiumError, KeyError):
    """A saved consortium or a run does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not
        return str(self.args[0]) if self.args else ""


class StoreError(ConsortiumError):
    """The consortium database cannot be opened, read or written."""


class RunFailed(ConsortiumError, llm.ModelError):
    """A consortium run could not produce an answer."""
