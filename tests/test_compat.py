"""The original plugin's Python names, strategy API and semantics, and its
newest feature (persistent member conversations), driven as users drive them:
`create_consortium`, the real `llm` CLI (CliRunner) and fake models."""

from __future__ import annotations

import json
import sqlite3

import llm
import pytest
from llm.plugins import pm

from conftest import db_rows as rows, fake_models

CALLS = fake_models.ScriptedModel.calls
MEMBERS = {
    "alpha": {"answer": "Paris", "confidence": 0.9},
    "beta": {"answer": "Paris, of course", "confidence": 0.8},
    "judge": {"arbiter": True},
}


def turns(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["text"]) for m in messages if m["role"] != "system"]


# -- names ---------------------------------------------------------------------


def test_the_originals_modules_and_names_are_there():
    from llm_consortium import ConsortiumConfig, IterationContext
    from llm_consortium.embeddings.backends import (
        BaseEmbeddingBackend,
        ChutesBackend,
        LLMBackend,
        OpenAIBackend,
        SentenceTransformerBackend,
    )
    from llm_consortium.embeddings.service import EmbeddingService
    from llm_consortium.geometry import GeometricConfidenceCalculator
    from llm_consortium.models import ConsortiumModel, parse_models
    from llm_consortium.models import ConsortiumConfig as ModelsConfig
    from llm_consortium.strategies import (
        ConsortiumStrategy,
        DefaultStrategy,
        EliminationStrategy,
        RoleStrategy,
        SemanticClusteringStrategy,
        VotingStrategy,
        create_strategy,
    )
    from llm_consortium.strategies.factory import list_available_strategies
    from llm_consortium.visualization import generate_run_visualization

    assert ModelsConfig is ConsortiumConfig
    assert parse_models(["a:2", "b"], 1) == {"a": 2, "b": 1}
    for backend in (ChutesBackend, LLMBackend, OpenAIBackend, SentenceTransformerBackend):
        assert issubclass(backend, BaseEmbeddingBackend)
    assert callable(EmbeddingService) and callable(generate_run_visualization)
    assert GeometricConfidenceCalculator.compute([[1.0, 0.0], [1.0, 0.0]])[0] == 1.0
    assert {name: info["class_name"] for name, info in list_available_strategies().items()} == {
        "default": "DefaultStrategy",
        "elimination": "EliminationStrategy",
        "role": "RoleStrategy",
        "semantic": "SemanticClusteringStrategy",
        "voting": "VotingStrategy",
    }
    for cls in (DefaultStrategy, EliminationStrategy, RoleStrategy, SemanticClusteringStrategy, VotingStrategy):
        assert issubclass(cls, ConsortiumStrategy)
    strategy = create_strategy("voting", None, {"require_majority": "false"})
    assert isinstance(strategy, VotingStrategy) and strategy.require_majority is False
    context = IterationContext({"synthesis": "x", "ranking": [1]}, [{"id": 1}])
    assert (context.synthesis["synthesis"], context.model_responses) == ("x", [{"id": 1}])
    config = ConsortiumConfig(models={"alpha": 1}, arbiter="judge")
    assert ConsortiumModel("team", config).get_orchestrator().config is config


def test_models_handed_out_by_a_patched_llm_get_model_are_used(tmp_path):
    """The original looked every model up with llm.get_model, so its users'
    tests patch that to hand out their own models (its test_integration.py
    does); names llm does not know are asked of the replacement."""
    from unittest.mock import patch

    from llm_consortium import create_consortium
    from llm_consortium.db import Store

    class Scripted(llm.Model):
        def __init__(self, model_id, reply):
            self.model_id, self.reply = model_id, reply

        def execute(self, prompt, stream, response, conversation=None):
            yield self.reply

    handed_out = {
        "member1": Scripted("member1", "<answer>round</answer><confidence>0.9</confidence>"),
        "arbiter_model": Scripted(
            "arbiter_model",
            "<confidence>0.95</confidence><needs_iteration>false</needs_iteration>"
            "<synthesis>The earth is round.</synthesis>",
        ),
    }
    with patch("llm_consortium.orchestrator.llm.get_model", side_effect=handed_out.__getitem__):
        result = create_consortium(
            ["member1"], arbiter="arbiter_model", manual_context=True, store=Store(tmp_path / "c.db")
        ).orchestrate("Is the earth round?")
    assert result["synthesis"]["synthesis"] == "The earth is round."
    # llm's own get_model is never asked again for a name it does not know.
    with pytest.raises(llm.ModelError, match="Unknown model: member1"):
        create_consortium(["member1"], store=Store(tmp_path / "c.db")).orchestrate("q")


def test_a_sentence_transformers_stand_in_taking_only_the_text_embeds(monkeypatch):
    """The original called ``encode(text)`` for one text; stand-ins written
    for it take nothing more."""
    import sys
    import types

    from llm_consortium.embeddings.backends import SentenceTransformerBackend

    class Model:
        def encode(self, text):
            return [0.4, 0.5, 0.6]

        def get_sentence_embedding_dimension(self):
            return 384

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=lambda name: Model()))
    monkeypatch.setattr(SentenceTransformerBackend, "_loaded", {})
    backend = SentenceTransformerBackend(model="stand-in")
    assert list(backend.embed("hello")) == [0.4, 0.5, 0.6]
    assert backend.dimension() == 384


def test_strategies_command_prints_the_originals_class_names(cli):
    out = cli("consortium", "strategies").stdout
    assert "Name: semantic\n  Class: SemanticClusteringStrategy\n" in out
    assert "Name: voting\n  Class: VotingStrategy\n" in out


def test_the_result_has_the_originals_shape(fakes):
    from llm_consortium import create_consortium

    with fakes(MEMBERS):
        result = create_consortium(["alpha:2", "beta"], arbiter="judge", max_iterations=1).orchestrate("Capital?")
    [iteration] = result["iterations"]
    assert iteration["selected_models"] == {"alpha": 2, "beta": 1}
    assert [r["id"] for r in iteration["model_responses"]] == [1, 2, 3]
    assert all(isinstance(rid, int) for rid in result["synthesis"]["ranking"])
    assert result["synthesis"]["outlier_indices"] == []


def test_orchestrator_attributes_can_be_reassigned_between_runs(fakes, user_dir):
    from llm_consortium import create_consortium

    with fakes({**MEMBERS, "judge": {"arbiter": True, "arbiter_confidence": 0.1}}):
        orchestrator = create_consortium(["alpha", "beta"], arbiter="judge", max_iterations=3)
        orchestrator.max_iterations = 1
        orchestrator.models = {"alpha": 2}
        orchestrator.arbiter = None
        result = orchestrator.orchestrate("Capital?")
        assert orchestrator.strategy.__class__.__name__ == "DefaultStrategy"
    assert result["metadata"]["total_iterations"] == 1
    assert [r["model"] for r in result["iterations"][0]["model_responses"]] == ["alpha", "alpha"]
    assert "judge" not in CALLS


# -- a strategy written for the original --------------------------------------------


@pytest.fixture
def original_strategy():
    from llm_consortium.strategies.base import ConsortiumStrategy

    class FirstOfEachStrategy(ConsortiumStrategy):
        """Only the first instance of each model, a persona per model, and a
        prompt of its own from the second iteration on."""

        seen: list = []

        def select_models(self, available_models, current_prompt, iteration):
            return {model: 1 for model in available_models}

        def process_responses(self, successful_responses, iteration):
            return successful_responses

        def get_instance_system_prompt(self, model, instance, default_prompt):
            return f"You are {model}, instance {instance}."

        def prepare_iteration_prompt(self, model_id, instance, original_prompt, iteration):
            if iteration == 1:
                return original_prompt
            previous = self.orchestrator.iteration_history[-1]["synthesis"]["synthesis"]
            return f"Improve on: {previous}"

        def update_state(self, iteration_context):
            type(self).seen.append(
                (iteration_context.synthesis["ranking"], [r["id"] for r in iteration_context.model_responses])
            )

    class Plugin:
        @llm.hookimpl
        def register_consortium_strategies(self, register):
            register(FirstOfEachStrategy)

    pm.register(Plugin(), name="undo-first-of-each")
    try:
        yield FirstOfEachStrategy
    finally:
        pm.unregister(name="undo-first-of-each")


def test_a_strategy_written_for_the_original_runs_unchanged(cli, fakes, user_dir, original_strategy):
    with fakes({**MEMBERS, "judge": {"arbiter": True, "arbiter_confidence": 0.1}}):
        saved = cli(
            "consortium", "save", "firsts", "-m", "alpha:2", "-m", "beta", "--arbiter", "judge",
            "--strategy", "first_of_each", "--max-iterations", "2",
        )
        assert saved.exit_code == 0, saved.output
        result = cli("-m", "firsts", "Capital of France?")
        alpha_calls = CALLS["alpha"]
    assert result.exit_code == 0, result.output
    assert [call["prompt"] for call in alpha_calls][0] == "Capital of France?"
    assert alpha_calls[1]["prompt"].startswith("Improve on: ")
    assert alpha_calls[0]["system"].startswith("You are alpha, instance 0.")
    found = rows(user_dir, "select iteration, model, instance from consortium_members where role != 'arbiter' order by rowid")
    assert [(r["iteration"], r["model"], r["instance"]) for r in found] == [
        (1, "alpha", 0), (1, "beta", 0), (2, "alpha", 0), (2, "beta", 0)
    ]
    assert [ids for _, ids in original_strategy.seen] == [[1, 3], [1, 3]]


# -- saved consortia written by the original ------------------------------------------


def write_original_config(user_dir, name: str, config: dict) -> None:
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS consortium_configs (name TEXT PRIMARY KEY, config TEXT, created_at TEXT)"
        )
        conn.execute(
            "INSERT INTO consortium_configs VALUES (?, ?, ?)",
            (name, json.dumps(config), "2025-06-01T10:00:00"),
        )
        conn.commit()
    finally:
        conn.close()


ORIGINAL_CONFIG = {
    # What the original's save wrote for `--clustering-algorithm dbscan
    # --strategy-param top_k=3` with the default strategy.
    "models": {"alpha": 1, "beta": 1},
    "system_prompt": None,
    "confidence_threshold": 0.8,
    "max_iterations": 1,
    "minimum_iterations": 1,
    "arbiter": "judge",
    "judging_method": "default",
    "strategy": "default",
    "strategy_params": {"clustering_algorithm": "dbscan", "eps": 0.5, "min_samples": 2, "top_k": "3"},
    "embedding_backend": None,
    "embedding_model": None,
    "embedding_cache_enabled": True,
    "manual_context": False,
    "category": None,
    "expected_agreement": None,
    "status": None,
    "created_at": None,
}


def test_a_config_the_original_wrote_with_undeclared_parameters_loads_lists_and_runs(cli, fakes, user_dir):
    write_original_config(user_dir, "old-team", ORIGINAL_CONFIG)
    with fakes(MEMBERS):
        models = cli("models")
        listed = cli("consortium", "list")
        info = cli("consortium", "info", "old-team")
        answer = cli("-m", "old-team", "Capital of France?")
    assert "Consortium: old-team" in models.stdout
    assert models.stderr == ""  # nothing reported on every llm command
    assert "Name: old-team" in listed.stdout and listed.stderr == ""
    assert "Strategy Params: clustering_algorithm=dbscan, eps=0.5, min_samples=2, top_k=3" in info.stdout
    assert info.stderr.count("does not use parameter(s) clustering_algorithm, eps, min_samples, top_k") == 1
    assert answer.exit_code == 0, answer.output
    assert answer.stdout.strip() == "Paris"


def test_save_keeps_parameters_the_strategy_does_not_declare_and_says_so_once(cli, user_dir):
    result = cli(
        "consortium", "save", "kept", "-m", "alpha", "--arbiter", "judge",
        "--strategy-param", "top_k=3", "--clustering-algorithm", "hdbscan",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Note: strategy 'default' does not use parameter(s)") == 1
    stored = json.loads(rows(user_dir, "select config from consortium_configs")[0]["config"])
    assert stored["strategy_params"] == {
        "top_k": "3", "clustering_algorithm": "hdbscan", "eps": 0.5, "min_samples": 2
    }
    assert cli("models").stderr == ""


# -- persistent conversations ------------------------------------------------------------


def test_a_reused_orchestrator_continues_each_members_own_conversation(fakes):
    from llm_consortium import create_consortium

    with fakes(MEMBERS):
        orchestrator = create_consortium(["alpha", "beta"], arbiter="judge", max_iterations=1)
        first = orchestrator.orchestrate("Capital of France?")
        alpha_first = first["iterations"][0]["model_responses"][0]["response"]
        # History passed as well (as `llm chat` does): members must not get it twice.
        orchestrator.orchestrate(
            "And of Italy?",
            conversation_history=[("user", "Capital of France?"), ("assistant", "Paris")],
        )
        alpha_second = CALLS["alpha"][-1]["messages"]
        judge_second = CALLS["judge"][-1]["messages"]
        assert set(orchestrator.model_conversations) == {"alpha_0", "beta_0"}
        assert orchestrator.arbiter_conversation is not None
        orchestrator.reset_model_conversations()
        orchestrator.reset_arbiter_conversation()
        assert orchestrator.model_conversations == {} and orchestrator.arbiter_conversation is None
        orchestrator.orchestrate("Something new?")
        alpha_third = CALLS["alpha"][-1]["messages"]
    assert turns(alpha_second) == [
        ("user", "Capital of France?"),
        ("assistant", alpha_first),
        ("user", "And of Italy?"),
    ]
    assert [m["role"] for m in judge_second] == ["user", "assistant", "user"]
    assert turns(alpha_third) == [("user", "Something new?")]


def test_llm_chat_continues_each_members_own_conversation(cli, fakes, user_dir):
    with fakes(MEMBERS):
        cli("consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", "judge", "--max-iterations", "1")
        result = cli("chat", "-m", "team", input="Capital of France?\nAnd of Italy?\nquit\n")
        alpha_second = CALLS["alpha"][-1]["messages"]
    assert result.exit_code == 0, result.output
    [alpha_first] = [
        row["response"]
        for row in rows(user_dir, "select response from consortium_members where model = 'alpha' order by rowid limit 1")
    ]
    assert turns(alpha_second) == [
        ("user", "Capital of France?"),
        ("assistant", alpha_first),
        ("user", "And of Italy?"),
    ]


def test_manual_context_keeps_no_member_conversations(fakes):
    from llm_consortium import create_consortium

    with fakes(MEMBERS):
        orchestrator = create_consortium(["alpha"], arbiter="judge", max_iterations=1, manual_context=True)
        orchestrator.orchestrate("Capital of France?")
        orchestrator.orchestrate("And of Italy?")
        alpha_second = CALLS["alpha"][-1]["messages"]
    assert orchestrator.model_conversations == {} and orchestrator.arbiter_conversation is None
    assert turns(alpha_second) == [("user", "And of Italy?")]


# -- clustering semantics ----------------------------------------------------------------


def test_cluster_eps_keeps_what_sklearn_cosine_dbscan_keeps_on_the_same_embeddings(cli, fakes, user_dir):
    from sklearn.cluster import DBSCAN

    answers = [
        "The capital of France is Paris.",
        "Paris is the capital of France.",
        "The capital city of France is Paris, of course.",
        "France has Paris as its capital city.",
        "Bananas are a good source of potassium.",
        "Bananas and apples are fruit.",
    ]
    specs = {
        "models": {**{f"m{i}": {"answer": text} for i, text in enumerate(answers)}, "judge": {"arbiter": True}},
        "embedding_models": {"bow": {"dims": 64}},
    }
    vectors = [fake_models.hash_embedding(text, 64) for text in answers]
    labels = DBSCAN(metric="cosine", eps=0.35, min_samples=2).fit(vectors).labels_.tolist()
    largest = max({label for label in labels if label != -1}, key=labels.count)
    kept_by_sklearn = [i + 1 for i, label in enumerate(labels) if label == largest]
    assert 1 < len(kept_by_sklearn) < len(answers)  # the example really filters
    with fakes(specs):
        saved = cli(
            "consortium", "save", "sem", *[o for i in range(len(answers)) for o in ("-m", f"m{i}")],
            "--arbiter", "judge", "--strategy", "semantic", "--embedding-backend", "llm",
            "--embedding-model", "bow", "--cluster-eps", "0.35", "--max-iterations", "1",
        )
        assert saved.exit_code == 0, saved.output
        assert cli("-m", "sem", "Capital?").exit_code == 0
    selected = rows(user_dir, "select member_id from consortium_members where selected = 1 order by cast(member_id as integer)")
    assert [int(row["member_id"]) for row in selected] == kept_by_sklearn


def test_a_semantic_consortium_the_original_saved_without_a_backend_loads_and_says_why_it_cannot_run(cli, fakes, user_dir):
    # The original saved `--strategy semantic` without --embedding-backend.
    write_original_config(user_dir, "old-sem", {**ORIGINAL_CONFIG, "strategy": "semantic", "strategy_params": None})
    with fakes(MEMBERS):
        models = cli("models")
        with pytest.raises(llm.ModelError, match="semantic strategy needs an embedding backend"):
            cli("-m", "old-sem", "Capital?")
    assert "Consortium: old-sem" in models.stdout and models.stderr == ""


def test_generate_run_visualization_returns_the_runs_plotly_figure(fakes):
    import plotly.graph_objects as go

    from llm_consortium import create_consortium
    from llm_consortium.visualization import generate_run_visualization

    with fakes(MEMBERS):
        result = create_consortium(["alpha", "beta"], arbiter="judge", max_iterations=1).orchestrate("Capital?")
    figure = generate_run_visualization(result["metadata"]["consortium_id"])
    assert isinstance(figure, go.Figure)
    assert figure.data  # at least the confidence per iteration
