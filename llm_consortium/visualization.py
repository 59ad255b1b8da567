"""The original plugin's ``llm_consortium.visualization`` name.

``generate_run_visualization(run_id)`` returns the run's plotly ``Figure``
(the one ``llm consortium visualize`` writes as HTML, see :mod:`.visualize`):
the response embeddings projected to 2-D, coloured by iteration, and the
confidence per iteration. Needs the ``visualize`` extra (plotly).
"""

from __future__ import annotations

from typing import Any


def generate_run_visualization(run_id: str) -> Any:
    """The plotly ``Figure`` of run ``run_id`` (a unique prefix will do)."""
    from .db import shared_store
    from .visualize import build_figure, require_plotly

    require_plotly()
    return build_figure(shared_store().run_details(run_id))
