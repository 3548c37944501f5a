# Set-up on a fresh Debian machine: `make demo` (the main job) and `make test` (every test).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = 0 ] && ! $(PY) -m venv --help >/dev/null 2>&1; then \
		apt-get update -q && apt-get install -y -q python3-venv python3-pip; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mhp simulate corpus/scenarios/seed-dimm.toml
	$(BIN)/mhp simulate corpus/scenarios/seed-vmem.toml --step 2

test: $(STAMP)
	$(BIN)/ruff check traces replay fuzz tests
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python tests/bench/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info
