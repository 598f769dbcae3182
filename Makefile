# Pinstream: `make run` starts the server, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages the test suite drives for real.
TEST_DEBS := ffmpeg redis-server postgresql chromium coturn iproute2 util-linux procps

# hls.js for the player's HLS fallback, pinned; fetched from the npm registry once (nothing when present).
HLS_JS_VERSION := 1.7.4
HLS_JS := web/static/vendor/hls.min.js
HLS_JS_STAMP := web/static/vendor/.hls.js-$(HLS_JS_VERSION)

.PHONY: run test lint typecheck pytest system-deps clean

run: $(VENV)/.installed $(HLS_JS_STAMP)
	$(PY) run_server.py $(ARGS)

test: system-deps $(VENV)/.installed-test $(HLS_JS_STAMP) lint typecheck pytest

$(HLS_JS_STAMP):
	npm install --prefix build/npm --no-save --no-package-lock --no-audit --no-fund hls.js@$(HLS_JS_VERSION)
	mkdir -p $(dir $(HLS_JS))
	cp build/npm/node_modules/hls.js/dist/hls.min.js $(HLS_JS)
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg
	$(PIP) install --quiet -e '.[test]'
	touch $@

# Installs only what is missing, so a machine that has everything needs no network.
system-deps:
	@missing=""; for pkg in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

# The suite runs inside a network namespace of its own: loopback plus a veth pair on 10.99.0.0/24,
# so WebRTC, browsers and servers under test reach nothing beyond this run.
pytest: $(VENV)/.installed-test
	tests/netns.sh $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
