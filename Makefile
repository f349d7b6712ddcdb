# The two commands a newcomer needs: `make dev` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The venv runs on the Lambda runtime's Python (3.13, found below) when this machine has it, so
# the suite runs once, on what Lambda runs; without it, on python3. ruff and mypy hold the code
# to 3.11 (requires-python, for the CLI and the client) either way.
PYTHON ?= $(if $(PY313_BIN),$(PY313_BIN)/python3.13,python3)
VENV := .venv
# Whether .venv runs (or, not made yet, will run) on 3.13: then the suite runs on the Lambda
# runtime's Python and needs no second run (see test-py313).
VENV_IS_313 = $(shell py=.venv/bin/python; test -x "$$py" || py="$(PYTHON)"; "$$py" -c \
	'import sys; print(1 if sys.version_info[:2] == (3, 13) else "")' 2>/dev/null)
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
CHECKOV_VENV := .venv-checkov
# axe-core (accessibility rules) for the browser tests, pinned in tests/browser/package-lock.json.
AXE := tests/browser/node_modules/axe-core/axe.min.js
ENV ?= sandbox

export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# uv installs the venvs' packages: requirements-dev.txt into a new venv took 2.5 s with an empty
# uv cache against 26 s for pip with a warm one (2-core machine). uv is pip-installed into .venv
# first, pinned, so a machine needs nothing beyond python3 and make; `uv pip install` reads the
# same requirements files.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
export UV_NO_PROGRESS := 1

# sam build needs a python3.13 interpreter on PATH for the python3.13 runtime: use the one on
# PATH when it runs, else the newest pyenv 3.13.x.
PY313_BIN := $(shell if python3.13 -c 'import sys' >/dev/null 2>&1; then \
	dirname "$$(command -v python3.13)"; \
	elif command -v pyenv >/dev/null 2>&1; then \
	ls -d "$$(pyenv root)"/versions/3.13.*/bin 2>/dev/null | sort -V | tail -n 1; fi)
# Only pip's own noise from this machine's pip.conf is filtered; errors still show and fail.
PIP_FILTER := grep -v -e "is ignored: it is neither a file nor a directory" || true
# uv prints one " + package==version" line per package installed: the summary line stays.
UV_FILTER := grep -v -e '^ [+-] ' || true

.PHONY: help install dev test lint format typecheck unit-test test-py313 validate build deploy \
	bench clean check-py313 security

help:
	@echo "make dev        start the local stack (moto + Intuit simulator + gateway), print a connect link"
	@echo "make test       lint, type-check, the whole test suite, cfn-lint, sam validate --lint,"
	@echo "                checkov, bandit, sam build"
	@echo "make lint | format | validate | build | bench | clean"
	@echo "make deploy ENV=sandbox|production   build and sam deploy --config-env ENV"

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q uv==$(UV_VERSION) 2>&1 | { $(PIP_FILTER); }

$(VENV)/.installed: requirements-dev.txt layers/core/requirements.in pyproject.toml | $(UV)
	@echo "==> installing dev dependencies into $(VENV) (uv)"
	@$(UV) pip install --python $(BIN)/python -r requirements-dev.txt 2>&1 | { $(UV_FILTER); }
	@echo "==> installing the project (the qbo-connect CLI) into $(VENV)"
	@$(UV) pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

$(SAM_VENV)/.installed: requirements-sam.txt | $(UV)
	@echo "==> creating $(SAM_VENV) for the SAM CLI (it pins its own boto3)"
	@test -x $(SAM_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(SAM_VENV)
	@$(UV) pip install --python $(SAM_VENV)/bin/python -r requirements-sam.txt 2>&1 | { $(UV_FILTER); }
	@touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt | $(UV)
	@echo "==> creating $(CHECKOV_VENV) for checkov (it pins its own boto3)"
	@test -x $(CHECKOV_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(CHECKOV_VENV)
	@$(UV) pip install --python $(CHECKOV_VENV)/bin/python -r requirements-checkov.txt 2>&1 \
		| { $(UV_FILTER); }
	@touch $@

# npm ci installs exactly the locked version. Without npm the browser tests cannot check
# accessibility: a warning on a developer's machine, a failure in CI (CI=true).
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "==> installing axe-core for the browser tests (npm ci)"; \
		npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error; \
		touch $@; \
	elif [ "$${CI:-}" = "true" ]; then \
		echo "error: npm is needed to install axe-core for the browser tests"; exit 1; \
	else \
		echo "warning: npm not found; the browser tests will skip their accessibility checks"; \
	fi

install: $(VENV)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed $(AXE)

dev: $(VENV)/.installed
	$(BIN)/python -m devstack $(ARGS)

lint: $(VENV)/.installed
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@echo "==> mypy"
	$(BIN)/mypy layers/core/qbo_connect devstack clients/python clients/cli/qbo_connect_cli
	@for f in functions/*/app.py; do $(BIN)/mypy "$$f" >/dev/null || { $(BIN)/mypy "$$f"; exit 1; }; done

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suite runs on TEST_WORKERS parallel workers (pytest-xdist; one file stays on one worker, so
# a module's local stack is started once). The IAM test reads the AWS calls every other test
# recorded, and a worker cannot wait for the others: it runs next, in its own session over the
# same record directory. --durations prints the slowest tests. Three workers on a 2-core machine:
# the tests over HTTP and the reliability tests wait on local servers much of the time (measured
# tier by tier on 3 workers against 2: tests/http 227 s against 320 s, tests/reliability 134 s
# against 164 s, tests/unit 71 s against 52 s). Bytecode is written even where the shell sets
# PYTHONDONTWRITEBYTECODE: a few hundred processes (local stacks, workers, the CLI) import the
# same modules and would each compile them from source again. --no-loadscope-reorder keeps the
# files in collection order: xdist otherwise hands out the files with the most tests first, which
# leaves the slowest files (one long reliability test each) to the end of the run on one worker.
TEST_WORKERS ?= 3
unit-test: $(VENV)/.installed $(AXE)
	@calls="$$(mktemp -d -t qbo-aws-calls-XXXXXX)"; export QBO_AWS_CALL_LOG_DIR="$$calls"; \
	unset PYTHONDONTWRITEBYTECODE; \
	echo "==> tests on $(TEST_WORKERS) workers (AWS call records in $$calls)"; \
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder -m "not after_suites" --durations=25; \
	echo "==> IAM: the recorded calls against template.yaml"; \
	$(BIN)/python -m pytest tests/iam -q -p no:cacheprovider -m after_suites; \
	rm -rf "$$calls"

check-py313:
	@if [ -z "$(PY313_BIN)" ]; then \
		echo "error: python3.13 is needed for the Lambda runtime (sam build, tests on 3.13)."; \
		echo "       Install it (e.g. 'pyenv install 3.13') or put python3.13 on PATH."; \
		exit 1; fi

# A venv made before it ran on 3.13 (or by PYTHON=python3): the fast tests again on 3.13, the
# Lambda runtime's Python. `make test` needs no such second run when .venv is 3.13 already.
test-py313: check-py313 | $(UV)
	@echo "==> unit tests on $$($(PY313_BIN)/python3.13 --version)"
	@test -x .venv313/bin/python || $(PY313_BIN)/python3.13 -m venv .venv313
	@test -f .venv313/.installed -a .venv313/.installed -nt requirements-dev.txt || { \
		$(UV) pip install -q --python .venv313/bin/python -r requirements-dev.txt; \
		touch .venv313/.installed; }
	.venv313/bin/python -m pytest tests/unit tests/component -q -p no:cacheprovider

validate: install
	@echo "==> cfn-lint"
	$(BIN)/cfn-lint template.yaml
	@echo "==> sam validate --lint"
	$(SAM) validate --lint

# Security scanners: bandit over the runtime code (medium or high severity fails), checkov over
# template.yaml (every skip is written next to its resource with the reason).
security: install
	@echo "==> bandit (runtime code)"
	$(BIN)/bandit -q -r layers/core/qbo_connect functions --severity-level medium
	@echo "==> checkov (template.yaml)"
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --file template.yaml \
		--framework cloudformation --compact --quiet --skip-download

build: install check-py313
	@echo "==> sam build (python3.13, arm64) using $(PY313_BIN)"
	PATH="$(PY313_BIN):$$PATH" $(SAM) build

test: install lint unit-test $(if $(VENV_IS_313),,test-py313) validate security build
	@echo "==> all checks passed"

deploy: build
	$(SAM) deploy --config-env $(ENV)

bench: $(VENV)/.installed
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/get_token.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/cost_model.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/change_feed.py

clean:
	rm -rf .aws-sam .devstack .pytest_cache .mypy_cache .ruff_cache test-artifacts bench/results \
		tests/browser/node_modules
