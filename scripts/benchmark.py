"""Benchmarks for llm-consortium. Prints figures; asserts nothing.

(a) Fan-out: one round with N members of simulated 200 ms latency and a
    200 ms arbiter, through create_consortium() with a real SQLite store.
    The floor is 400 ms (one member round trip plus one arbiter round trip);
    wall/floor near 1.0 means members really run at once. Beside it, the
    same round made with plain llm calls (a thread each, then the arbiter):
    what llm and the threads alone cost, with no consortium.
(b) Start-up: `llm --version` with the plugin loaded and without any plugin
    (LLM_LOAD_PLUGINS), medians of alternating runs, plus which heavy modules
    a plain `llm` start-up imports with the plugin loaded.

Usage: python scripts/benchmark.py [--sizes 10,50,200] [--rounds 3] [--startup-runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

LATENCY = 0.2
FLOOR = 2 * LATENCY
HEAVY = ("sklearn", "hdbscan", "plotly", "sentence_transformers", "torch", "openai", "rich")


def fan_out(sizes: list[int], rounds: int) -> None:
    import llm
    from llm.plugins import pm

    from llm_consortium import create_consortium
    from llm_consortium.db import Store

    class SlowMember(llm.Model):
        model_id = "bench-member"

        def execute(self, prompt, stream, response, conversation=None):
            time.sleep(LATENCY)
            response.set_usage(input=10, output=5)
            yield "<thinking>t</thinking><answer>42</answer><confidence>0.9</confidence>"

    class SlowArbiter(llm.Model):
        model_id = "bench-arbiter"

        def execute(self, prompt, stream, response, conversation=None):
            time.sleep(LATENCY)
            yield "<confidence>0.95</confidence><needs_iteration>false</needs_iteration><synthesis>42</synthesis>"

    class Plugin:
        @llm.hookimpl
        def register_models(self, register):
            register(SlowMember())
            register(SlowArbiter())

    pm.register(Plugin(), name="bench-models")
    print("(a) fan-out: one round, members 200 ms, arbiter 200 ms, floor 400 ms")
    print(f"{'members':>8} {'median wall':>12} {'wall/floor':>11} {'best':>8} {'plain llm':>10}")
    member, arbiter = llm.get_model("bench-member"), llm.get_model("bench-arbiter")

    def plain_round(pool: ThreadPoolExecutor, size: int) -> None:
        """llm alone: each member call in a thread of a warm pool (no thread
        is started while timed), then the arbiter."""
        calls = [pool.submit(lambda: member.prompt("What is 6 x 7?", stream=False).text()) for _ in range(size)]
        arbiter.prompt("\n".join(call.result() for call in calls), stream=False).text()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        # One untimed run loads llm's model registry and the store's schema.
        create_consortium(["bench-member"], arbiter="bench-arbiter", store=store).orchestrate("warm up")
        for size in sizes:
            walls, plain = [], []
            pool = ThreadPoolExecutor(max_workers=size)
            list(pool.map(lambda _: time.sleep(0.05), range(size)))  # start every thread
            for _ in range(rounds):
                orchestrator = create_consortium(
                    [f"bench-member:{size}"], arbiter="bench-arbiter", store=store, retries=0
                )
                started = time.perf_counter()
                result = orchestrator.orchestrate("What is 6 x 7?")
                walls.append(time.perf_counter() - started)
                assert result["synthesis"]["synthesis"] == "42"
                started = time.perf_counter()
                plain_round(pool, size)
                plain.append(time.perf_counter() - started)
            median = statistics.median(walls)
            print(
                f"{size:>8} {median * 1000:>10.0f}ms {median / FLOOR:>11.3f} {min(walls) / FLOOR:>8.3f}"
                f" {statistics.median(plain) / FLOOR:>10.3f}"
            )
            pool.shutdown()
    pm.unregister(name="bench-models")


PLUGIN_COST = """
import time, click, llm
start = time.perf_counter()
import llm_consortium
llm_consortium.register_commands(click.Group())
print((time.perf_counter() - start) * 1000)
"""


def _time_command(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def startup(runs: int) -> None:
    llm_bin = str(Path(sys.executable).parent / "llm")
    # Bytecode caching on, as on a user's machine (pip compiles installed
    # packages; an environment with PYTHONDONTWRITEBYTECODE would make every
    # run recompile the plugin and llm alike).
    skip = {"LLM_LOAD_PLUGINS", "PYTHONDONTWRITEBYTECODE"}
    base = {key: value for key, value in os.environ.items() if key not in skip}
    with tempfile.TemporaryDirectory() as tmp:
        base["LLM_USER_PATH"] = tmp
        with_plugin = {**base, "LLM_LOAD_PLUGINS": "llm-consortium"}
        without = {**base, "LLM_LOAD_PLUGINS": ""}
        # LLM_LOAD_PLUGINS=NAME makes llm look NAME up among the installed
        # distributions, which costs time of its own; this baseline pays the
        # same look-up for a name that is not installed, and loads nothing.
        lookup_only = {**base, "LLM_LOAD_PLUGINS": "llm-consortium-not-installed"}
        for _ in range(2):  # write .pyc files and warm the file cache
            _time_command([llm_bin, "--version"], with_plugin)
            _time_command([llm_bin, "--version"], without)
        timings: dict[str, list[float]] = {"with": [], "without": [], "lookup": []}
        for _ in range(runs):
            timings["without"].append(_time_command([llm_bin, "--version"], without))
            timings["with"].append(_time_command([llm_bin, "--version"], with_plugin))
            timings["lookup"].append(_time_command([llm_bin, "--version"], lookup_only))
        probe = [
            sys.executable,
            "-c",
            f"import sys, llm.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))",
        ]
        imported = {
            label: set(
                filter(None, subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip().split(","))
            )
            for label, env in (("with", with_plugin), ("without", without))
        }
        added = sorted(imported["with"] - imported["without"])
        plugins = subprocess.run(
            [llm_bin, "plugins"], env=with_plugin, capture_output=True, text=True, check=True
        ).stdout
        # The same cost measured inside the interpreter, free of process
        # start-up noise: importing the plugin and its register_commands hook.
        inside = [
            float(
                subprocess.run(
                    [sys.executable, "-c", PLUGIN_COST],
                    env=without,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for _ in range(runs)
        ]
    with_ms = statistics.median(timings["with"]) * 1000
    without_ms = statistics.median(timings["without"]) * 1000
    print(f"\n(b) start-up: `llm --version`, median of {runs} alternating runs")
    print(f"  without plugins:      {without_ms:7.1f} ms")
    print(f"  with llm-consortium:  {with_ms:7.1f} ms")
    lookup_ms = statistics.median(timings["lookup"]) * 1000
    print(f"  added by the plugin:  {with_ms - without_ms:7.1f} ms  (ratio {with_ms / without_ms:.3f})")
    print(f"  LLM_LOAD_PLUGINS look-up of a name not installed (nothing loaded): {lookup_ms:7.1f} ms")
    print(f"  added by the plugin beyond that look-up: {with_ms - lookup_ms:7.1f} ms")
    print(f"  in-process cost of import + register_commands: {statistics.median(inside):.1f} ms (median)")
    print(f"  plugin loaded: {'llm-consortium' in plugins or 'llm_consortium' in plugins}")
    print(f"  heavy modules ({', '.join(HEAVY)}) that llm imports itself: {', '.join(sorted(imported['without'])) or 'none'}")
    print(f"  heavy modules the plugin adds at start-up: {', '.join(added) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--startup-runs", type=int, default=15)
    args = parser.parse_args()
    fan_out([int(size) for size in args.sizes.split(",")], args.rounds)
    startup(args.startup_runs)


if __name__ == "__main__":
    main()
