"""Time to first token vs whole-run time for ``llm -m CONSORTIUM``.

Runs the real ``llm`` executable next to this Python (so the offline fake
models from tests/fake_models must be installed: ``make install-dev``) in a
throw-away ``LLM_USER_PATH``. Members answer after a simulated latency; the
arbiter writes its reply in 8-character chunks with a delay between them, like
a model streaming tokens. The same consortium is then run with ``--no-stream``
against an arbiter that takes as long to write the same reply but delivers it
at once (the fake models only pace chunks when asked to stream). For both it
prints the median time until the first byte of the answer reached stdout and
until ``llm`` exited. Prints figures only; asserts nothing.

    python scripts/bench_streaming.py [--runs 3] [--chunk-delay 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LLM = str(Path(sys.executable).parent / "llm")
ANSWER = " ".join(f"word{i}" for i in range(250))  # ~1,900 characters
HEADER = 220  # characters the fake arbiter writes before <synthesis>


def timed_run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first stdout byte, seconds to exit)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [LLM, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    first: list[float] = []

    def read() -> None:
        while os.read(proc.stdout.fileno(), 4096):
            if not first:
                first.append(time.monotonic() - started)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stderr = proc.stderr.read()
    proc.wait(timeout=300)
    exited = time.monotonic() - started
    reader.join(10)
    if proc.returncode != 0 or not first:
        raise SystemExit(f"llm {' '.join(args)} failed: {stderr.decode()}")
    return first[0], exited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.5, help="member latency, seconds")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="arbiter seconds per 8 characters")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as user_dir:
        env = {**os.environ, "LLM_USER_PATH": user_dir, "LLM_CONSORTIUM_QUIET": "1"}
        env.pop("LLM_LOAD_PLUGINS", None)
        chunks = (HEADER + len(ANSWER)) // 8
        writing = chunks * options.chunk_delay
        specs = {
            "bench-member": {"answer": ANSWER, "latency": options.latency},
            "bench-arbiter": {"arbiter": True, "chunk_delay": options.chunk_delay},
            "bench-arbiter-whole": {"arbiter": True, "latency": writing, "can_stream": False},
        }
        Path(user_dir, "fake_models.json").write_text(json.dumps({"models": specs}))
        for name, arbiter in (("bench", "bench-arbiter"), ("bench-whole", "bench-arbiter-whole")):
            subprocess.run(
                [LLM, "consortium", "save", name, "-m", f"bench-member:{options.members}", "--arbiter", arbiter],
                check=True,
                capture_output=True,
                env=env,
            )
        print(
            f"{options.members} members at {options.latency:g} s; arbiter reply of ~{HEADER + len(ANSWER)} "
            f"characters in ~{chunks} chunks, {options.chunk_delay:g} s apart (>= {writing:.1f} s); "
            f"median of {options.runs} runs"
        )
        print(f"{'mode':<12}{'first byte':>12}{'exit':>10}{'first/exit':>12}")
        for mode, extra in (("streamed", ["-m", "bench"]), ("--no-stream", ["-m", "bench-whole", "--no-stream"])):
            firsts, exits = [], []
            for _ in range(options.runs):
                first, exited = timed_run([*extra, "Say the words"], env)
                firsts.append(first)
                exits.append(exited)
            first, exited = statistics.median(firsts), statistics.median(exits)
            print(f"{mode:<12}{first:>11.2f}s{exited:>9.2f}s{first / exited:>11.0%}")


if __name__ == "__main__":
    main()
