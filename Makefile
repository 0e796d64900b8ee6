# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

# torch is pinned and installed first: the CPU build lies on disk, while a loose `torch`
# requirement would pull a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,dlib,onnx,bench]"
	touch $(STAMP)

DEMO_OUT ?= demo_output

# The newcomer's demo (scan/demo.py): demo set, training, a portrait translated, held-out scores.
demo: $(STAMP)
	$(BIN)/python -m scan.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/model_cost.py
	$(BIN)/python benchmarks/quality.py

clean-venv:
	rm -rf $(VENV)
