# Plumb's developer entry points. Every target creates or reuses the virtualenv in .venv, installs the
# locked dependencies (exact versions, hashes checked) and then Plumb itself *as users get it*: a wheel
# built from this tree and installed non-editable. Nothing installs from unpinned ranges.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
DEVLOCK:= requirements-dev.lock
DIST   := dist
LOCKED := $(VENV)/.locked
STAMP  := $(VENV)/.installed
CODE   := reconciler agent contract demo
SOURCES:= pyproject.toml README.md $(shell find $(CODE) schemas examples/shop -type f -not -path '*/__pycache__/*' 2>/dev/null)
PIPFLAGS := --quiet --disable-pip-version-check

.PHONY: demo test unit lint typecheck layers smoke bench hosts-base hosts-bench wheelhouse lock dist clean

$(LOCKED): $(DEVLOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIPFLAGS) --require-hashes --no-deps -r $(DEVLOCK)
	touch $@

# The wheel and sdist, built from the tree with the locked build backend (no build isolation).
$(DIST)/.built: $(LOCKED) $(SOURCES)
	rm -rf $(DIST)
	$(BIN)/python -m build --no-isolation --wheel --sdist --outdir $(DIST) . >/dev/null
	touch $@

$(STAMP): $(DIST)/.built
	$(BIN)/python -m pip install $(PIPFLAGS) --no-deps --force-reinstall $(DIST)/*.whl
	touch $@

dist: $(DIST)/.built

demo: $(STAMP)
	@$(BIN)/plumb demo $(DEMO_ARGS); status=$$?; \
	  echo "plumb and plumb-agent are installed in $(VENV)/bin: run '. $(VENV)/bin/activate' to use them."; \
	  exit $$status

lint: $(LOCKED)
	$(BIN)/ruff check $(CODE) tests bench
	$(BIN)/ruff format --check $(CODE) tests bench

typecheck: $(LOCKED)
	$(BIN)/mypy $(CODE)

layers: $(LOCKED)
	$(BIN)/lint-imports

# The built wheel in a fresh virtualenv, with only the runtime lock: every command's --help, both examples.
smoke: $(DIST)/.built
	PYTHON=$(PYTHON) tests/packaging/smoke $(DIST) $(LOCK)

test: lint typecheck layers $(STAMP)
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The Debian base that tests/hosts boots containers from: debootstrap once (needs root and a Debian mirror),
# cached under $$PLUMB_TEST_HOSTS_CACHE (default /var/cache/plumb-test-hosts) by a hash of its recipe.
# Standard library only, so it runs before the virtualenv exists; pytest never builds it, it skips.
hosts-base:
	$(PYTHON) -m tests.hosts.base

# Every runtime dependency as a wheel, from the lock (hashes checked), for hosts that reach no package
# index: the agent is installed into tests/hosts' containers from here and the built wheel. Network once.
wheelhouse/.done: $(LOCK) $(LOCKED)
	$(BIN)/python -m pip download $(PIPFLAGS) --require-hashes --no-deps --only-binary :all: -r $(LOCK) -d wheelhouse
	touch $@

wheelhouse: wheelhouse/.done

# Boot a few test hosts and print what they cost: boot to `running`, memory, restart, teardown.
hosts-bench: hosts-base
	$(PYTHON) -m tests.hosts.bench $(BENCH_ARGS)

# Refresh both locks from pyproject.toml's ranges (the dev lock is held to the runtime lock's versions).
lock: $(LOCKED)
	$(BIN)/pip-compile --quiet --upgrade --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	$(BIN)/pip-compile --quiet --upgrade --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --extra dev -c $(LOCK) -o $(DEVLOCK) pyproject.toml

clean:
	rm -rf $(VENV) $(DIST) wheelhouse .pytest_cache .mypy_cache .ruff_cache build *.egg-info
