# Two commands: `make demo` sets up and runs the tiny pretrain job on the embedded default
# (SQLite + local CPU pool); `make test` sets up and runs the whole test suite.
VENV ?= .venv
export VENV
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-security soak lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/bin/corral run examples/pretrain-tiny.yaml

test: setup lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Attacks on real `corral server` processes (docs/security.md); run as root, so that the ranks'
# unprivileged identity is real.
test-security: setup
	$(VENV)/bin/pytest -m security tests/security $(PYTEST_ARGS)

soak: setup
	$(VENV)/bin/pytest -m soak $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -m "not slow and not postgres" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup
	$(VENV)/bin/python bench/cycle_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
