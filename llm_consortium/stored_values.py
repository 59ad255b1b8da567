"""Values read from the database are untrusted.

A hand-edit or another tool may leave text where a number belongs (a
``duration_ms`` of ``'slow'``) or bytes where text belongs. Rows are checked
at the store's one read point against the kind each column should hold
(the store says which): a number stored as text that reads as a number is
used as that number; anything else that is not a number becomes ``None``
(reports skip it); bytes in a text column are decoded. What was skipped is
collected, and the command line says it once per command
(``take_warning``), so reports show what they can and never raise.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

NUMBER = "number"
TEXT = "text"

_lock = threading.Lock()
#: column -> the first value skipped in it, since the last ``take_warning``
_skipped: dict[str, Any] = {}


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            number = float(text.strip())
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return None


def _note(column: str, value: Any) -> None:
    with _lock:
        _skipped.setdefault(column, value)


def checked(rows: Iterable[dict[str, Any]], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """``rows`` with each value of a column in ``kinds`` made the kind it
    should be, or ``None`` (noted for ``take_warning``)."""
    result = []
    for row in rows:
        for column, value in row.items():
            kind = kinds.get(column)
            if value is None or kind is None:
                continue
            if kind == NUMBER and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                       and math.isfinite(value)):
                number = _as_number(value)
                if number is None:
                    _note(column, value)
                row[column] = number
            elif kind == TEXT and isinstance(value, bytes):
                row[column] = value.decode("utf-8", "replace")
        result.append(row)
    return result


def take_warning() -> str | None:
    """One line about the values skipped since the last call (None if none),
    and forget them."""
    with _lock:
        skipped = dict(_skipped)
        _skipped.clear()
    if not skipped:
        return None
    columns = sorted(skipped)
    example = f"{columns[0]} = {skipped[columns[0]]!r}"[:60]
    return (
        f"llm-consortium: warning: skipped stored values of the wrong type in "
        f"{', '.join(columns)} (e.g. {example}); the database was edited by hand or by another tool"
    )
