# Two commands: `make demo` sets up and runs the tiny pretrain job on the embedded default
# (SQLite + local CPU pool); `make test` sets up and runs the whole test suite.
VENV ?= .venv
export VENV
PYTEST_ARGS ?=

.PHONY: setup setup-ray demo test test-fast test-security test-ray soak lint bench bench-ray clean

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

# The Ray backend on a real multi-node Ray cluster started on this machine (tests/ray).
setup-ray: setup
	$(VENV)/bin/python -m pip install -q -e '.[dev,ray]'

test-ray: setup-ray
	$(VENV)/bin/pytest -m ray tests/ray $(PYTEST_ARGS)

soak: setup
	$(VENV)/bin/pytest -m soak $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -m "not slow and not postgres" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup
	$(VENV)/bin/python bench/cycle_speed.py

bench-ray: setup-ray
	$(VENV)/bin/python bench/ray_launch.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
