"""How `llm consortium batch` scales with rows: wall time and peak RSS.

Runs the real `llm` executable of this virtualenv (with the offline fake
models of tests/fake_models installed) in a temporary LLM_USER_PATH over
generated prompts, first a small set then the full one, and prints wall
time, rows per second and the child's peak resident memory for each, and
the ratios. Memory that stays flat in the number of rows gives an RSS ratio
near 1 while the row ratio is 10.

    python scripts/bench_batch.py                 # 1,000 and 10,000 rows, a plain model
    python scripts/bench_batch.py --consortium    # the same through a 3-member consortium
    python scripts/bench_batch.py --rows 2000 --small 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLM = str(Path(sys.executable).parent / "llm")
# "record": false — the fakes keep no per-call record, which would grow with the rows.
MODELS = {
    "models": {
        "bench-fast": {"reply": "answer to {prompt}", "record": False},
        "bench-m1": {"answer": "4", "record": False},
        "bench-m2": {"answer": "4", "record": False},
        "bench-m3": {"answer": "5", "record": False},
        "bench-arbiter": {"arbiter": True, "record": False},
    }
}


def run(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one ``llm`` process."""
    started = time.perf_counter()
    # A fresh process per measurement: ru_maxrss of children is the maximum
    # over all of them, so each size runs in its own python -c wrapper.
    probe = (
        "import resource, subprocess, sys; "
        "code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{result.stderr}")
    return seconds, int(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--consortium", action="store_true",
                        help="run a saved 3-member consortium instead of one plain model")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "LLM_USER_PATH": str(root), "LLM_CONSORTIUM_QUIET": "1"}
        env.pop("LLM_LOAD_PLUGINS", None)
        (root / "fake_models.json").write_text(json.dumps(MODELS))
        model = "bench-fast"
        if options.consortium:
            model = "bench-team"
            subprocess.run(
                [LLM, "consortium", "save", model, "-m", "bench-m1", "-m", "bench-m2", "-m", "bench-m3",
                 "--arbiter", "bench-arbiter", "--max-iterations", "1"],
                env=env, check=True, capture_output=True,
            )
        figures = []
        for rows in (options.small, options.rows):
            source = root / f"in-{rows}.jsonl"
            with open(source, "w") as stream:
                for number in range(1, rows + 1):
                    stream.write(json.dumps({"id": number, "prompt": f"What is {number} + 1?"}) + "\n")
            out = root / f"out-{rows}.jsonl"
            seconds, rss = run(
                [LLM, "consortium", "batch", str(source), "-m", model, "-o", str(out),
                 "--concurrency", str(options.concurrency)],
                env,
            )
            written = sum(1 for _ in open(out))
            assert written == rows, f"{written} lines for {rows} rows"
            figures.append((rows, seconds, rss))
            print(f"{rows:>7,} rows  {seconds:7.1f} s  {rows / seconds:8.0f} rows/s  "
                  f"peak RSS {rss / 1024:6.1f} MiB   ({model}, concurrency {options.concurrency})")
        (small_rows, small_s, small_rss), (rows, big_s, big_rss) = figures
        print(f"ratios for {rows / small_rows:.0f}x the rows: time {big_s / small_s:.1f}x, "
              f"peak RSS {big_rss / small_rss:.2f}x")


if __name__ == "__main__":
    main()
