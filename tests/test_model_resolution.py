"""Model resolution: one pass over llm's models per consortium, cached per
process until llm's registry could have changed, and safe on first use from
many threads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import llm
import pytest
from llm.plugins import pm

from llm_consortium import create_consortium, resolve

from conftest import fake_models, invoke, write_fake_spec
from openai_server import write_extra_openai_models


class CountingPlugin:
    """Registers fake models and counts how often llm asks for them."""

    def __init__(self, specs: dict) -> None:
        self.inner = fake_models.FakeModels(specs)
        self.passes = 0

    @llm.hookimpl
    def register_models(self, register):
        self.passes += 1
        self.inner.register_models(register)


def test_a_run_of_many_distinct_models_makes_one_pass_and_the_next_none():
    specs = {f"distinct-{i}": {"answer": "7"} for i in range(20)}
    specs["distinct-arbiter"] = {"arbiter": True}
    plugin = CountingPlugin(specs)
    pm.register(plugin, name="undo-counting")
    try:
        members = [f"distinct-{i}" for i in range(20)]
        first = create_consortium(members, arbiter="distinct-arbiter", max_iterations=1).orchestrate("q")
        passes_first = plugin.passes
        second = create_consortium(members, arbiter="distinct-arbiter", max_iterations=1).orchestrate("q")
    finally:
        pm.unregister(name="undo-counting")
    assert first["synthesis"]["synthesis"] == second["synthesis"]["synthesis"] == "7"
    answered = [r for r in first["iterations"][0]["model_responses"] if "response" in r]
    assert sorted(r["model"] for r in answered) == sorted(members)
    assert passes_first == 1
    assert plugin.passes == 1  # the second run used the cached registry


def test_save_checks_many_models_in_one_pass():
    specs = {f"saved-{i}": {"answer": "7"} for i in range(15)}
    plugin = CountingPlugin(specs)
    pm.register(plugin, name="undo-counting")
    try:
        args = [arg for i in range(15) for arg in ("-m", f"saved-{i}")]
        result = invoke("consortium", "save", "wide", *args, "-m", "not-installed", "--arbiter", "saved-0")
    finally:
        pm.unregister(name="undo-counting")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("not installed") == 1 and "'not-installed'" in result.stderr
    assert plugin.passes == 1


def test_a_plugin_registered_later_is_seen_by_the_next_run(fakes):
    with fakes({"early": {"answer": "1"}, "judge": {"arbiter": True}}):
        orchestrator = create_consortium(["early", "late"], arbiter="judge", max_iterations=1)
        result = orchestrator.orchestrate("q")
        late = [r for r in result["iterations"][0]["model_responses"] if r["model"] == "late"]
        assert late[0]["error"] == "Unknown model: late (see 'llm models')"
        plugin = fake_models.FakeModels({"late": {"answer": "1"}})
        pm.register(plugin, name="undo-late")
        try:
            result = orchestrator.orchestrate("q")
        finally:
            pm.unregister(name="undo-late")
    late = [r for r in result["iterations"][0]["model_responses"] if r["model"] == "late"]
    assert late[0]["response"].count("<answer>1</answer>") == 1
    assert "error" not in late[0] or not late[0]["error"]


def test_a_model_added_to_extra_openai_models_is_found_at_once(user_dir):
    with pytest.raises(llm.UnknownModelError):
        resolve.get_model("yaml-added")
    write_extra_openai_models(user_dir, "http://127.0.0.1:9/v1", ["yaml-added"])
    assert resolve.get_model("yaml-added").model_id == "yaml-added"
    write_extra_openai_models(user_dir, "http://127.0.0.1:9/v1", [])
    with pytest.raises(llm.UnknownModelError):
        resolve.get_model("yaml-added")


def test_an_alias_set_with_llm_aliases_is_found_at_once(fakes):
    with fakes({"aliased-model": {"answer": "1"}}):
        with pytest.raises(llm.UnknownModelError):
            resolve.get_model("nick")
        assert invoke("aliases", "set", "nick", "aliased-model").exit_code == 0
        assert resolve.get_model("nick").model_id == "aliased-model"


def test_a_consortium_saved_after_first_use_is_a_usable_member(fakes):
    with fakes({"leaf": {"answer": "5"}, "judge": {"arbiter": True}}):
        with pytest.raises(llm.UnknownModelError):
            resolve.get_model("inner-team")
        result = invoke("consortium", "save", "inner-team", "-m", "leaf:2", "--arbiter", "judge")
        assert result.exit_code == 0, result.output
        assert str(resolve.get_model("inner-team")) == "Consortium: inner-team"
        outer = create_consortium(["inner-team", "leaf"], arbiter="judge", max_iterations=1)
        assert outer.orchestrate("q")["synthesis"]["synthesis"] == "5"
        assert invoke("consortium", "remove", "inner-team").exit_code == 0
        with pytest.raises(llm.UnknownModelError):
            resolve.get_model("inner-team")


THREADS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from llm_consortium import create_consortium

    count = int(sys.argv[1])
    answers, errors = [], []
    start = threading.Barrier(count)

    def work(i):
        start.wait()
        try:
            result = create_consortium(
                ["t-member:2", "t-other"], arbiter="t-arbiter", max_iterations=1
            ).orchestrate(f"question {i}")
            answers.append(result["synthesis"]["synthesis"])
        except Exception as ex:
            errors.append(repr(ex))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"answers": answers, "errors": sorted(set(errors))}))
    """
)


@pytest.mark.slow
def test_first_use_from_64_threads_in_fresh_processes_always_succeeds(user_dir):
    """llm loads its plugins lazily and marks them loaded before they are:
    every thread must still find the models (repeated in fresh processes,
    since the race is on the first use in a process)."""
    write_fake_spec(
        user_dir,
        {"t-member": {"answer": "7"}, "t-other": {"answer": "7"}, "t-arbiter": {"arbiter": True}},
    )
    for _ in range(3):
        completed = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, "64"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        outcome = json.loads(completed.stdout)
        assert outcome["errors"] == []
        assert outcome["answers"] == ["7"] * 64
