"""Prompt templates, shipped as package data and loaded once."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def load(name: str) -> str:
    """The text of ``prompts/NAME``; a missing template is an error, never ``""``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
