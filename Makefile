# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Each installs what it needs: a virtualenv in .venv, the package with dev extras, and the
# Kafka broker jars (resolved from Maven Central by `ctpipe kafka fetch` into .ctpipe/cache), and
# the optional native build of the hot modules (`ctpipe native build`: mypyc + the C compiler,
# keyed by the sources, a no-op when it matches; without a compiler the code runs as pure Python).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ctpipe-installed

.PHONY: demo test lint install
install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ctpipe needs Python >= 3.11 (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ctpipe native build
	$(BIN)/ctpipe demo

test: $(STAMP)
	$(BIN)/ctpipe kafka fetch
	$(BIN)/ctpipe native build
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
