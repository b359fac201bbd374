# Two set-up commands, both idempotent: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: repro test install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Stage commands call `ait`, so the venv's bin dir goes first on PATH (as `source .venv/bin/activate`).
repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 dvc repro
	$(BIN)/ait summary

test: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
