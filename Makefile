# onnxplain: `make serve` runs the service on the embedded demo model; `make test` passes the tests.
# Both create (or reuse) the virtual environment in .venv. Serving needs only the two distributions (install-serve);
# the tests, lint, stubs and benchmarks also need pyproject.toml's test group (install), added to the same venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per layer, so either order works: `make test` after `make serve` adds the test group, and `make serve`
# after `make test` finds the distributions already installed.
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test
PORT ?= 50051
# The audit report is tested in Debian's Chromium (headless, driven by Playwright's Python package).
CHROMIUM ?= /usr/bin/chromium
# The Node.js client test (tests/node) needs node and npm; its npm packages are pinned by tests/node/package-lock.json.
NPM ?= /usr/bin/npm
NODE_MODULES := tests/node/node_modules
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install-serve install serve test lint proto bench clean

install-serve: $(SERVE_STAMP)

install: $(TEST_STAMP)

$(SERVE_STAMP): client/pyproject.toml server/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e client -e server
	touch $@

# The distributions are named again so that pip resolves the test group together with their requirements.
$(TEST_STAMP): $(SERVE_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e client -e server --group test
	touch $@

serve: $(SERVE_STAMP)
	$(BIN)/onnxplain serve --port $(PORT)

test: $(TEST_STAMP) $(CHROMIUM) $(NODE_MODULES)
	$(BIN)/python -m pytest

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# Reinstalled only when missing or older than the lock file; install scripts are not needed and not run.
$(NODE_MODULES): tests/node/package-lock.json | $(NPM)
	$(NPM) ci --prefix tests/node --ignore-scripts --no-audit --no-fund
	touch $(NODE_MODULES)

$(NPM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

proto: $(TEST_STAMP)
	$(BIN)/python proto/generate.py

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
