# carebus developer commands. The two that matter (see README.md):
#   make run    set up, then run a whole region: broker, topics, listener, worker,
#               dashboard and a demo feed (carebus run); Ctrl-C stops everything
#   make test   set up (including the headless browser for the dashboard test),
#               then lint (ruff), type-check (mypy) and run every test
# A missing .venv is created from scratch; it is refreshed when pyproject.toml changes,
# and the compiled hot path is rebuilt when one of its sources does (README, "Compiled hot path").

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean browser

# The hot path's modules, compiled with mypyc by the install (carebus/compiled.py):
# an edit to one of them reinstalls, so that the extension matches its source.
COMPILED := $(shell $(PYTHON) -c 'import pathlib, runpy; \
  print(*runpy.run_path("carebus/compiled.py")["source_paths"](pathlib.Path(".")))')

$(STAMP): pyproject.toml setup.py carebus/compiled.py $(COMPILED)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/carebus run

# Debian's chromium, for the dashboard's end-to-end test (a no-op when present).
browser:
	bash .ci/install-browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: for this command that is a failure.
test: lint browser
	@status=0; $(BIN)/pytest || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Stops what a `carebus run` here left running and the local brokers of this checkout,
# then removes caches, broker data and the compiled modules (the next make rebuilds them).
clean:
	-test ! -x $(BIN)/carebus || $(BIN)/carebus run --stop
	-test ! -x $(BIN)/carebus || $(BIN)/carebus broker stop
	-for home in .carebus/test-broker-*; do \
	  test ! -d "$$home" || CAREBUS_BROKER_HOME="$$home" $(BIN)/carebus broker stop; \
	done
	rm -rf .carebus .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist \
	  benchmarks/results carebus.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name '*.so' -type f -exec rm -f {} +
	rm -f $(STAMP)
