"""One consortium round through llm's own OpenAI plugin, over real HTTP.

A loopback OpenAI-compatible server (tests/openai_server.py, 127.0.0.1, an
ephemeral port, in a process of its own so it takes no CPU from the client)
answers every chat request after exactly ``--delay`` seconds (500 ms). Members
are distinct models (``ok-1`` … ``ok-N`` in ``extra-openai-models.yaml``), so
resolving them costs what it costs a real user. The floor is two round trips
(1.0 s): every member at once, then the arbiter.

Each contender runs in a fresh process (plugins loaded before timing, like a
warm ``llm``), for ``--rounds`` rounds:

* ``ours``: ``create_consortium([...], arbiter=...).orchestrate()``;
* ``plain llm``: no consortium — ``model.prompt(...).text()`` for each member
  in a thread of its own (models looked up before timing), then the arbiter;
* ``original 0.8.0``: the same round through the original plugin, when a
  Python with it installed is given (``--original PYTHON``, e.g. a throw-away
  venv made with ``pip install llm-consortium==0.8.0``; never in this repo).

Prints wall time / floor: the first round (what ``llm -m`` pays in a fresh
process) and the median of all rounds. Also, for the async question, the same
N member calls made with llm's async models on one event loop versus sync
models in a thread each, both sharing one client per endpoint.

Usage: python scripts/bench_http.py [--sizes 5,50] [--rounds 3] [--delay 0.5]
       [--original /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_LIFETIME = 900  # seconds: the server process never outlives a forgotten run

SERVE = """
import sys, threading, time
sys.path.insert(0, {tests!r})
import openai_server

delay = {delay!r}
chat = openai_server._Handler._chat

def delayed_chat(self, body):
    time.sleep(delay)
    chat(self, body)

openai_server._Handler._chat = delayed_chat
openai_server._Handler.timeout = 60
server = openai_server.serve()
print(server.base_url, flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), server.close()), daemon=True).start()
server._thread.join({lifetime!r})
server.close()
"""

PROMPT = "What is 6 x 7? Answer briefly."

OURS = """
import json, sys, time, llm
from llm_consortium import create_consortium
members, rounds = int(sys.argv[1]), int(sys.argv[2])
llm.get_model("arbiter")  # load plugins (and openai) before timing
walls = []
for _ in range(rounds):
    orchestrator = create_consortium(
        [f"ok-{i}" for i in range(1, members + 1)], arbiter="arbiter", max_iterations=1, retries=0
    )
    started = time.perf_counter()
    result = orchestrator.orchestrate(PROMPT)
    walls.append(time.perf_counter() - started)
    assert result["synthesis"]["synthesis"] == "42", result["synthesis"]
    answered = sum(1 for r in result["iterations"][0]["model_responses"] if r.get("response"))
    assert answered == members, result["iterations"][0]["model_responses"][:2]
print(json.dumps(walls))
"""

ORIGINAL = """
import json, sys, time, llm
from llm_consortium.orchestrator import create_consortium
members, rounds = int(sys.argv[1]), int(sys.argv[2])
llm.get_model("arbiter")
walls = []
for _ in range(rounds):
    orchestrator = create_consortium(
        [f"ok-{i}" for i in range(1, members + 1)], arbiter="arbiter", max_iterations=1
    )
    started = time.perf_counter()
    result = orchestrator.orchestrate(PROMPT)
    walls.append(time.perf_counter() - started)
print(json.dumps(walls))
"""

# Prepended to the client scripts that call members in a thread each.
IN_THREADS = """
import threading

def in_threads(models):
    answers = [None] * len(models)

    def call(index):
        answers[index] = models[index].prompt(PROMPT).text()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answers), answers
    return answers
"""

PLAIN = IN_THREADS + """
import json, sys, time, llm
members, rounds = int(sys.argv[1]), int(sys.argv[2])
models = [llm.get_model(f"ok-{i}") for i in range(1, members + 1)]
arbiter = llm.get_model("arbiter")
walls = []
for _ in range(rounds):
    started = time.perf_counter()
    answers = in_threads(models)
    verdict = arbiter.prompt("\\n".join(answers)).text()
    walls.append(time.perf_counter() - started)
    assert "<synthesis>42</synthesis>" in verdict, verdict
print(json.dumps(walls))
"""

# Item 2 of the performance issue: members on one event loop (llm's async
# models) or a thread each (sync models), both with one client per endpoint.
ASYNC_VS_THREADS = IN_THREADS + """
import asyncio, json, sys, time, llm
from llm_consortium.clients import ClientPool
members, rounds = int(sys.argv[1]), int(sys.argv[2])
pool = ClientPool()
sync_models = [pool.adopt(llm.get_model(f"ok-{i}")) for i in range(1, members + 1)]
async_models = [pool.adopt(llm.get_async_model(f"ok-{i}")) for i in range(1, members + 1)]
loop = asyncio.new_event_loop()
results = {"threads": [], "event loop": []}

async def loop_round():
    async def call(model):
        return await model.prompt(PROMPT).text()
    answers = await asyncio.gather(*(call(model) for model in async_models))
    assert all(answers)

for _ in range(rounds):
    for label, run in (("threads", lambda: in_threads(sync_models)), ("event loop", lambda: loop.run_until_complete(loop_round()))):
        cpu, started = time.process_time(), time.perf_counter()
        run()
        results[label].append((time.perf_counter() - started, time.process_time() - cpu))
print(json.dumps(results))
"""


# One member call alone, with a reused client: the server's delay plus what
# the client, the server and the machine add to every round trip.
ONE_CALL = """
import json, sys, time, llm
from llm_consortium.clients import ClientPool
rounds = int(sys.argv[2])
model = ClientPool().adopt(llm.get_model("ok-1"))
model.prompt(PROMPT, stream=False).text()
walls = []
for _ in range(rounds):
    started = time.perf_counter()
    model.prompt(PROMPT, stream=False).text()
    walls.append(time.perf_counter() - started)
print(json.dumps(walls))
"""


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    code = SERVE.format(tests=str(ROOT / "tests"), delay=delay, lifetime=SERVER_LIFETIME)
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    base_url = server.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        server.kill()
        raise SystemExit("the loopback server did not start")
    return server, base_url


def write_models(user_dir: Path, base_url: str, members: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import write_extra_openai_models

    ids = [f"ok-{i}" for i in range(1, members + 1)] + ["arbiter"]
    write_extra_openai_models(user_dir, base_url, [{"model_id": i, "can_stream": False} for i in ids])


def run_client(python: str, script: str, members: int, rounds: int, env: dict[str, str], cwd: str):
    completed = subprocess.run(
        [python, "-c", f"PROMPT = {PROMPT!r}\n" + script, str(members), str(rounds)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{python} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--original", help="a Python with llm-consortium 0.8.0 installed")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    floor = 2 * options.delay
    server, base_url = start_server(options.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            user_dir = Path(tmp) / "llm-user"
            user_dir.mkdir()
            write_models(user_dir, base_url, max(sizes))
            # The original writes a log under ~/.config/io.datasette.llm and
            # crashes on import without it: give it a throw-away HOME.
            (Path(tmp) / ".config" / "io.datasette.llm").mkdir(parents=True)
            env = {**os.environ, "LLM_USER_PATH": str(user_dir), "HOME": tmp, "LLM_CONSORTIUM_QUIET": "1"}
            env.pop("LLM_LOAD_PLUGINS", None)
            env.pop("LLM_OPENAI_SHOW_RESPONSES", None)
            contenders = [("ours", sys.executable, OURS), ("plain llm", sys.executable, PLAIN)]
            if options.original:
                contenders.append(("original 0.8.0", options.original, ORIGINAL))
            print(
                f"HTTP: one round, every request answered after {options.delay * 1000:.0f} ms by a "
                f"loopback server; floor {floor:.1f} s; {options.rounds} rounds per fresh process"
            )
            single = statistics.median(run_client(sys.executable, ONE_CALL, 1, 5, env, cwd=tmp))
            print(
                f"one member call alone takes {single:.3f} s here (median of 5): the round trip "
                f"that two of make the floor"
            )
            print("wall / floor, first round (median of rounds):")
            header = f"{'members':>8}" + "".join(f"{name:>22}" for name, _, _ in contenders)
            print(header)
            for size in sizes:
                cells = []
                for _, python, script in contenders:
                    walls = run_client(python, script, size, options.rounds, env, cwd=tmp)
                    cells.append(f"{walls[0] / floor:.2f} ({statistics.median(walls) / floor:.2f})")
                print(f"{size:>8}" + "".join(f"{cell:>22}" for cell in cells))
            print("\nmembers only (no arbiter), one client per endpoint: wall / one round trip, CPU seconds")
            print(f"{'members':>8}{'thread each':>24}{'one event loop':>24}")
            for size in sizes:
                results = run_client(sys.executable, ASYNC_VS_THREADS, size, options.rounds, env, cwd=tmp)
                cells = []
                for label in ("threads", "event loop"):
                    wall = statistics.median(w for w, _ in results[label])
                    cpu = statistics.median(c for _, c in results[label])
                    cells.append(f"{wall / options.delay:.2f}, {cpu:.2f} s CPU")
                print(f"{size:>8}" + "".join(f"{cell:>24}" for cell in cells))
    finally:
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
