# Pinstream: `make run` starts the server, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages the test suite drives for real.
TEST_DEBS := ffmpeg redis-server postgresql chromium coturn iproute2 util-linux procps

# Browser libraries the pages load (socket.io-client; hls.js for the player's HLS fallback), pinned in
# web/package-lock.json and copied out of web/node_modules.
VENDOR := web/static/vendor
WEB_LIBS := $(VENDOR)/socket.io.esm.min.js $(VENDOR)/hls.min.js

.PHONY: run test lint typecheck pytest system-deps node clean

run: $(VENV)/.installed $(WEB_LIBS)
	$(PY) run_server.py $(ARGS)

test: system-deps $(VENV)/.installed-test $(WEB_LIBS) lint typecheck pytest

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

# npm from Node.js; Debian's packages only where the machine has none (a Node.js from elsewhere stays).
node:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends nodejs npm; }

web/node_modules/.package-lock.json: web/package.json web/package-lock.json | node
	npm ci --prefix web --no-audit --no-fund --ignore-scripts --loglevel=error

$(VENDOR)/socket.io.esm.min.js: web/node_modules/.package-lock.json
	mkdir -p $(VENDOR)
	cp web/node_modules/socket.io-client/dist/socket.io.esm.min.js $@

$(VENDOR)/hls.min.js: web/node_modules/.package-lock.json
	mkdir -p $(VENDOR)
	cp web/node_modules/hls.js/dist/hls.min.js $@

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

# The suite runs inside a network namespace of its own: loopback plus a veth pair on 10.99.0.0/24,
# so WebRTC, browsers and servers under test reach nothing beyond this run.
pytest: $(VENV)/.installed-test
	tests/netns.sh $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info web/node_modules $(VENDOR)
