# The two commands: `make demo` (main job end to end, tiny preset) and `make test`.
# Both run `make setup` first when the environment is missing or stale.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
DEMO_DIR ?= runs/demo

.PHONY: setup test test-fast demo lint bench clean-demo

$(STAMP): pyproject.toml requirements/lock.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	. scripts/env.sh && $(PY) -m pytest -q tests

test-fast: $(STAMP)
	. scripts/env.sh && $(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	. scripts/env.sh && $(PY) -m infra.demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP) demo  # the inference and claims benchmarks measure the trained demo model
	. scripts/env.sh && for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-demo:
	rm -rf $(DEMO_DIR)
