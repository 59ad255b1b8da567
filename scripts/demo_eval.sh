#!/usr/bin/env bash
# Does the consortium beat its best member? Offline, through the real `llm` CLI.
# The models are deterministic test models from tests/fake_models: each
# math-65-* answers an arithmetic question correctly with probability 0.65
# (seeded by the model and the question, so its errors are its own), math-80
# with 0.80, and majority-arbiter picks the answer most members gave. They are
# registered only in the demo's own LLM_USER_PATH (.demo-eval/).
set -euo pipefail
cd "$(dirname "$0")/.."
export LLM_USER_PATH="$PWD/.demo-eval"
rm -rf "$LLM_USER_PATH"
mkdir -p "$LLM_USER_PATH"
cp scripts/demo_eval_models.json "$LLM_USER_PATH/fake_models.json"
python scripts/make_arithmetic_dataset.py 200 > "$LLM_USER_PATH/arithmetic.jsonl"

source scripts/print_and_run.sh

cd "$LLM_USER_PATH"
run head -n 3 arithmetic.jsonl
run llm consortium save five-65 \
    -m math-65-a -m math-65-b -m math-65-c -m math-65-d -m math-65-e \
    --arbiter majority-arbiter --max-iterations 1
run llm consortium eval arithmetic.jsonl --consortium five-65 --members --baseline math-80 \
    --scorer number --concurrency 8
run llm consortium batch arithmetic.jsonl -m five-65 -o answers.jsonl --concurrency 8
run head -n 2 answers.jsonl
printf '\nDemo data is in %s (delete it whenever you like).\n' "$LLM_USER_PATH"
