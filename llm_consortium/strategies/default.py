from __future__ import annotations

from .base import Strategy


class DefaultStrategy(Strategy):
    name = "default"
    description = "Run all configured members and synthesize their responses."
