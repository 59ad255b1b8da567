"""`visualize`: a self-contained plotly page of one run, checked by parsing
the figure data out of the written HTML."""

import json
import re
import sys

import llm
import pytest

from llm_consortium.db import save_response_embedding, shared_store
from llm_consortium.visualize import NO_EMBEDDINGS_NOTE, project_2d

from test_reports import two_iteration_run

EMBEDDER = {"embedding_models": {"fake-embed": {"dims": 16}}}


def figure(path):
    """The ``data`` and ``layout`` passed to ``Plotly.newPlot`` in a page."""
    page = path.read_text()
    div_id = re.search(r'<div id="([^"]+)" class="plotly-graph-div"', page).group(1)
    call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(page, call.end())
    layout, _ = decoder.raw_decode(page, re.compile(r"\s*,\s*").match(page, end).end())
    return data, layout


def run_id():
    return shared_store().resolve_run_id(None)


def store_embeddings(run):
    """Embed every member answer of the run with the fake embedder, the way
    the semantic strategy stores them."""
    embedder = llm.get_embedding_model("fake-embed")
    members = shared_store().run_details(run)["members"]
    for m in members:
        vector = embedder.embed(f"{m['answer']} from {m['member_id']}")
        save_response_embedding(m["response_id"], run, vector, m["model"], embedding_model="fake-embed")
    return members


def test_page_shows_each_embedded_response_and_confidence(cli, fakes, tmp_path):
    two_iteration_run(cli, fakes)
    with fakes(EMBEDDER):
        members = store_embeddings(run_id())
    out = tmp_path / "run.html"
    result = cli("consortium", "visualize", run_id()[:6], "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"

    data, layout = figure(out)
    points = [trace for trace in data if trace["mode"] == "markers"]
    assert [trace["name"] for trace in points] == ["fake-a", "fake-b"]
    assert [len(trace["x"]) for trace in points] == [4, 2]  # 2 instances x 2 iterations, 1 x 2
    assert sorted(points[0]["marker"]["color"]) == [1, 1, 2, 2]
    assert sorted(points[1]["marker"]["color"]) == [1, 2]
    assert points[0]["marker"]["symbol"] != points[1]["marker"]["symbol"]
    hovers = [text for trace in points for text in trace["text"]]
    assert len(hovers) == len(members) == 6
    assert sum("#3 fake-b[0]" in text and "41" in text for text in hovers) == 2
    assert sum("confidence 0.9" in text for text in hovers) == 4
    assert all(isinstance(value, float) for trace in points for value in trace["x"] + trace["y"])

    arbiter = next(trace for trace in data if trace["name"] == "Arbiter confidence")
    assert (arbiter["x"], arbiter["y"]) == ([1, 2], [0.667, 0.667])
    members_mean = next(trace for trace in data if trace["name"] == "Mean member confidence")
    assert members_mean["y"] == [0.8, 0.8]
    assert "Response embeddings" in json.dumps(layout["annotations"])
    assert NO_EMBEDDINGS_NOTE not in json.dumps(layout)
    # Offline by default: plotly.js is inside the page, nothing loaded from a CDN.
    page = out.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "plotly.js v" in page and len(page) > 1_000_000


def test_run_without_embeddings_gets_the_confidence_chart_and_a_note(cli, fakes, tmp_path, monkeypatch):
    two_iteration_run(cli, fakes)
    monkeypatch.chdir(tmp_path)
    result = cli("consortium", "visualize", run_id())
    expected = f"consortium-run-{run_id()[:8]}.html"
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    data, layout = figure(tmp_path / expected)
    assert all(trace["mode"] == "lines+markers" for trace in data)
    assert [trace["name"] for trace in data] == ["Arbiter confidence", "Mean member confidence"]
    assert NO_EMBEDDINGS_NOTE in [note["text"] for note in layout["annotations"]]
    assert "threshold 0.8" in [note["text"] for note in layout["annotations"]]


def test_geometric_confidence_is_plotted_when_recorded(cli, tmp_path):
    from test_reports import hand_made_run

    hand_made_run("geo-run")
    out = tmp_path / "geo.html"
    assert cli("consortium", "visualize", "geo", "-o", str(out)).exit_code == 0
    data, _ = figure(out)
    geometric = next(trace for trace in data if trace["name"] == "Geometric confidence")
    assert (geometric["x"], geometric["y"]) == ([1], [0.6125])


def test_cdn_writes_a_small_page_that_loads_plotly_from_the_web(cli, fakes, tmp_path):
    two_iteration_run(cli, fakes)
    out = tmp_path / "small.html"
    assert cli("consortium", "visualize", run_id(), "-o", str(out), "--cdn").exit_code == 0
    page = out.read_text()
    assert 'src="https://cdn.plot.ly/' in page
    assert len(page) < 100_000
    assert figure(out)[0]


def test_opens_a_browser_only_with_open(cli, fakes, tmp_path, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    two_iteration_run(cli, fakes)
    out = tmp_path / "page.html"
    cli("consortium", "visualize", run_id(), "-o", str(out))
    assert opened == []
    cli("consortium", "visualize", run_id(), "-o", str(out), "--open")
    assert opened == [out.resolve().as_uri()]


def test_missing_and_ambiguous_ids_are_one_line_errors(cli, tmp_path, monkeypatch):
    from test_reports import hand_made_run

    monkeypatch.chdir(tmp_path)
    missing = cli("consortium", "visualize", "nope")
    assert missing.exit_code == 1
    assert missing.stderr == "Error: Consortium run 'nope' not found.\n"
    hand_made_run("dup-1")
    hand_made_run("dup-2")
    ambiguous = cli("consortium", "visualize", "dup")
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr == "Error: Run id prefix 'dup' is ambiguous; give more characters.\n"
    assert list(tmp_path.glob("*.html")) == []


def test_without_plotly_it_names_the_extra(cli, monkeypatch, tmp_path):
    from test_reports import hand_made_run

    hand_made_run("some-run")
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    result = cli("consortium", "visualize", "some-run", "-o", str(tmp_path / "x.html"))
    assert result.exit_code == 1
    assert result.stderr == "Error: visualize needs plotly: pip install 'llm-consortium[visualize]'\n"
    assert not (tmp_path / "x.html").exists()


def test_projection_keeps_the_main_direction_of_spread():
    # Points on a line along (1, 1, 0): all variance on PC1, none on PC2.
    coords, ratios = project_2d([[0, 0, 0], [1, 1, 0], [2, 2, 0], [3, 3, 0]])
    assert ratios[0] == pytest.approx(1.0) and ratios[1] == pytest.approx(0.0, abs=1e-12)
    xs = [x for x, _ in coords]
    assert xs == pytest.approx([-1.5 * 2**0.5, -0.5 * 2**0.5, 0.5 * 2**0.5, 1.5 * 2**0.5])
    assert all(y == pytest.approx(0.0, abs=1e-12) for _, y in coords)
    assert project_2d([[1.0, 2.0]]) == ([(0.0, 0.0)], [0.0, 0.0])
    assert project_2d([[1.0, 2.0], [1.0, 2.0]]) == ([(0.0, 0.0), (0.0, 0.0)], [0.0, 0.0])


def test_visualize_without_a_run_id_shows_the_latest_run(cli, fakes, user_dir, tmp_path):
    with fakes({"alpha": {"answer": "A"}, "judge": {"arbiter": True}}):
        cli("consortium", "save", "team", "-m", "alpha", "--arbiter", "judge", "--max-iterations", "1")
        cli("-m", "team", "first")
        cli("-m", "team", "latest")
        output = tmp_path / "latest.html"
        result = cli("consortium", "visualize", "-o", str(output))
    assert result.exit_code == 0, result.output
    from conftest import db_rows

    ids = {row["user_prompt"]: row["id"] for row in db_rows(user_dir, "select id, user_prompt from consortium_runs")}
    page = output.read_text()
    assert f"Consortium run {ids['latest'][:8]}" in page
    assert f"Consortium run {ids['first'][:8]}" not in page


def test_open_without_a_browser_says_so_and_fails(cli, fakes, tmp_path, monkeypatch):
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: False)  # what it returns with no browser
    two_iteration_run(cli, fakes)
    out = tmp_path / "page.html"
    result = cli("consortium", "visualize", run_id(), "-o", str(out), "--open")
    assert result.exit_code == 1
    assert result.stdout == f"{out}\n"
    assert result.stderr == f"Error: No web browser found to open {out}; the page is written, open it yourself\n"
    assert out.exists()


def test_cdn_warns_that_the_page_needs_a_connection_and_the_page_says_so_offline(cli, fakes, tmp_path):
    two_iteration_run(cli, fakes)
    out = tmp_path / "small.html"
    result = cli("consortium", "visualize", run_id(), "-o", str(out), "--cdn")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"
    assert result.stderr == (
        "Note: the page loads plotly.js from cdn.plot.ly, so it needs an internet connection; "
        "leave out --cdn for a page that works offline\n"
    )
    # Drawn by the browser when plotly.js did not load (test_visualize_browser renders it).
    assert 'if (typeof Plotly === "undefined")' in out.read_text()
    # The embedded (default) page has no such fallback and no note.
    embedded = cli("consortium", "visualize", run_id(), "-o", str(tmp_path / "big.html"))
    assert embedded.stderr == "" and "plotly-missing" not in (tmp_path / "big.html").read_text()
