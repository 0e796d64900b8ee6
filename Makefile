# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean-venv

# torch is pinned and installed first: the CPU build lies on disk, while a loose `torch`
# requirement would pull a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,dlib,onnx,bench,web,video]"
	touch $(STAMP)

DEMO_OUT ?= demo_output

# The newcomer's demo (scan/demo.py): demo set, training, a portrait translated, held-out scores.
demo: $(STAMP)
	$(BIN)/python -m scan.demo --out $(DEMO_OUT)

# The folders `make lint` checks: the package's code, type-checked too, and the tests (ruff only;
# benchmarks/ are not linted).
LINT_DIRS := scan stages fusion datasets
MYPY_SRC := $(VENV)/mypy-src

# ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade) and mypy; configured in pyproject.toml.
# mypy checks the package `scan` in its installed layout (setup.cfg maps scan.stages -> stages/ etc.),
# which it cannot see through the editable install's import hook: a tree of links in .venv
# rebuilds that layout, and the reported paths are mapped back to the real files.
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS) tests
	rm -rf $(MYPY_SRC) && mkdir -p $(MYPY_SRC)/scan
	for f in scan/*; do [ "$${f##*/}" = __pycache__ ] || ln -s "$(CURDIR)/$$f" $(MYPY_SRC)/scan/; done
	for d in stages fusion datasets; do ln -s "$(CURDIR)/$$d" $(MYPY_SRC)/scan/$$d; done
	set -o pipefail; MYPYPATH=$(MYPY_SRC) $(BIN)/mypy -p scan \
		| sed -E 's,^$(MYPY_SRC)/scan/(stages|fusion|datasets)/,\1/,; s,^$(MYPY_SRC)/,,'

# Everything: lint, then the whole test suite (CI runs this, through .ci/run).
test: $(STAMP) lint
	$(BIN)/python -m pytest

# The edit-test loop: the tests not marked `slow` (setup.cfg), under a minute. ruff's findings are shown
# but do not stop the tests (`make lint` / `make test` enforce them); no type check.
test-fast: $(STAMP)
	-$(BIN)/ruff check --output-format concise $(LINT_DIRS) tests
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/model_cost.py
	$(BIN)/python benchmarks/quality.py

clean-venv:
	rm -rf $(VENV)
