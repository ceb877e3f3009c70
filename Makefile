# rtneuro: two commands do everything on a fresh machine with Python >= 3.11.
#   make demo   create/reuse .venv, install rtneuro, replay the demo recording through the closed loop
#   make test   create/reuse .venv, install rtneuro with its test tools (and Debian's chromium when missing), run lint and the test suite
# Also: make bench (installs the bench extra with the ezmsg peer and runs the latency benchmark).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

.PHONY: demo test bench lint clean chromium

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rtneuro needs Python >= 3.11 (found %s); set PYTHON=/path/to/python3.11" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rtneuro run configs/demo.yaml --report demo-report.json

# the browser tests drive the system's headless Chromium (Debian's chromium package) through Playwright
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=""; if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: $(STAMP) chromium
	$(BIN)/ruff check rtneuro services hardware benchmarks tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check rtneuro services hardware benchmarks tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/rtneuro bench latency --json bench-latency.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache demo-report.json bench-latency.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
