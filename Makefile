# The README's two commands: `make demo` and `make test`. Both bootstrap everything they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ALERTPIPE_CACHE ?= $(HOME)/.cache/alertpipe
# The folder operator/ would shadow the stdlib module `operator` for any `python -m ...` started in
# this checkout (Python puts the current folder first on sys.path): never put it there.
export PYTHONSAFEPATH := 1

.PHONY: demo test bootstrap provision check unit tooling integration e2e chaos bench crds clean

$(BIN)/alertpipe: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The evaluator's native hot path (Rust, PyO3), built by maturin (a dev extra) with cargo; crates are
# cached under ~/.cargo, the build under native/evalcore/target. Rebuilt only when its sources change.
# Without it the evaluator runs its pure Python path (ALERTPIPE_NATIVE=0 chooses that on purpose).
NATIVE := native/evalcore
$(VENV)/.evalcore: $(BIN)/alertpipe $(NATIVE)/Cargo.toml $(NATIVE)/pyproject.toml \
                   $(wildcard $(NATIVE)/src/*.rs $(NATIVE)/python/alertpipe_evalcore/*)
	@if PATH="$(HOME)/.cargo/bin:$$PATH" command -v cargo >/dev/null; then \
	  PATH="$(CURDIR)/$(BIN):$(HOME)/.cargo/bin:$$PATH" \
	    $(BIN)/python -m pip install -q --no-build-isolation --no-deps ./$(NATIVE) && touch $@; \
	else echo "warning: no cargo on PATH: the evaluator's native hot path is not built (pure Python path)"; fi

bootstrap: $(BIN)/alertpipe $(VENV)/.evalcore

## provision: build/fetch Kafka, Redis, etcd, Kubernetes, kwok, helm into $(ALERTPIPE_CACHE) (idempotent)
provision: bootstrap
	$(BIN)/alertpipe devstack provision

## test: everything CI runs — static checks, then unit, integration (tooling included), e2e and chaos tests
test: provision
	bash tools/check.sh
	$(BIN)/python -m pytest -m "unit or integration or e2e" -p no:cacheprovider

## demo: bring the whole local stack up and run the demo
demo: provision
	$(BIN)/alertpipe devstack demo

check: bootstrap
	bash tools/check.sh

unit: bootstrap
	$(BIN)/python -m pytest -m unit -q

tooling: provision
	$(BIN)/python -m pytest -m tooling -q

integration: provision
	$(BIN)/python -m pytest -m "integration and not chaos"

e2e: provision
	$(BIN)/python -m pytest -m e2e

## chaos: the fault suite with short outages (ALERTPIPE_CHAOS_FULL=1: the issue's full outage lengths)
chaos: provision
	$(BIN)/python -m pytest -m chaos -s

## bench: every benchmark (JSON on stdout + results.json and a PNG in each bench/<area>/); not part of test
# (the checkout must be importable for bench.*; the installed .pth has imported the stdlib operator first)
bench: provision
	for b in devstack.startup ingestor.bench_ingest evaluator.bench_evaluator evaluator.bench_engine_ab \
	         evaluator.bench_reference deliverer.bench_deliverer \
	         operator.bench_operator operator.bench_killswitch scaling.bench_scaling \
	         canary.bench_canary e2e.bench_e2e; do PYTHONSAFEPATH= $(BIN)/python -m bench.$$b || exit 1; done

crds: bootstrap
	$(BIN)/alertpipe crds --out crds/

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
