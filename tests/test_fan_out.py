"""How a round of member calls is dispatched, stored and reported.

The llm response objects are built in the thread that starts the calls; an
iteration's last answers are stored once the arbiter has been asked, and
always before they are reported (``MemberFinished``)."""

import threading

import llm
import pytest

from llm_consortium import create_consortium
from llm_consortium.calls import CallGroup, CallRequest
from llm_consortium.db import Store
from llm_consortium.errors import RunFailed
from llm_consortium.events import ArbiterStarted, MemberFinished, RunFinished

MODELS = {
    "alpha": {"answer": "42"},
    "beta": {"answer": "42", "latency": 0.05},
    "broken": {"fail": "no capacity"},
    "judge": {"arbiter": True, "latency": 0.3},
}


def stored_members(store: Store) -> list[dict]:
    return store.query(
        "select member_id, status, selected from consortium_members where role != 'arbiter' order by position"
    )


def test_every_answer_is_stored_and_reported_before_the_arbiter_starts(fakes, tmp_path):
    store = Store(tmp_path / "c.db")
    seen: list[str] = []
    with fakes(MODELS):
        run = create_consortium(["alpha:3", "beta:2"], arbiter="judge", store=store, max_iterations=1).run("q")
        for event in run:
            if isinstance(event, MemberFinished):
                # A reported answer is already in the store.
                assert event.result.member.id in {row["member_id"] for row in stored_members(store)}
                seen.append(event.result.member.id)
                assert event.done == len(seen) and event.total == 5
            elif isinstance(event, ArbiterStarted):
                assert sorted(seen) == ["1", "2", "3", "4", "5"]
                # While the arbiter is asked, every answer is stored and marked
                # as passed to it.
                rows = stored_members(store)
                assert [row["member_id"] for row in rows] == ["1", "2", "3", "4", "5"]
                assert {row["selected"] for row in rows} == {1}
            elif isinstance(event, RunFinished):
                assert event.status == "success"
    assert len(seen) == 5


def test_a_failed_iteration_stores_and_reports_every_member_before_failing(fakes, tmp_path):
    store = Store(tmp_path / "c.db")
    reported = []
    with fakes(MODELS):
        run = create_consortium(
            ["alpha", "broken:2"], arbiter="judge", store=store, retries=0, min_responses=2
        ).run("q")
        with pytest.raises(RunFailed, match="Only 1 of 3 members answered"):
            for event in run:
                if isinstance(event, MemberFinished):
                    reported.append(event.result.member.id)
                assert not isinstance(event, ArbiterStarted)
    assert sorted(reported) == ["1", "2", "3"]
    rows = stored_members(store)
    assert [(row["member_id"], row["status"], row["selected"]) for row in rows] == [
        ("1", "ok", 0), ("2", "failed", 0), ("3", "failed", 0)
    ]
    (run_row,) = store.query("select status from consortium_runs")
    assert run_row["status"] == "failed"


def test_answers_held_for_the_arbiter_are_stored_when_the_strategy_fails(fakes, tmp_path):
    """The iteration's last answers are held while the strategy processes
    them: when it raises, they are stored all the same, none passed on."""
    from llm_consortium.strategies.default import DefaultStrategy

    class Broken(DefaultStrategy):
        def process_responses(self, successful_responses, iteration):
            raise RuntimeError("strategy bug")

    store = Store(tmp_path / "c.db")
    with fakes(MODELS):
        orchestrator = create_consortium(["alpha:2"], arbiter="judge", store=store)
        orchestrator.strategy = Broken(orchestrator, {})
        with pytest.raises(RuntimeError, match="strategy bug"):
            orchestrator.orchestrate("q")
    assert [(row["status"], row["selected"]) for row in stored_members(store)] == [("ok", 0), ("ok", 0)]
    (run_row,) = store.query("select status, error from consortium_runs")
    assert run_row == {"status": "failed", "error": "RuntimeError: strategy bug"}


class _Picky(llm.Model):
    model_id = "picky"

    class Options(llm.Options):
        temperature: float | None = None

    def execute(self, prompt, stream, response, conversation=None):
        yield "<answer>1</answer>"


def test_a_call_refused_while_its_response_is_built_fails_that_call_only():
    """llm validates options while building the response, in the thread that
    starts the calls: the refusal is that call's error, never the group's."""
    group = CallGroup(timeout=5, retries=2, cancel=threading.Event())
    model = _Picky()
    group.submit("bad", CallRequest(model=model, prompt="q", options={"temperature": "very"}))
    group.submit("good", CallRequest(model=model, prompt="q"))
    done = {key: outcome for kind, key, outcome in group.events() if kind == "done"}
    assert done["good"].text == "<answer>1</answer>" and done["good"].error is None
    assert done["bad"].text is None
    assert "temperature" in done["bad"].error
    assert done["bad"].attempts == 1  # not retried: nothing transient about it


def test_hundreds_of_members_failing_alike_make_one_line_each_error(fakes, tmp_path):
    specs = {"down": {"fail": "service unavailable"}, "quota": {"fail": "quota exceeded"}, "judge": {"arbiter": True}}
    with fakes(specs):
        orchestrator = create_consortium(
            ["down:40", "quota"], arbiter="judge", store=Store(tmp_path / "c.db"), retries=0
        )
        with pytest.raises(RunFailed) as failure:
            orchestrator.orchestrate("q")
    assert str(failure.value).splitlines() == [
        "Only 0 of 41 members answered in iteration 1 (at least 1 needed):",
        "  down[0], down[1], down[2] and 37 more: service unavailable",
        "  quota[0]: quota exceeded",
    ]


def test_a_strategy_that_calls_out_gets_every_answer_stored_first(fakes, user_dir, monkeypatch):
    """The semantic strategy calls an embedding model, which can take long:
    the answers are stored before it starts, not only once the arbiter is asked."""
    from conftest import db_rows, fake_models

    stored_when_embedding = []
    embed_batch = fake_models.HashEmbedding.embed_batch

    def counting(self, items, *, key=None):
        stored_when_embedding.append(
            len(db_rows(user_dir, "select 1 from consortium_members where role != 'arbiter'"))
        )
        return embed_batch(self, items, key=key)

    monkeypatch.setattr(fake_models.HashEmbedding, "embed_batch", counting)
    specs = {"models": MODELS, "embedding_models": {"bow": {"dims": 64}}}
    with fakes(specs):
        create_consortium(
            ["alpha:2", "beta"], arbiter="judge", max_iterations=1, strategy="semantic",
            embedding_backend="llm", embedding_model="bow",
        ).orchestrate("q")
    assert stored_when_embedding and stored_when_embedding[0] == 3


def test_only_the_built_in_computing_strategies_count_as_in_memory():
    from llm_consortium.strategies import create_strategy
    from llm_consortium.strategies.base import processes_in_memory
    from llm_consortium.strategies.default import DefaultStrategy

    class Renamed(DefaultStrategy):  # the built-in code: still quick
        pass

    class Plugin(DefaultStrategy):  # its own processing: may call out
        def process_responses(self, successful_responses, iteration):
            return successful_responses

    for name in ("default", "voting", "elimination", "role"):
        assert processes_in_memory(create_strategy(name, None, {})), name
    assert processes_in_memory(Renamed(None, {}))
    assert not processes_in_memory(Plugin(None, {}))
    assert not processes_in_memory(object())
