# Set-up on a fresh machine: both targets create .venv when missing and install the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check vlens_async tests benchmarks
	$(BIN)/mypy --strict vlens_async

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/vlens demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_client.py
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_emulator.py
	$(BIN)/python benchmarks/bench_flow.py
	$(BIN)/python benchmarks/bench_bulk.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
