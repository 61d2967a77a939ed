# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-agents clean

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

## The agent regime: thousands of slow streams, then big prompts (see benchmarks/README.md).
bench-agents: $(BIN)/.installed
	$(BIN)/python benchmarks/agents.py
	$(BIN)/python benchmarks/agents.py --scenario big-prompts --output benchmarks/results/agents-prompts.json
	$(BIN)/python benchmarks/agents.py --scenario hosts --output benchmarks/results/agents-hosts.json
	$(BIN)/python benchmarks/agents.py --scenario scale-out --output benchmarks/results/agents-scaleout.json

clean:
	rm -rf $(VENV) .pytest_cache relay-usage.db*
