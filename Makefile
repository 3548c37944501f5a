# Set-up on a fresh Debian machine: `make demo` (the main job) and `make test` (every test).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench corpus corpus-real clean lab-setup fuzz-package

# setup.py compiles the model (replay/model, the replayer) with mypyc when a C compiler is present: a changed source is rebuilt
$(STAMP): pyproject.toml setup.py $(wildcard replay/model/*.py) replay/replayer.py replay/observe.py
	@if [ "$$(id -u)" = 0 ] && ! $(PY) -m venv --help >/dev/null 2>&1; then \
		apt-get update -q && apt-get install -y -q python3-venv python3-pip; fi
	@# the compiled build needs a C compiler and Python's headers (without them: pure Python, as `mhp --version` says)
	@if [ "$$(id -u)" = 0 ] && { ! command -v cc >/dev/null 2>&1 || \
		[ ! -e "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])")/Python.h" ]; }; then \
		apt-get update -q && apt-get install -y -q gcc python3-dev; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mhp simulate corpus/scenarios/seed-dimm.toml
	$(BIN)/mhp simulate corpus/scenarios/seed-vmem.toml --step 2
	@# the main job: replay real-kernel traces; exit 1 (findings: real kernel behaviours, see
	@# corpus/real/README.md) is expected here, 2 (bad input) is not
	@echo "== replaying the 102 real-kernel traces (Debian 6.1, 6.12 and 7.2 under QEMU, recorded by mhp record in the guest): 0 divergences expected;"
	@echo "== FAILED lines carry findings, real kernel behaviours these scenarios provoke (corpus/real/README.md)"
	@$(BIN)/mhp replay corpus/real/*/*.mhpt; test $$? -le 1

# The real-kernel lab (QEMU + Debian kernel packages): installed and cached when run as root.
lab-setup: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/python -m traces.lab --setup; \
		command -v systemd-analyze >/dev/null || apt-get install -y -q systemd; \
	else echo "not root: skipping the lab set-up (lab tests skip outside CI)"; fi

lint: $(STAMP)
	$(BIN)/ruff check traces replay fuzz tests
	$(BIN)/mypy

# The model's and replayer's tests against both builds: everything against the installed one (compiled when a C
# compiler is there), the model's own tests again against the pure source (tests/test_builds.py compares their outputs).
PURE_TESTS := tests/test_oracles.py tests/test_replay.py tests/test_hotplug_ops.py tests/test_variants.py tests/test_quirks.py tests/test_model_caches.py

test: lint lab-setup
	$(BIN)/mhp --version
	$(BIN)/python -m pytest
	MHP_PURE=1 $(BIN)/python -m pytest $(PURE_TESTS)

bench: $(STAMP)
	$(BIN)/mhp bench model
	$(BIN)/mhp bench format
	$(BIN)/mhp bench replay
	$(BIN)/mhp bench fuzz
	$(BIN)/mhp bench fleet

SEEDS := seed-dimm seed-vmem contig-zones offline-fails dimm-manual-mix vmem-bbm memoryless-node stale-online-type
# Seed traces from the simulator, and (as root) the real traces from the lab.
corpus: $(STAMP)
	for s in $(SEEDS); do $(BIN)/mhp simulate corpus/scenarios/$$s.toml -o corpus/seeds/$$s.mhpt >/dev/null || exit 1; done
	$(BIN)/python -m fuzz.boot_states corpus/seeds >/dev/null
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) corpus-real; else echo "not root: corpus/real not regenerated (make corpus-real as root)"; fi

# Real traces from Debian's kernels under QEMU, written by mhp record inside the guest, and the host's own
# samples of every step (root, about 25 minutes).
corpus-real: $(STAMP) lab-setup
	$(BIN)/python -m traces.lab corpus/scenarios/*.toml --kernel 6.1 6.12 --out-dir corpus/real --trace --obs-dir corpus/observed/lab

fuzz-package: $(STAMP)
	$(BIN)/python fuzz/package.py build/fuzz

clean:
	rm -rf $(VENV) build *.egg-info
