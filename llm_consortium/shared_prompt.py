"""A long prompt stored once per run.

Every member is sent the user's prompt, and the arbiter's prompt and later
iterations' refinement prompts quote it: a 5 MB prompt would be stored once
per member and call. The run row keeps it (``user_prompt``); a member's or
the arbiter's prompt that contains it is stored as the pieces around it
(``compact``) and rebuilt when read (``expand``).

A compacted text starts with ``PREFIX`` followed by the JSON list of pieces;
any text that starts with ``PREFIX`` is always stored in that form, so
reading it back is unambiguous whatever a model wrote.
"""

from __future__ import annotations

import json

PREFIX = "\x00llm-consortium:pieces-around-the-run-prompt\x00"
MIN_LENGTH = 1024  # shorter prompts are stored as they are


def compact(text: str | None, prompt: str | None) -> str | None:
    """``text`` as stored: the pieces around each occurrence of ``prompt``."""
    if text is None:
        return None
    long = prompt is not None and len(prompt) >= MIN_LENGTH
    if (long and prompt in text) or text.startswith(PREFIX):
        pieces = text.split(prompt) if long else [text]
        return PREFIX + json.dumps(pieces, ensure_ascii=False)
    return text


def expand(text: str | None, prompt: str | None) -> str | None:
    """The text ``compact`` was given."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        return text
    try:
        pieces = json.loads(text[len(PREFIX) :])
    except ValueError:
        return text
    if not isinstance(pieces, list) or not all(isinstance(piece, str) for piece in pieces):
        return text
    return (prompt or "").join(pieces)
