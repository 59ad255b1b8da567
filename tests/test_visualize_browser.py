"""`visualize` pages rendered by a real browser (headless Chromium): what the
reader sees, measured from the laid-out page rather than the figure JSON.

Needs a `chromium` executable; `.ci/run` installs it. Each check renders the
page at the widths people use and reads the boxes of the legend, its group
titles and the colour bar with `getBoundingClientRect()`.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_reports import MODELS
from test_visualize import EMBEDDER, figure, run_id, store_embeddings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs a chromium executable (apt-get install chromium; .ci/run installs it)"
    ),
]

WIDTHS = (1200, 1600)

# Appended to a copy of the page: once plotly has drawn, write the boxes of the
# parts we care about into an attribute that --dump-dom prints.
MEASURE = """<script>
setTimeout(function () {
  function boxes(selector) {
    return Array.from(document.querySelectorAll(selector)).map(function (element) {
      var r = element.getBoundingClientRect();
      return {text: element.textContent, left: r.left, top: r.top, right: r.right, bottom: r.bottom};
    });
  }
  var missing = document.getElementById("plotly-missing");
  document.body.setAttribute("data-geometry", JSON.stringify({
    page: boxes("svg.main-svg").slice(0, 1),
    legend: boxes("g.legend"),
    legend_texts: boxes("g.legend text.legendtext"),
    colorbar: boxes("g.colorbar"),
    missing: missing ? missing.textContent : null
  }));
}, 1000);
</script>"""


def render(page, width, offline=False):
    """Lay the page out in headless Chromium at ``width`` px; the measured boxes."""
    probe = page.with_name(f"{page.stem}-{width}.html")
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>", 1))
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={page.parent / f'chromium-{width}'}",
        f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
    ]
    if offline:  # every host name fails to resolve, as with no network
        args.append("--host-resolver-rules=MAP * ~NOTFOUND")
    result = subprocess.run([*args, probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-geometry="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def render_widths(page, **kwargs):
    with ThreadPoolExecutor(len(WIDTHS)) as pool:
        return dict(zip(WIDTHS, pool.map(lambda width: render(page, width, **kwargs), WIDTHS)))


def overlap(a, b):
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def page_of_a_run(cli, fakes, tmp_path, iterations, *extra):
    with fakes(MODELS):
        saved = cli(
            "consortium", "save", "team", "-m", "fake-a:2", "-m", "fake-b", "--arbiter", "fake-arb",
            "--min-iterations", str(iterations), "--max-iterations", str(iterations),
        )
        assert saved.exit_code == 0, saved.output
        assert cli("-m", "team", "What is six times seven?").exit_code == 0
    with fakes(EMBEDDER):
        store_embeddings(run_id())
    out = tmp_path / f"run{iterations}.html"
    result = cli("consortium", "visualize", "-o", str(out), *extra)
    assert result.exit_code == 0, result.output
    return out


def test_the_iteration_colour_bar_never_covers_the_legend(cli, fakes, tmp_path):
    page = page_of_a_run(cli, fakes, tmp_path, 2)
    for width, boxes in render_widths(page).items():
        [legend], [colorbar], [svg] = boxes["legend"], boxes["colorbar"], boxes["page"]
        assert not overlap(legend, colorbar), width
        texts = {box["text"]: box for box in boxes["legend_texts"]}
        # The group headings and every model's entry are drawn, inside the page, uncovered.
        assert {"Model", "Confidence", "fake-a", "fake-b", "Arbiter confidence"} <= set(texts), width
        for text in texts.values():
            assert not overlap(text, colorbar), (width, text)
            assert svg["left"] <= text["left"] and text["right"] <= svg["right"], (width, text)
            assert svg["top"] <= text["top"] and text["bottom"] <= svg["bottom"], (width, text)


def test_a_one_iteration_run_gets_no_colour_bar_running_to_two(cli, fakes, tmp_path):
    page = page_of_a_run(cli, fakes, tmp_path, 1)
    data, _ = figure(page)
    markers = [trace["marker"] for trace in data if trace["mode"] == "markers"]
    assert markers and all("cmax" not in marker and not marker.get("showscale") for marker in markers)
    for width, boxes in render_widths(page).items():
        assert boxes["colorbar"] == [], width
        assert {"Model", "fake-a", "fake-b"} <= {box["text"] for box in boxes["legend_texts"]}, width


def test_a_cdn_page_opened_offline_says_why_it_is_blank(cli, fakes, tmp_path):
    page = page_of_a_run(cli, fakes, tmp_path, 1, "--cdn")
    boxes = render(page, WIDTHS[0], offline=True)
    assert boxes["missing"].startswith("plotly.js could not be loaded from cdn.plot.ly")
    assert "without --cdn" in boxes["missing"]
