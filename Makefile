# o2o: every target creates .venv and installs what is missing, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test install bench-install bench clean help

help:
	@echo "make demo    - install (if needed) and run the demo on the embedded default"
	@echo "make test    - install (if needed) and run the test suite"
	@echo "make bench   - install the peers (torch, d3rlpy) and run the speed benchmarks"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,ray]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/o2o demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench-install: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,ray,bench]"

bench: bench-install
	$(BIN)/python benchmarks/bench_sac_update.py
	$(BIN)/python benchmarks/bench_collection.py
	$(BIN)/python benchmarks/bench_offline_update.py

clean:
	rm -rf $(VENV) build src/*.egg-info
