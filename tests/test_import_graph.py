"""The package's modules import one another without a cycle (drawn by
scripts/import_graph.py), and only db.py names the tables."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = re.compile(
    # whole words: the original's helper ``_get_consortium_configs`` is not a table name
    r"\b(consortium_runs|consortium_members|arbiter_decisions|response_embeddings|consensus_clusters"
    r"|consortium_configs|consortium_evals|consortium_eval_results)\b"
)


def load_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_has_no_cycle():
    script = load_script()
    graph = script.import_graph()
    assert "llm_consortium.db" in graph and "llm_consortium.cli" in graph["llm_consortium.reports"]
    assert script.cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    script = load_script()
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert script.cycles(graph) == [["a", "b", "c"]]


def test_only_db_py_names_the_tables():
    naming = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "llm_consortium").rglob("*.py")
        if TABLES.search(path.read_text())
    )
    assert naming == ["llm_consortium/db.py"]
