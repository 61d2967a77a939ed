# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-agents bench-agents-peers clean

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

## The slow streams against LiteLLM's proxy (installed once into its own venv, slow), then at a
## slower pace, 15 chunks 200 ms apart (see benchmarks/README.md).
bench-agents-peers: $(BIN)/.installed
	$(BIN)/python benchmarks/agents.py --with-litellm --streams 1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500 --duration 4 --rounds 2 --gap-bounds 5,10,20,50 --max-total-seconds 3000 --output benchmarks/results/agents-litellm.json
	$(BIN)/python benchmarks/agents.py --pace-ms 200 --chunks 15 --streams 250,500,1000,2000 --ramp 2 --duration 6 --rounds 2 --output benchmarks/results/agents-pace200.json

clean:
	rm -rf $(VENV) .pytest_cache relay-usage.db*
