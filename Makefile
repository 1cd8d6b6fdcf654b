# onnxplain: `make serve` runs the service on the embedded demo model; `make test` passes the tests.
# Both create (or reuse) the virtual environment in .venv and install the two distributions into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 50051
# The audit report is tested in Debian's Chromium (headless, driven by Playwright's Python package).
CHROMIUM ?= /usr/bin/chromium
# The Node.js client test (tests/node) needs node and npm; its npm packages are pinned by tests/node/package-lock.json.
NPM ?= /usr/bin/npm
NODE_MODULES := tests/node/node_modules
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install serve test lint proto bench clean

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml server/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e client -e server --group test
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/onnxplain serve --port $(PORT)

test: $(STAMP) $(CHROMIUM) $(NODE_MODULES)
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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

proto: $(STAMP)
	$(BIN)/python proto/generate.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
