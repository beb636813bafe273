# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv on first use, installs quantgate, runs `quantgate demo`
#   make test   the same set-up, then the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench clean-venv

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

clean-venv:
	rm -rf $(VENV)
