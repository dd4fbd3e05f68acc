# The two commands of the quick start are `make demo` and `make test`; each installs
# what it needs (uv, the locked dependencies, Debian's prometheus and chromium) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV = $(shell PYTHON=$(PYTHON) bash tools/ensure-uv.sh)
STAMP := $(VENV)/.synced

.PHONY: help venv test lint format typecheck contracts pytest demo bench-detection bench-scale crd lock prometheus chromium clean

help:
	@echo "make demo   - run the demo on embedded defaults"
	@echo "make test   - lint, type-check, import contracts and the whole test suite"
	@echo "make crd    - regenerate the ModelRollout CRD from the policy models"
	@echo "make lock   - re-pin requirements/*.lock from pyproject.toml (hashes only)"
	@echo "make bench-detection - detection benchmark: ours vs tuned Flagger/Argo/Kayenta-style peers (bench/results)"
	@echo "make bench-scale - scale benchmark: 2,000 rollouts on one replica, 5,000 on 3, real Postgres (bench/results)"

# The environment is rebuilt only when a lock file or pyproject.toml changes.
$(STAMP): requirements/dev.lock pyproject.toml
	@uv="$(UV)"; \
	test -x $(BIN)/python || $$uv venv --quiet --python $(PYTHON) $(VENV); \
	$$uv pip sync --quiet --require-hashes --compile-bytecode --python $(BIN)/python requirements/dev.lock; \
	$$uv pip install --quiet --no-deps --no-build-isolation --python $(BIN)/python -e .
	@touch $@

venv: $(STAMP)

prometheus:
	@bash tools/ensure-prometheus.sh

chromium:
	@bash tools/ensure-chromium.sh

lint: venv
	$(BIN)/ruff check controller tests bench
	$(BIN)/ruff format --check controller tests bench

format: venv
	$(BIN)/ruff check --fix controller tests bench
	$(BIN)/ruff format controller tests bench

typecheck: venv
	$(BIN)/mypy --strict controller

contracts: venv
	$(BIN)/lint-imports

# Many tests wait on real processes (the controller, Prometheus, Postgres, Chromium), so
# more workers than cores pay off; whole modules go to a worker, the longest first, and
# the `canaryctl run` modules share one worker (tests/conftest.py). `make pytest PYTEST_WORKERS=0` runs in this one process.
PYTEST_WORKERS ?= 3
pytest: venv prometheus chromium
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: lint typecheck contracts pytest

demo: venv
	$(BIN)/canaryctl demo

# Hours on 2 shared cores since ours rolls out 1,000 A/A streams per rate to 180 minutes
# (docs/benchmarks.md), at a lower priority than other work; `--rates`, `--aa-rollouts`,
# `--ours-aa-rollouts` and `--rollouts` make a targeted run, `--quick` a few-minute one.
bench-detection: venv
	nice -n 10 $(BIN)/python -m bench.detection

# Needs Postgres on 127.0.0.1:5432 (or CANARY_BENCH_DATABASE_URL); about 10 minutes on 2 cores
# (docs/benchmarks.md).
# `python -m bench.scale --quick` is the one-and-a-half-minute version.
bench-scale: venv
	$(BIN)/python -m bench.scale

crd: venv
	$(BIN)/python -m controller.policy.crd > charts/canary-controller/crds/modelrollouts.canary.ai.yaml

lock:
	@uv="$(UV)"; \
	$$uv pip compile --quiet --python-version 3.11 --generate-hashes --no-header pyproject.toml -o requirements/main.lock; \
	$$uv pip compile --quiet --python-version 3.11 --generate-hashes --no-header --extra dev pyproject.toml -o requirements/dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
