# keyplane: `make run` sets up and serves; `make test` sets up and runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test lint typecheck pytest compiled test-compiled bench bench-compiled clean

# The same package with its request hot path compiled by mypyc (src/keyplane/build.py): a
# second, non-editable environment, rebuilt when a source file changes.
CVENV  := .venv-compiled
CBIN   := $(CVENV)/bin
CSTAMP := $(CVENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keyplane needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(CSTAMP): pyproject.toml setup.py $(shell find src -type f -not -path '*/__pycache__/*')
	test -x $(CBIN)/python || $(PYTHON) -m venv $(CVENV)
	$(CBIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(CBIN)/python -m pip install --quiet '.[test]'
	KEYPLANE_COMPILE=1 $(CBIN)/python -m pip install --quiet --no-build-isolation --no-deps \
		--force-reinstall .
	$(CBIN)/python -c 'import keyplane.build as b; \
		assert b.hot_path_build() == "compiled", b.compiled_modules()'
	touch $(CSTAMP)

compiled: $(CSTAMP)

test-compiled: $(CSTAMP)
	KEYPLANE_EXPECT_BUILD=compiled $(CBIN)/pytest

run: $(STAMP)
	$(BIN)/keyplane serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	KEYPLANE_EXPECT_BUILD=python $(BIN)/pytest

test: lint typecheck pytest

# needs PostgreSQL (KEYPLANE_BENCH_POSTGRES_URL, default the local `test` db) and redis-server;
# $(1): the environment's bin folder (pure-Python or compiled build)
define run_benches
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	command -v valgrind >/dev/null || (apt-get update -q && apt-get install -y -q valgrind)
	$(1)/python bench/auth_overhead.py --limiter memory
	$(1)/python bench/auth_overhead.py --limiter redis
	$(1)/python bench/inprocess.py
	$(1)/python bench/instructions.py
	$(1)/python bench/scaling.py
	$(1)/python bench/revocation.py
	$(1)/python bench/usage_ingest.py
	$(1)/python bench/usage_overhead.py
	$(1)/python bench/suspension.py
endef

bench: $(STAMP)
	$(call run_benches,$(BIN))

# the benchmarks again, on the compiled build
bench-compiled: $(CSTAMP)
	$(call run_benches,$(CBIN))

clean:
	rm -rf $(VENV) $(CVENV) build .pytest_cache .mypy_cache .ruff_cache
