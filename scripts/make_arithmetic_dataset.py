"""Write N arithmetic questions as eval JSONL (the `make demo-eval` dataset).

    python scripts/make_arithmetic_dataset.py            # 200 questions on stdout
    python scripts/make_arithmetic_dataset.py 50 --seed 7 > math.jsonl

Each line: {"id": "q001", "prompt": "What is 37 + 48?", "expected": 85}.
The same N and seed always give the same questions.
"""

from __future__ import annotations

import argparse
import json
import random
import sys


def questions(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for number in range(1, count + 1):
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 99), rng.randint(2, 99)) if op != "*" else (rng.randint(2, 30), rng.randint(2, 30))
        truth = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"id": f"q{number:03d}", "prompt": f"What is {a} {op} {b}?", "expected": truth})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    for row in questions(args.count, args.seed):
        sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
