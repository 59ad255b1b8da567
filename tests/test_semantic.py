"""The semantic strategy end to end, offline: members are scripted fake models
and answers are embedded by the fake plugin's bag-of-words hashing embedder
through the ``llm`` embedding backend (``--embedding-backend llm
--embedding-model bow``). Driven through `llm consortium save` + `llm -m NAME`
and through `create_consortium`; the database rows are checked."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import llm
import numpy as np
import pytest

from llm_consortium import create_consortium
from llm_consortium.config import ConsortiumConfig
from llm_consortium.embeddings import EmbeddingService, get_backend
from llm_consortium.strategies import get_strategy_class

from conftest import fake_models, db_rows as rows

PARIS_1 = "The capital of France is Paris."
PARIS_2 = "Paris is the capital of France."
PARIS_3 = "The capital city of France is Paris."
BANANAS = "Bananas are a good source of potassium and dietary fibre."
# Pairwise 1 - cos distances (the eps scale) with the 64-bucket hashing
# embedder: PARIS_* within 0.04 of each other, BANANAS 0.56-0.62 from them.

SPECS = {
    "models": {
        "para-a": {"answer": PARIS_1},
        "para-b": {"answer": PARIS_2},
        "para-c": {"answer": PARIS_3},
        "off": {"answer": BANANAS},
        "orth-a": {"answer": "Paris"},
        "orth-b": {"answer": "Bananas are yellow"},
        "orth-c": {"answer": "Seventeen cats sleep"},
        "orth-d": {"answer": "Quantum tunnelling happens"},
        "judge": {"arbiter": True, "arbiter_confidence": 0.9},
    },
    "embedding_models": {"bow": {"dims": 64}, "broken": {"fail": "embedding service down"}},
}
FOUR = ["-m", "para-a", "-m", "para-b", "-m", "para-c", "-m", "off"]
SEMANTIC = [
    "--arbiter", "judge", "--strategy", "semantic",
    "--embedding-backend", "llm", "--embedding-model", "bow", "--max-iterations", "1",
]





def members(user_dir: Path) -> list[dict]:
    found = rows(user_dir, "SELECT * FROM consortium_members WHERE role != 'arbiter' ORDER BY iteration, position")
    for row in found:
        row["extra"] = json.loads(row["extra_json"]) if row["extra_json"] else {}
    return found


def the_run(user_dir: Path) -> dict:
    [run] = rows(user_dir, "SELECT * FROM consortium_runs")
    return run


def arbiter_prompts() -> list[str]:
    return [call["prompt"] for call in fake_models.ScriptedModel.calls.get("judge", [])]


def ids_in(prompt: str) -> list[str]:
    import re

    return re.findall(r'<model_response id="([^"]+)"', prompt)


def save_and_ask(cli, name: str, *options: str, prompt: str = "What is the capital of France?"):
    saved = cli("consortium", "save", name, *options)
    assert saved.exit_code == 0, saved.output
    return cli("-m", name, prompt)


def hand_geometry(texts: list[str]) -> tuple[float, list[float], list[float]]:
    """Geometric confidence, centroid and distances computed here with numpy."""
    vectors = np.array([fake_models.hash_embedding(text, 64) for text in texts])
    center = vectors.mean(axis=0)
    cosines = vectors @ center / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(center))
    distances = (1 - cosines) / 2
    return float(1 - distances.mean()), center.tolist(), distances.tolist()


# -- discovery and validation ----------------------------------------------------


def test_strategies_command_documents_the_semantic_parameters(cli):
    result = cli("consortium", "strategies")
    assert result.exit_code == 0
    out = result.stdout
    assert "Name: semantic\n" in out
    assert "clustering_algorithm (str, default dbscan)" in out
    assert "eps (float, default 0.5)" in out
    assert "1 - cos" in out
    assert "min_samples (int, default 2)" in out
    assert "use_centroid_synthesis (bool, default false)" in out
    described = {item["name"]: item for item in json.loads(cli("consortium", "strategies", "--json").stdout)}
    params = {param["name"]: param for param in described["semantic"]["params"]}
    assert params["clustering_algorithm"]["choices"] == ["dbscan", "hdbscan", "tropical"]
    assert params["eps"]["max"] == 2.0


def test_semantic_without_an_embedding_backend_is_refused_at_save(cli):
    result = cli("consortium", "save", "sem", *FOUR, "--arbiter", "judge", "--strategy", "semantic")
    assert result.exit_code == 2
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "semantic strategy needs an embedding backend" in error
    assert "--embedding-backend" in error
    assert cli("consortium", "list").stdout.strip() == "No saved consortiums found."


def test_create_consortium_refuses_semantic_without_an_embedding_backend():
    with pytest.raises(ValueError, match="needs an embedding backend"):
        create_consortium(["para-a"], arbiter="judge", strategy="semantic")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--cluster-eps", "0"], "eps must be in (0, 2] on the 1 - cos scale, got 0.0"),
        (["--cluster-eps", "2.5"], "eps must be between 0 and 2, got 2.5"),
        (["--cluster-eps", "nan"], "'eps': expected a number, got 'nan'"),
        (["--cluster-min-samples", "0"], "min_samples must be at least 1, got 0"),
        (["--strategy-param", "clustering_algorithm=kmeans"], "'clustering_algorithm': 'kmeans'; choose one of dbscan, hdbscan, tropical"),
        (["--strategy-param", "use_centroid_synthesis=maybe"], "'use_centroid_synthesis'"),
    ],
)
def test_bad_semantic_parameters_are_refused_at_save(cli, options, message):
    result = cli("consortium", "save", "sem", *FOUR, *SEMANTIC, *options)
    assert result.exit_code == 2
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert message in error
    assert "Traceback" not in result.output


def test_cluster_options_become_typed_semantic_parameters(cli):
    result = cli(
        "consortium", "save", "sem", *FOUR, *SEMANTIC,
        "--clustering-algorithm", "HDBSCAN", "--cluster-eps", "0.3", "--cluster-min-samples", "3",
        "--strategy-param", "use_centroid_synthesis=yes",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(cli("consortium", "info", "sem", "--json").stdout)
    assert info["strategy_params"] == {
        "clustering_algorithm": "hdbscan",
        "eps": 0.3,
        "min_samples": 3,
        "use_centroid_synthesis": True,
    }
    assert (info["embedding_backend"], info["embedding_model"]) == ("llm", "bow")


# -- consensus ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["dbscan", "hdbscan"])
def test_near_duplicates_form_the_consensus_and_the_off_topic_answer_is_dropped(
    cli, fakes, user_dir, algorithm
):
    with fakes(SPECS):
        result = save_and_ask(
            cli, "sem", *FOUR, *SEMANTIC, "--clustering-algorithm", algorithm, "--cluster-eps", "0.4"
        )
        prompts = arbiter_prompts()
        batches = list(fake_models.HashEmbedding.batches_by_model.get("bow", []))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() in (PARIS_1, PARIS_2, PARIS_3)
    [prompt] = prompts
    assert ids_in(prompt) == ["1", "2", "3"]
    assert "Bananas" not in prompt
    assert batches == [4]  # every answer embedded in one batched call

    found = members(user_dir)
    assert [row["selected"] for row in found] == [1, 1, 1, 0]
    assert [row["extra"]["cluster_id"] for row in found] == [0, 0, 0, -1]
    assert [row["extra"]["distance_to_centroid"] < 0.05 for row in found] == [True, True, True, False]
    assert found[3]["extra"]["distance_to_centroid"] == 1.0  # outside the consensus, as the original

    embeddings = rows(user_dir, "SELECT * FROM response_embeddings ORDER BY member_id")
    run_id = the_run(user_dir)["id"]
    assert [row["member_id"] for row in embeddings] == ["1", "2", "3", "4"]
    assert [row["response_id"] for row in embeddings] == [row["response_id"] for row in found]
    assert [row["model"] for row in embeddings] == ["para-a", "para-b", "para-c", "off"]
    assert {(row["run_id"], row["iteration"], row["backend"], row["embedding_model"], row["dimensions"])
            for row in embeddings} == {(run_id, 1, "llm", "bow", 64)}
    assert all(row["created_at"] for row in embeddings)
    for row, text in zip(embeddings, [PARIS_1, PARIS_2, PARIS_3, BANANAS]):
        assert json.loads(row["embedding_json"]) == pytest.approx(fake_models.hash_embedding(text, 64))

    [cluster] = rows(user_dir, "SELECT * FROM consensus_clusters")
    assert (cluster["run_id"], cluster["iteration"], cluster["cluster_id"]) == (run_id, 1, 0)
    assert cluster["algorithm"] == algorithm
    assert json.loads(cluster["member_ids_json"]) == ["1", "2", "3"]
    assert (cluster["size"], cluster["is_consensus"], cluster["all_noise"]) == (3, 1, 0)
    _, paris_centroid, paris_distances = hand_geometry([PARIS_1, PARIS_2, PARIS_3])
    assert json.loads(cluster["centroid_json"]) == pytest.approx(paris_centroid)
    assert cluster["radius"] == pytest.approx(max(paris_distances))
    assert cluster["density"] == pytest.approx(1 - sum(paris_distances) / 3)  # the original's meaning

    # Geometric confidence covers the answers passed to the arbiter, as the original.
    [decision] = rows(user_dir, "SELECT * FROM arbiter_decisions")
    confidence, centroid, _ = hand_geometry([PARIS_1, PARIS_2, PARIS_3])
    assert decision["geometric_confidence"] == pytest.approx(confidence)
    assert json.loads(decision["centroid_vector"]) == pytest.approx(centroid)
    assert json.loads(decision["outliers_json"]) == []  # three points: no outlier possible


def test_tropical_keeps_a_chain_of_close_answers_that_dbscan_calls_noise(cli, fakes, user_dir):
    # Each answer shifts one word: neighbours are 0.167 apart (1 - cos), the ends 0.5.
    # With eps 0.2 and min_samples 4 no answer has four neighbours (no DBSCAN
    # core point), but the chain is one single-linkage component of four.
    chain = [
        "alpha beta gamma delta epsilon zeta",
        "beta gamma delta epsilon zeta eta",
        "gamma delta epsilon zeta eta theta",
        "delta epsilon zeta eta theta iota",
        "Bananas grow on tall tropical plants",
    ]
    specs = {
        "models": {**{f"link-{i}": {"answer": text} for i, text in enumerate(chain)}, "judge": {"arbiter": True}},
        "embedding_models": {"bow": {"dims": 64}},
    }
    options = [opt for i in range(5) for opt in ("-m", f"link-{i}")]
    tuning = ["--cluster-eps", "0.2", "--cluster-min-samples", "4"]
    with fakes(specs):
        tropical = save_and_ask(cli, "trop", *options, *SEMANTIC, "--clustering-algorithm", "tropical", *tuning)
        dbscan = save_and_ask(cli, "dbs", *options, *SEMANTIC, "--clustering-algorithm", "dbscan", *tuning)
        prompts = arbiter_prompts()
    assert tropical.exit_code == 0, tropical.output
    assert dbscan.exit_code == 0, dbscan.output
    assert [ids_in(prompt) for prompt in prompts] == [["1", "2", "3", "4"], ["1", "2", "3", "4", "5"]]

    runs = {row["config_name"]: row["id"] for row in rows(user_dir, "SELECT * FROM consortium_runs")}
    [trop_cluster] = rows(user_dir, "SELECT * FROM consensus_clusters WHERE run_id = ?", runs["trop"])
    assert trop_cluster["algorithm"] == "tropical"
    assert json.loads(trop_cluster["member_ids_json"]) == ["1", "2", "3", "4"]
    assert (trop_cluster["is_consensus"], trop_cluster["all_noise"]) == (1, 0)
    # DBSCAN found no cluster: none is stored (as the original), every answer is noise
    assert rows(user_dir, "SELECT * FROM consensus_clusters WHERE run_id = ?", runs["dbs"]) == []


def test_when_every_answer_is_noise_all_go_to_the_arbiter_and_the_run_records_it(cli, fakes, user_dir):
    orthogonal = ["-m", "orth-a", "-m", "orth-b", "-m", "orth-c", "-m", "orth-d"]
    with fakes(SPECS):
        result = save_and_ask(cli, "noise", *orthogonal, *SEMANTIC, "--cluster-eps", "0.4")
        prompts = arbiter_prompts()
    assert result.exit_code == 0, result.output
    [prompt] = prompts
    assert ids_in(prompt) == ["1", "2", "3", "4"]
    found = members(user_dir)
    assert [row["selected"] for row in found] == [1, 1, 1, 1]
    assert [row["extra"]["cluster_id"] for row in found] == [-1] * 4
    assert [row["extra"]["distance_to_centroid"] for row in found] == [1.0] * 4
    assert rows(user_dir, "SELECT * FROM consensus_clusters") == []
    # Four orthogonal unit vectors: each has cos 1/2 with their mean, so d = 1/4.
    [decision] = rows(user_dir, "SELECT * FROM arbiter_decisions")
    assert decision["geometric_confidence"] == pytest.approx(0.75)


def test_outliers_among_the_answers_passed_on_are_stored_as_member_ids(cli, fakes, user_dir):
    # Five identical answers and one different, all in one cluster (eps 2 is
    # the whole 1 - cos scale): with six points the different one is more
    # than two standard deviations from the mean distance.
    with fakes(SPECS):
        result = save_and_ask(cli, "outl", "-m", "para-a:5", "-m", "off", *SEMANTIC, "--cluster-eps", "2")
    assert result.exit_code == 0, result.output
    [decision] = rows(user_dir, "SELECT * FROM arbiter_decisions")
    assert json.loads(decision["outliers_json"]) == ["6"]
    stored = json.loads(decision["decision_json"])
    assert (stored["outliers"], stored["outlier_indices"]) == (["6"], [5])
    confidence, _, _ = hand_geometry([PARIS_1] * 5 + [BANANAS])
    assert decision["geometric_confidence"] == pytest.approx(confidence)
    assert [row["selected"] for row in members(user_dir)] == [1] * 6


def test_every_iteration_stores_its_embeddings_and_repeated_answers_are_embedded_once(cli, fakes, user_dir):
    with fakes(SPECS):
        result = save_and_ask(
            cli, "twice", *FOUR, *SEMANTIC, "--cluster-eps", "0.4",
            "--min-iterations", "2", "--max-iterations", "2",
        )
        batches = list(fake_models.HashEmbedding.batches_by_model.get("bow", []))
    assert result.exit_code == 0, result.output
    embeddings = rows(user_dir, "SELECT * FROM response_embeddings ORDER BY iteration, member_id")
    assert [(row["iteration"], row["member_id"]) for row in embeddings] == [
        (iteration, member) for iteration in (1, 2) for member in ("1", "2", "3", "4")
    ]
    assert len({row["response_id"] for row in embeddings}) == 8
    clusters = rows(user_dir, "SELECT iteration, member_ids_json FROM consensus_clusters ORDER BY iteration")
    assert [(row["iteration"], json.loads(row["member_ids_json"])) for row in clusters] == [
        (1, ["1", "2", "3"]), (2, ["1", "2", "3"])
    ]
    decisions = rows(user_dir, "SELECT geometric_confidence FROM arbiter_decisions ORDER BY iteration")
    assert len(decisions) == 2 and all(row["geometric_confidence"] for row in decisions)
    assert batches == [4]  # the same answers in iteration 2 come from the service's cache


# -- the Python API ------------------------------------------------------------------


def test_create_consortium_runs_the_semantic_strategy_and_returns_its_telemetry(fakes, user_dir):
    with fakes(SPECS):
        orchestrator = create_consortium(
            ["para-a", "para-b", "para-c", "off"], arbiter="judge", max_iterations=1,
            strategy="semantic", strategy_params={"eps": "0.4", "clustering_algorithm": "hdbscan"},
            embedding_backend="llm", embedding_model="bow",
        )
        result = orchestrator.orchestrate("What is the capital of France?")
        prompts = arbiter_prompts()
    assert ids_in(prompts[0]) == ["1", "2", "3"]
    synthesis = result["synthesis"]
    confidence, centroid, _ = hand_geometry([PARIS_1, PARIS_2, PARIS_3])
    assert synthesis["geometric_confidence"] == pytest.approx(confidence)
    assert synthesis["centroid_vector"] == pytest.approx(centroid)
    assert (synthesis["outliers"], synthesis["outlier_indices"]) == ([], [])
    responses = result["iterations"][0]["model_responses"]
    assert [r["cluster_id"] for r in responses] == [0, 0, 0, -1]
    assert len(rows(user_dir, "SELECT * FROM response_embeddings")) == 4
    [cluster] = rows(user_dir, "SELECT * FROM consensus_clusters")
    assert cluster["algorithm"] == "hdbscan"


@pytest.mark.parametrize("central_first, expected", [(False, PARIS_1), (True, "Paris is the capital of France and a big city.")])
def test_use_centroid_synthesis_puts_the_most_central_answer_first(fakes, central_first, expected):
    # Without an arbiter the first answer passed on wins: by config order, or,
    # with use_centroid_synthesis, the answer nearest the consensus centroid.
    specs = {
        "models": {
            "short": {"answer": PARIS_1},
            "middle": {"answer": "Paris is the capital of France and a big city."},
            "long": {"answer": "Paris is the capital of France and a big city with many museums."},
        },
        "embedding_models": {"bow": {"dims": 64}},
    }
    with fakes(specs):
        result = create_consortium(
            ["short", "middle", "long"], strategy="semantic", max_iterations=1,
            strategy_params={"eps": 0.4, "use_centroid_synthesis": central_first},
            embedding_backend="llm", embedding_model="bow",
        ).orchestrate("Capital?")
    assert result["synthesis"]["synthesis"] == expected
    # Distances to the centroid: short 0.038, middle 0.014, long 0.028.
    assert [r["cluster_id"] for r in result["iterations"][0]["model_responses"]] == [0] * 3
    assert result["synthesis"]["chosen_member_id"] == ("2" if central_first else "1")


def test_a_blank_answer_is_not_embedded_and_counts_as_noise(fakes):
    config = ConsortiumConfig(
        models={"para-a": 2, "off": 1}, arbiter="judge", strategy="semantic",
        strategy_params={"eps": 0.4}, embedding_backend="llm", embedding_model="bow",
    )
    service = EmbeddingService(get_backend("llm", "bow"))
    orchestrator = SimpleNamespace(consortium_id="run", config=config, get_embedding_service=lambda: service)
    strategy = get_strategy_class("semantic")(orchestrator, config.strategy_params)
    strategy.initialize_state()
    responses = [
        {"id": 1, "model": "para-a", "response": PARIS_1, "answer": PARIS_1},
        {"id": 2, "model": "para-a", "response": PARIS_2, "answer": PARIS_2},
        {"id": 3, "model": "off", "response": "  ", "answer": None},
    ]
    with fakes(SPECS):
        passed = strategy.process_responses(responses, 1)
        batches = list(fake_models.HashEmbedding.batches_by_model["bow"])
    assert batches == [2]
    assert [r["id"] for r in passed] == [1, 2]
    assert [len(r["embedding"]) for r in responses] == [64, 64, 64]
    assert responses[2]["embedding"].tolist() == [0.0] * 64
    assert responses[2]["cluster_id"] == -1


# -- failures --------------------------------------------------------------------------


def test_an_embedding_backend_error_fails_the_run_loudly(cli, fakes, user_dir):
    # In-process llm re-raises the model's error (sys._called_from_test); a user
    # gets it as one line: "Error: Semantic strategy, iteration 1: ...".
    with fakes(SPECS):
        saved = cli(
            "consortium", "save", "sem", *FOUR, "--arbiter", "judge", "--strategy", "semantic",
            "--embedding-backend", "llm", "--embedding-model", "broken", "--max-iterations", "1",
        )
        assert saved.exit_code == 0, saved.output
        with pytest.raises(llm.ModelError) as caught:
            cli("-m", "sem", "Capital?")
        assert not fake_models.ScriptedModel.calls.get("judge")  # the arbiter is never called
    assert str(caught.value) == (
        "Semantic strategy, iteration 1: llm embedding (broken) failed: ModelError: embedding service down"
    )
    run = the_run(user_dir)
    assert run["status"] == "failed"
    assert "embedding service down" in run["error"]
    assert rows(user_dir, "SELECT * FROM arbiter_decisions") == []
    assert rows(user_dir, "SELECT * FROM response_embeddings") == []


def test_an_unknown_embedding_model_fails_the_run_before_any_member_is_prompted(fakes, user_dir):
    with fakes(SPECS):
        orchestrator = create_consortium(
            FOUR[1::2], arbiter="judge", strategy="semantic",
            embedding_backend="llm", embedding_model="nosuch",
        )
        with pytest.raises(llm.ModelError) as caught:
            orchestrator.orchestrate("Capital?")
        called = [model for model in SPECS["models"] if fake_models.ScriptedModel.calls.get(model)]
    assert str(caught.value) == (
        "Semantic strategy: unknown llm embedding model 'nosuch'; "
        "run `llm embed-models` to list the installed ones"
    )
    assert called == []
    assert members(user_dir) == []
    run = the_run(user_dir)
    # iteration_count counts the iterations begun: it failed in the first.
    assert (run["status"], run["iteration_count"], run["error"]) == ("failed", 1, str(caught.value))


def test_the_python_api_raises_a_model_error_for_an_embedding_failure(fakes):
    with fakes(SPECS):
        orchestrator = create_consortium(
            ["para-a", "off"], arbiter="judge", strategy="semantic",
            embedding_backend="llm", embedding_model="broken",
        )
        with pytest.raises(llm.ModelError, match="embedding service down"):
            orchestrator.orchestrate("Capital?")
        assert arbiter_prompts() == []
