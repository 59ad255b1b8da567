"""The original plugin's ``llm_consortium.models`` names, where they live here.

``ConsortiumConfig`` (:mod:`.config`), ``ConsortiumModel`` (:mod:`.model`),
``parse_models`` (:mod:`.specs`) and the saved configurations.
"""

from __future__ import annotations

from .config import ConsortiumConfig
from .model import ConsortiumModel
from .specs import parse_models

__all__ = ["ConsortiumConfig", "ConsortiumModel", "parse_models"]


def _get_consortium_configs() -> dict[str, ConsortiumConfig]:
    """Every saved consortium by name (rows that cannot be read are skipped)."""
    from .saved import load_configs
    from .db import shared_store

    return load_configs(shared_store(), warn=False)
