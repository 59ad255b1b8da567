"""How the commands print text that may hold a model's, a provider's or the
database's words: control characters made visible (``terminal.printable``)
and configured keys redacted (``redaction.redact_values``)."""

from __future__ import annotations

from typing import Any

import click

from .redaction import redact_values
from .terminal import printable


def safe_echo(message: Any = "", **options: Any) -> None:
    """``click.echo`` for every line we print that holds text from a model,
    a provider or the database."""
    click.echo(printable(redact_values(message if isinstance(message, str) else str(message))), **options)
