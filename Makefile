# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv on first use, installs quantgate, runs `quantgate demo`
#   make test   the same set-up, then the test suite (what .ci/run calls)
# and one that rebuilds the bundled model (half an hour or more on 2 cores; OUT= and ARGS= pass on):
#   make retrain  trains quantgate/reference/weights in two steps (train into BASE, then cite_tune),
#                 with jemalloc preloaded where it is installed
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= quantgate/reference/weights
BASE ?= /tmp/quantgate-reference-base
# glibc malloc let a full CPU run grow past 11 GB resident and slow down as it went; jemalloc
# does not (docs/reference-model.md, Retraining). Empty where none is installed: the run goes on.
JEMALLOC ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
	/usr/lib/aarch64-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2))

.PHONY: demo test test-all bench retrain clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "quantgate needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,refusal]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/quantgate demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'slow or not slow'

bench: $(STAMP)
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/batching.py
	$(BIN)/python bench/checks.py

retrain: $(STAMP)
	$(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC)) $(BIN)/python -m quantgate.reference.train --out $(BASE) $(ARGS)
	$(BIN)/python -m quantgate.reference.cite_tune --base $(BASE) --out $(OUT)

clean-venv:
	rm -rf $(VENV)
