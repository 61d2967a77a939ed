# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## Run the demo host (FastAPI notes service, relay at /ai, offline mock provider by default).
demo: $(BIN)/.installed
	$(BIN)/python example_projects/fastapi_service/main.py

## Run the whole test suite.
test: $(BIN)/.installed
	$(BIN)/python -m pytest

## Run the benchmark (see benchmarks/README.md).
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache relay-usage.db*
