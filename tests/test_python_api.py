"""`create_consortium()` and the orchestrator, as the README shows them."""

import sqlite3
import threading

import llm
import pytest
from llm.plugins import pm

from llm_consortium.db import Store


def test_public_names_import_from_the_package():
    from llm_consortium import (  # noqa: F401
        ConsortiumConfig,
        ConsortiumModel,
        ConsortiumOrchestrator,
        IterationContext,
        create_consortium,
    )


def test_create_consortium_result_has_the_originals_shape(fakes):
    from llm_consortium import create_consortium

    with fakes({"alpha": {"answer": "4"}, "beta": {"answer": "4"}, "judge": {"arbiter": True}}):
        orchestrator = create_consortium(["alpha:2", "beta"], arbiter="judge", max_iterations=2)
        result = orchestrator.orchestrate("2 + 2?")
    assert set(result) == {"synthesis", "iterations", "metadata", "original_prompt"}
    synthesis = result["synthesis"]
    for key in (
        "synthesis", "confidence", "analysis", "dissent", "needs_iteration", "refinement_areas",
        "ranking", "chosen_response_id", "geometric_confidence", "centroid_vector", "raw_arbiter_response",
    ):
        assert key in synthesis
    assert synthesis["synthesis"] == "4"
    assert synthesis["confidence"] == 1.0
    assert result["original_prompt"] == "2 + 2?"
    assert result["metadata"]["total_iterations"] == 1
    assert result["metadata"]["config"]["models"] == {"alpha": 2, "beta": 1}
    [iteration] = result["iterations"]
    assert set(iteration) == {"iteration", "selected_models", "model_responses", "synthesis"}
    first = iteration["model_responses"][0]
    assert {key: first[key] for key in ("model", "instance", "id")} == {"model": "alpha", "instance": 0, "id": 1}
    assert first["response"].startswith("<thinking>") and first["confidence"] == 0.8
    assert first["response_id"]


def test_create_consortium_accepts_a_dict_of_counts(fakes):
    from llm_consortium import create_consortium

    with fakes({"alpha": {"answer": "4"}, "judge": {"arbiter": True}}):
        result = create_consortium({"alpha": 3}, arbiter="judge").orchestrate("2 + 2?")
    assert [r["id"] for r in result["iterations"][0]["model_responses"]] == [1, 2, 3]


def test_a_failed_member_has_the_error_shape(fakes):
    from llm_consortium import create_consortium

    with fakes({"alpha": {"answer": "4"}, "broken": {"fail": "nope"}, "judge": {"arbiter": True}}):
        result = create_consortium(["alpha", "broken"], arbiter="judge", retries=0).orchestrate("q")
    failed = result["iterations"][0]["model_responses"][1]
    assert {key: failed[key] for key in ("model", "instance", "id", "error")} == {
        "model": "broken", "instance": 0, "id": 2, "error": "nope",
    }
    assert "response" not in failed


def test_without_an_arbiter_the_first_successful_response_wins(fakes):
    from llm_consortium import create_consortium

    with fakes({"broken": {"fail": "x"}, "alpha": {"answer": "A"}, "beta": {"answer": "B"}}):
        result = create_consortium(["broken", "alpha", "beta"], retries=0).orchestrate("q")
    assert result["synthesis"]["synthesis"] == "A"
    assert result["synthesis"]["confidence"] == 1.0
    assert result["metadata"]["total_iterations"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"models": ["a:0"]}, "must be at least 1"),
        ({"models": {"a": -2}}, "must be at least 1"),
        ({"models": []}, "at least one member"),
        ({"models": ["a"], "confidence_threshold": 150}, "between 0.0 and 1.0"),
        ({"models": ["a"], "max_iterations": 0}, "max_iterations must be at least 1"),
        ({"models": ["a"], "minimum_iterations": 5}, "cannot exceed max_iterations"),
        ({"models": ["a"], "judging_method": "vote"}, "Unknown judging method 'vote'"),
        ({"models": ["a"], "strategy": "nope"}, "Unknown strategy: 'nope'"),
        ({"models": ["a"], "embedding_backend": "magic"}, "Unknown embedding backend 'magic'"),
    ],
)
def test_create_consortium_validates_like_the_cli(kwargs, message):
    from llm_consortium import create_consortium

    with pytest.raises(ValueError) as info:
        create_consortium(**kwargs)
    assert message in str(info.value)


def test_threshold_percentages_and_model_ids_with_colons():
    from llm_consortium import create_consortium

    orchestrator = create_consortium(["ollama/llama3.2:3b", "gpt-4o:2", "gpt-4o"], confidence_threshold=85)
    assert orchestrator.config.models == {"ollama/llama3.2:3b": 1, "gpt-4o": 3}
    assert orchestrator.confidence_threshold == 0.85


class BarrierModel(llm.Model):
    """Answers only once every instance is inside execute() at the same time:
    if members were not called concurrently, the barrier would time out."""

    can_stream = False

    def __init__(self, model_id, barrier):
        self.model_id = model_id
        self.barrier = barrier

    def execute(self, prompt, stream, response, conversation=None):
        self.barrier.wait(timeout=10)
        yield "<answer>together</answer><confidence>0.9</confidence>"


@pytest.mark.parametrize("members", [12, 64])
def test_all_members_are_called_at_once_with_no_cap(members):
    from llm_consortium import create_consortium

    barrier = threading.Barrier(members)

    class Plugin:
        @llm.hookimpl
        def register_models(self, register):
            register(BarrierModel("barrier", barrier))

    pm.register(Plugin(), name="undo-barrier")
    try:
        result = create_consortium([f"barrier:{members}"], timeout=30, retries=0).orchestrate("q")
    finally:
        pm.unregister(name="undo-barrier")
    responses = result["iterations"][0]["model_responses"]
    assert all("error" not in r for r in responses), responses[0]
    assert [r["id"] for r in responses] == list(range(1, members + 1))


def test_threads_sharing_one_store_lose_nothing(fakes, tmp_path):
    from llm_consortium import create_consortium

    store = Store(tmp_path / "shared.db")
    errors = []
    with fakes({"alpha": {"answer": "x", "latency": 0.05}, "judge": {"arbiter": True}}):

        def work(number):
            try:
                create_consortium(["alpha:3"], arbiter="judge", store=store).orchestrate(f"q{number}")
            except Exception as ex:  # collected and asserted below
                errors.append(ex)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    conn = sqlite3.connect(tmp_path / "shared.db")
    assert conn.execute("select count(*), min(status), max(status) from consortium_runs").fetchone() == (12, "success", "success")
    assert conn.execute("select count(*) from consortium_members where response like '%<answer>x</answer>%'").fetchone() == (36,)
    assert conn.execute("select count(*) from arbiter_decisions").fetchone() == (12,)
