# `make train` and `make test` work on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast test-slow test-soak lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,wandb,mlflow,dashboard,ray]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train.py preset=quick_test

# Test files spread over one pytest worker per core (pytest-xdist); a file's tests stay together,
# so its module-scoped runs and servers are made once.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

# Unit and integration tests only (no CLI subprocess runs): a quick check while changing code.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/integration tests/conformance

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The fault-injection soak (slow-marked, ~15 s): CI runs it after the default suite.
test-soak: $(STAMP)
	$(PY) -m pytest -q -m slow tests/e2e/test_soak.py

# The same checks as .pre-commit-config.yaml; CI runs them.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd godot && ../$(VENV)/bin/gdlint addons  # godot/gdlintrc holds its settings

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
