#!/usr/bin/env bash
# Developer set-up: a virtualenv with every extra, then the test suite.
# Works on a PEP 668 "externally managed" system Python: everything goes into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
# PyTorch for the embeddings extra, pinned so that sentence-transformers does not
# pull the newest (large) build. Where a local CPU wheel of 2.13.0 is provided (as on
# our CI machines) pip takes it; elsewhere see https://pytorch.org for a CPU-only index.
python -m pip install --quiet torch==2.13.0 || echo "torch==2.13.0 not available here; sentence-transformers will pick a torch itself"
python -m pip install --quiet -e '.[embeddings,visualize,dev]' -e tests/fake_models
python -m pytest -q
echo
echo "Setup complete!"
echo "  source .venv/bin/activate"
echo "  llm consortium --help"
echo "  llm consortium save my-consortium -m gpt-4o-mini:2 -m claude-3-5-haiku --arbiter gpt-4o"
