#!/usr/bin/env bash
# An offline consortium through the real `llm` CLI. The demo models are
# deterministic test models from tests/fake_models, registered only inside the
# demo's own LLM_USER_PATH (.demo/), so your real llm set-up is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLM_USER_PATH="$PWD/.demo"
rm -rf "$LLM_USER_PATH"
mkdir -p "$LLM_USER_PATH"
cp scripts/demo_models.json "$LLM_USER_PATH/fake_models.json"

source scripts/print_and_run.sh

run llm consortium save seasons \
    -m demo-astronomer -m demo-physicist:2 -m demo-contrarian \
    --arbiter demo-arbiter --confidence-threshold 0.7 --max-iterations 3
run llm models list -q consortium
run llm -m seasons "Why does Earth have seasons?"
run llm consortium runs --limit 1
run llm consortium run-info
printf '\nDemo data is in %s (delete it whenever you like).\n' "$LLM_USER_PATH"
