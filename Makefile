# latentforge — developer entry points. `make demo` and `make test` are all a new user needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export LATENTFORGE_DATA_DIR ?= $(DATA_DIR)

.PHONY: install demo test test-all bench clean

$(BIN)/latentforge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a CPU build; nothing below may pull another torch
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/latentforge

demo: install
	$(BIN)/latentforge train

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

bench: install
	$(BIN)/python benchmarks/bench_vae_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
