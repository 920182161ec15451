# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: repro test lint clean-venv

# (Re)install when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Stage commands in dvc.yaml call `python`: the venv must come first on PATH.
repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# One worker per core, each test file on one worker (the end-to-end tests of a file share
# one tiny repository; see tests/conftest.py). `--dist loadgroup` would be finer but
# pytest-xdist 3.8 cannot regroup pytest 9's node ids.
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check recpipe stages tests bench
	$(BIN)/ruff format --check recpipe stages tests bench

clean-venv:
	rm -rf $(VENV)
