# Sales-intelligence ML platform. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export SALESML_HOME ?= var
# Demo size: small enough for a laptop in well under 5 minutes.
DEMO_ARGS ?= --accounts 600 --leads 2500 --reps 40 --weeks 104 --seed 7

.DEFAULT_GOAL := help
.PHONY: help install browser demo test test-fast lint check bench clean mlflow-ui serve serve-stop bento team-up team-down

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: write every package's .pyc once, here. Where PYTHONDONTWRITEBYTECODE is set
# (some CI images), Python otherwise recompiles Feast, MLflow & co. on every import:
# `import feast, mlflow` took 13.3-14.5 s instead of 7.1-8.0 s on 2 cores, in every `salesml` command.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --quiet --compile-bytecode
	@touch $@

install: $(VENV)/.installed ## Create .venv from the lock file (uv)

browser: ## Install Debian's chromium (headless screenshots of the MLflow UI) if it is missing
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: install ## Simulate data, build the feature store, train + register 3 models, score the book (warnings), start the scoring service and call it
	$(BIN)/salesml team up
	$(BIN)/salesml data generate $(DEMO_ARGS)
	$(BIN)/salesml data validate $(SALESML_HOME)/data/raw
	$(BIN)/salesml features build --raw $(SALESML_HOME)/data/raw
	$(BIN)/salesml features apply
	$(BIN)/salesml features materialize
	$(BIN)/salesml features training-set --model chs
	$(BIN)/salesml features training-set --model intent
	$(BIN)/salesml features training-set --model lead_match
	$(BIN)/salesml train intent
	$(BIN)/salesml train lead_match
	$(BIN)/salesml train chs
	$(BIN)/salesml score chs --backfill 4
	$(BIN)/salesml score intent
	$(BIN)/salesml warnings list --limit 10
	@echo "Everything is under $(SALESML_HOME)/: data/raw (export), data/features (Feast sources), feast/ (registry, online store),"
	@echo "data/training (training sets), mlflow.db + mlartifacts/ (runs, registered models), reports/ (plots)."
	@echo "Compare runs in the MLflow UI: make mlflow-ui  (= $(BIN)/mlflow ui --backend-store-uri sqlite:///$(SALESML_HOME)/mlflow.db), then open http://127.0.0.1:5000; under SALESML_PROFILE=team open the MLflow server that salesml team up printed"
	$(BIN)/salesml serve-demo

serve: install ## Run the scoring service in the foreground (http://127.0.0.1:3000)
	$(BIN)/salesml serve

serve-stop: ## Stop the background service that `make demo` left running
	$(BIN)/salesml serve-stop

# The Bento's packages are uv.lock's (bentofile.yaml reads this file); its models are the registry's
# champions, imported into the BentoML model store and pinned by `bentoml build`.
BENTO_REQUIREMENTS := build/bento/requirements.txt

bento: install ## Build the Bento of the scoring service: its models pinned (the registry's champions), its packages from uv.lock
	@mkdir -p $(dir $(BENTO_REQUIREMENTS))
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --format requirements-txt --quiet -o $(BENTO_REQUIREMENTS)
	$(BIN)/salesml bento-models
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/bentoml build

team-up: install ## Team profile (SALESML_PROFILE=team): create the PostgreSQL databases, start the MLflow server
	$(BIN)/salesml team up

team-down: ## Stop the MLflow server that team-up started
	$(BIN)/salesml team down

mlflow-ui: install ## Open the MLflow UI on the local tracking store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(SALESML_HOME)/mlflow.db --host 127.0.0.1 --port 5000

test: install browser lint ## Lint (ruff, import layers), then run the test suite
	$(BIN)/pytest -q --durations=25

# The markers are registered (and described) in pyproject.toml's [tool.pytest.ini_options].
FAST_MARKERS := not slow and not evidently and not mlflow and not optuna

test-fast: install ## Run the quick tests: none marked slow, evidently, mlflow or optuna
	$(BIN)/pytest -q -m "$(FAST_MARKERS)"

lint: install ## Lint: ruff, the import layers of pyproject.toml's [tool.importlinter] (lint-imports), the type checker (mypy; tests/typing_rules.py)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy
	$(BIN)/python tests/typing_rules.py

check: lint test ## Lint, then run the tests (= make test)

bench: install ## Run the benchmarks, write reports under $(SALESML_HOME)/reports
	$(BIN)/salesml bench features
	$(BIN)/salesml bench training
	$(BIN)/salesml bench exports
	$(BIN)/salesml bench serving
	$(BIN)/salesml bench load
	$(BIN)/salesml bench scoring
	$(BIN)/salesml bench experiments
	$(BIN)/salesml bench drift
	$(BIN)/salesml bench tuning

clean: ## Remove the working folder (data, stores, runs, reports)
	-$(BIN)/salesml serve-stop 2>/dev/null
	rm -rf $(SALESML_HOME)
