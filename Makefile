# Two commands: `make demo` and `make test` (`make test-fast`: without the slow, server and
# browser tests). All create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A pinned CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: help demo test test-fast lint install install-dev clean

# a bare `make` lists the targets instead of only creating .venv
help:
	@echo "make demo       create .venv, install, generate the small car data, train, show similar cars"
	@echo "make test       install the dev extras, run ruff and every test (about 10 minutes on 2 cores)"
	@echo "make test-fast  the same without the slow, server and browser tests"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make install    create .venv and install embedrec (install-dev: with the dev extras)"
	@echo "make clean      remove .venv and build outputs"
	@echo "then: source .venv/bin/activate, and embedrec --help"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/embedrec demo

# two processes (pytest-xdist), a test file to each in turn, the longest first
# (tests/file_seconds.json): about 10 minutes on 2 cores
# instead of 20; the files' module fixtures stay in one process
test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

# the unit tests alone: no benchmark smoke runs, HTTP servers or browsers (markers in pyproject)
test-fast: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -m "not slow and not server and not browser"

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info
