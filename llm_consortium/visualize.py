"""``visualize``: one run as an interactive plotly page.

Top: the response embeddings the run stored (written by the semantic
strategy) projected to 2-D with PCA (numpy SVD; no
scikit-learn needed) — colour = iteration, marker symbol = model, hover = the
member's answer; outliers are outlined. Bottom: the arbiter's confidence, the
geometric confidence and the members' mean self-reported confidence per
iteration, with the threshold. A run without embeddings gets the confidence
chart and a note saying why the map is missing.

plotly and numpy are imported inside the functions (the ``visualize`` extra).
"""

from __future__ import annotations

import html
import pathlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .errors import ConsortiumError
from .db import Store, json_column

INSTALL_HINT = "visualize needs plotly: pip install 'llm-consortium[visualize]'"
SYMBOLS = (
    "circle", "square", "diamond", "triangle-up", "x", "cross",
    "star", "hexagon", "triangle-down", "pentagon", "hourglass", "bowtie",
)
EXCERPT_CHARS = 280
ONE_ITERATION_COLOUR = "#3b528b"  # a Viridis blue
CDN_NOTE = (
    "Note: the page loads plotly.js from cdn.plot.ly, so it needs an internet connection; "
    "leave out --cdn for a page that works offline"
)
# Shown in a --cdn page when plotly.js could not be loaded (offline), instead of a blank page.
CDN_FALLBACK = (
    '<script>if (typeof Plotly === "undefined") {'
    'var note = document.createElement("p"); note.id = "plotly-missing";'
    'note.style.cssText = "font: 16px sans-serif; padding: 1em; color: #a00";'
    'note.textContent = "plotly.js could not be loaded from cdn.plot.ly: this page needs an '
    'internet connection. Write it without --cdn (llm consortium visualize) for a page that '
    'works offline.";'
    "document.body.insertBefore(note, document.body.firstChild);}</script>"
)
NO_EMBEDDINGS_NOTE = (
    "No response embeddings were stored for this run (the semantic strategy stores them), "
    "so only the confidence chart is shown."
)


@dataclass
class Point:
    x: float
    y: float
    iteration: int
    model: str
    label: str
    hover: str
    outlier: bool


def require_plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ConsortiumError(INSTALL_HINT) from None
    return go


def default_output(run_id: str) -> pathlib.Path:
    return pathlib.Path(f"consortium-run-{run_id[:8]}.html")


def project_2d(vectors: list[list[float]]) -> tuple[list[tuple[float, float]], list[float]]:
    """PCA to two dimensions: ``(coordinates, explained variance ratios)``.
    Signs are fixed (largest loading positive) so a page is reproducible."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=float)
    centered = matrix - matrix.mean(axis=0)
    if len(matrix) < 2 or not np.any(centered):
        return [(0.0, 0.0)] * len(matrix), [0.0, 0.0]
    _, singular, components = np.linalg.svd(centered, full_matrices=False)
    components = components[:2]
    for row in components:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    coords = centered @ components.T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    variance = singular**2
    ratios = (variance[:2] / variance.sum()).tolist() + [0.0, 0.0]
    return [(float(x), float(y)) for x, y in coords[:, :2]], ratios[:2]


def _excerpt(text: Any) -> str:
    flat = " ".join(str(text or "").split())
    if len(flat) > EXCERPT_CHARS:
        flat = flat[: EXCERPT_CHARS - 3] + "..."
    words, lines, width = flat.split(" "), [], 0
    for word in words:  # wrap for the hover box
        if lines and width + len(word) < 70:
            lines[-1] += " " + word
            width += len(word) + 1
        else:
            lines.append(word)
            width = len(word)
    return "<br>".join(html.escape(line) for line in lines)


def embedding_points(details: dict[str, Any]) -> tuple[list[Point], list[float], int]:
    """The run's embedded responses in 2-D, the explained variance ratios,
    and how many embeddings were skipped (unreadable or of another size)."""
    members_by_response = {row["response_id"]: row for row in details["members"]}
    members_by_id = {(row["iteration"], str(row["member_id"])): row for row in details["members"]}
    outliers = {
        (row["iteration"], str(item))
        for row in details["decisions"]
        for item in json_column(row.get("outliers_json"), [])
    }
    rows = []
    for row in details["embeddings"]:
        vector = json_column(row.get("embedding_json"), None)
        if isinstance(vector, list) and vector and all(isinstance(v, (int, float)) for v in vector):
            rows.append((row, vector))
    sizes = Counter(len(vector) for _, vector in rows)
    if not sizes:
        return [], [0.0, 0.0], len(details["embeddings"])
    size = sizes.most_common(1)[0][0]
    kept = [(row, vector) for row, vector in rows if len(vector) == size]
    coords, ratios = project_2d([vector for _, vector in kept])
    points = []
    for (row, _), (x, y) in zip(kept, coords):
        member = members_by_response.get(row.get("response_id")) or members_by_id.get(
            (row.get("iteration"), str(row.get("member_id")))
        ) or {}
        iteration = row.get("iteration") or member.get("iteration") or 0
        member_id = str(row.get("member_id") or member.get("member_id") or "?")
        model = row.get("model") or member.get("model") or "?"
        label = f"#{member_id} {model}" + (f"[{member['instance']}]" if "instance" in member else "")
        confidence = member.get("confidence")
        hover = (
            f"<b>{html.escape(label)}</b> · iteration {iteration}"
            + (f" · confidence {confidence:g}" if confidence is not None else "")
            + "<br>"
            + _excerpt(member.get("answer") or member.get("response") or "")
        )
        points.append(
            Point(x, y, int(iteration), model, label, hover, (iteration, member_id) in outliers)
        )
    return points, ratios, len(details["embeddings"]) - len(kept)


def confidence_series(details: dict[str, Any]) -> dict[str, list[Any]]:
    """Per iteration with a decision: arbiter, geometric and mean member confidence."""
    series: dict[str, list[Any]] = {"iteration": [], "arbiter": [], "geometric": [], "members": []}
    for decision in details["decisions"]:
        number = decision["iteration"]
        member_values = [
            row["confidence"]
            for row in details["members"]
            if row["iteration"] == number and row.get("confidence") is not None and not row.get("error")
        ]
        series["iteration"].append(number)
        series["arbiter"].append(decision.get("confidence"))
        series["geometric"].append(decision.get("geometric_confidence"))
        series["members"].append(
            round(sum(member_values) / len(member_values), 4) if member_values else None
        )
    return series


def build_figure(details: dict[str, Any]) -> Any:
    go = require_plotly()
    from plotly.subplots import make_subplots

    run = details["run"]
    points, ratios, skipped = embedding_points(details)
    if points:
        figure = make_subplots(
            rows=2,
            cols=1,
            row_heights=[0.68, 0.32],
            vertical_spacing=0.13,
            subplot_titles=("Response embeddings (PCA to 2-D)", "Confidence per iteration"),
        )
        _add_embeddings(go, figure, points, ratios)
        confidence_row: dict[str, int] = {"row": 2, "col": 1}
        height = 900
    else:
        figure = go.Figure()
        confidence_row = {}
        height = 520
    _add_confidence(go, figure, details, confidence_row)
    notes = []
    if not points:
        notes.append(NO_EMBEDDINGS_NOTE)
    if skipped:
        notes.append(f"{skipped} embedding(s) of another size or unreadable were left out.")
    for number, note in enumerate(notes):
        figure.add_annotation(
            text=html.escape(note), xref="paper", yref="paper", x=0, y=1.12 - 0.06 * number,
            xanchor="left", showarrow=False, font={"size": 12, "color": "#666"},
        )
    prompt = " ".join(str(run.get("user_prompt") or "").split())
    prompt = prompt if len(prompt) <= 100 else prompt[:97] + "..."
    figure.update_layout(
        title={
            "text": (
                f"Consortium run {html.escape(run['id'][:8])} — "
                f"{html.escape(run.get('config_name') or 'one-off')} "
                f"({html.escape(str(run.get('strategy')))}, {html.escape(str(run.get('status')))})"
                f"<br><sup>{html.escape(prompt)}</sup>"
            )
        },
        height=height,
        margin={"t": 140 if notes else 110, "b": 150},
        # Below the charts, so that the iteration colour bar on the right never covers it.
        legend={
            "groupclick": "toggleitem", "orientation": "h",
            "x": 0, "xanchor": "left", "y": -0.12 if points else -0.25, "yanchor": "top",
        },
        template="plotly_white",
    )
    return figure


def _add_embeddings(go: Any, figure: Any, points: list[Point], ratios: list[float]) -> None:
    models = list(dict.fromkeys(point.model for point in points))
    top = max(point.iteration for point in points)
    for index, model in enumerate(models):
        mine = [point for point in points if point.model == model]
        if top > 1:  # colour = iteration, with a colour bar from 1 to the last iteration
            colour: dict[str, Any] = {
                "color": [point.iteration for point in mine],
                "colorscale": "Viridis",
                "cmin": 1,
                "cmax": top,
                "showscale": index == 0,
                "colorbar": {"title": {"text": "Iteration"}, "dtick": 1, "len": 0.6, "y": 0.72},
            }
        else:  # one iteration: nothing for a colour bar to tell
            colour = {"color": ONE_ITERATION_COLOUR}
        figure.add_trace(
            go.Scatter(
                x=[point.x for point in mine],
                y=[point.y for point in mine],
                mode="markers",
                name=model,
                legendgroup="models",
                legendgrouptitle={"text": "Model"},
                text=[point.hover for point in mine],
                customdata=[[point.iteration, point.label] for point in mine],
                hovertemplate="%{text}<extra></extra>",
                marker={
                    "symbol": SYMBOLS[index % len(SYMBOLS)],
                    "size": 14,
                    **colour,
                    "line": {
                        "width": [3 if point.outlier else 1 for point in mine],
                        "color": ["#d62728" if point.outlier else "#333" for point in mine],
                    },
                },
            ),
            row=1,
            col=1,
        )
    figure.update_xaxes(title_text=f"PC1 ({ratios[0]:.0%} of variance)", row=1, col=1)
    figure.update_yaxes(title_text=f"PC2 ({ratios[1]:.0%} of variance)", row=1, col=1)


def _add_confidence(go: Any, figure: Any, details: dict[str, Any], where: dict[str, int]) -> None:
    series = confidence_series(details)
    lines = [("arbiter", "Arbiter confidence", "solid"), ("members", "Mean member confidence", "dot")]
    if any(value is not None for value in series["geometric"]):
        lines.insert(1, ("geometric", "Geometric confidence", "dash"))
    for key, name, dash in lines:
        figure.add_trace(
            go.Scatter(
                x=series["iteration"],
                y=series[key],
                mode="lines+markers",
                name=name,
                legendgroup="confidence",
                legendgrouptitle={"text": "Confidence"},
                line={"dash": dash},
                hovertemplate=f"{name}: %{{y:.3f}}<br>iteration %{{x}}<extra></extra>",
            ),
            **where,
        )
    threshold = details["run"].get("confidence_threshold")
    if threshold is not None:
        figure.add_hline(
            y=threshold, line_dash="dot", line_color="#999",
            annotation_text=f"threshold {threshold:g}", **where,
        )
    figure.update_xaxes(title_text="Iteration", dtick=1, **where)
    figure.update_yaxes(title_text="Confidence", range=[0, 1.05], **where)


def write_run_page(
    store: Store, run_id: str | None, output: str | pathlib.Path | None = None, cdn: bool = False
) -> pathlib.Path:
    """Write the run's page (the latest run for ``run_id=None``); returns its
    path. ``cdn`` loads plotly.js from the web instead of embedding it (the
    page then needs a connection)."""
    require_plotly()
    details = store.run_details(run_id)
    figure = build_figure(details)
    path = pathlib.Path(output) if output else default_output(details["run"]["id"])
    return write_figure_page(figure, path, cdn=cdn)


def write_figure_page(figure: Any, path: pathlib.Path, cdn: bool = False) -> pathlib.Path:
    """A self-contained page (plotly.js embedded: works offline), or a small
    one loading plotly.js from the web with ``cdn`` (which says so on the page
    when plotly.js cannot be loaded). Also used by ``eval``."""
    page = figure.to_html(include_plotlyjs="cdn" if cdn else True, full_html=True)
    if cdn:
        page = page.replace("</body>", CDN_FALLBACK + "\n</body>", 1)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as ex:
        raise ConsortiumError(f"Cannot write {path}: {ex.strerror or ex}") from None
    return path
