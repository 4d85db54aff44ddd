# o2o: every target creates .venv and installs what is missing, then runs.
# Python 3.11 only (pyproject.toml, requires-python): mujoco 2.3.3 (the v4 MuJoCo models gymnasium
# 0.28.1 needs) and pybullet 3.2.7 have no wheels for Python 3.12.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
IS_311 := import sys; sys.exit(sys.version_info[:2] != (3, 11))

.PHONY: demo test install bench-install bench clean help check-python

help:
	@echo "make demo    - install (if needed) and run the demo on the embedded default"
	@echo "make test    - install (if needed) and run the test suite"
	@echo "make bench   - install the peers (torch, d3rlpy) and run the speed benchmarks"

# before anything is created: a clear line, not an error deep inside pip
check-python:
	@"$(PYTHON)" -c '$(IS_311)' 2>/dev/null || { \
	  echo "make: o2o needs Python 3.11, and PYTHON=$(PYTHON) is $$(command -v "$(PYTHON)" >/dev/null && "$(PYTHON)" --version 2>&1 || echo 'not found'): the pinned mujoco 2.3.3 and pybullet 3.2.7 have no wheels for other versions; give one with make install PYTHON=/path/to/python3.11" >&2; \
	  exit 2; }

# a .venv of another Python, or one whose install failed, is never kept: the next make starts clean
$(STAMP): pyproject.toml | check-python
	@if [ -e $(VENV) ] && ! $(BIN)/python -c '$(IS_311)' 2>/dev/null; then \
	  echo "make: $(VENV) is not a Python 3.11 environment; making it again" >&2; rm -rf $(VENV); fi
	@test -x $(BIN)/python || "$(PYTHON)" -m venv $(VENV) || { rm -rf $(VENV); echo "make: '$(PYTHON) -m venv $(VENV)' failed (see above); nothing kept" >&2; exit 1; }
	@$(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e ".[test,ray,video]" || { \
	  rm -rf $(VENV); echo "make: installing o2o into $(VENV) failed (pip says why above); $(VENV) removed, so the next make starts clean" >&2; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/o2o demo

# the suite on TEST_WORKERS processes (pytest-xdist; 0 runs it in this process)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal tests

bench-install: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,ray,video,bench]"

bench: bench-install
	$(BIN)/python benchmarks/bench_sac_update.py
	$(BIN)/python benchmarks/bench_collection.py
	$(BIN)/python benchmarks/bench_offline_update.py

clean:
	rm -rf $(VENV) build src/*.egg-info
