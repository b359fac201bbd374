# Two set-up commands, both idempotent: `make repro` and `make test`. Both install the exact versions
# in requirements.lock (pip constraints), so two clones made on different days get the same packages.
# pip bootstraps the venv; uv (pinned in the lock too) installs the project: same resolution from the
# same constraints, with parallel downloads and bytecode compilation (a fresh install: ~30 s, not ~90 s).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: repro test install lock clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c $(LOCK) pip setuptools wheel

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -c $(LOCK) uv

# Re-install when the dependency list or the lock changes. Compiled bytecode, as pip writes it: without
# it the first import of torch in every test worker and stage would compile it again. --native-tls: the
# system's certificate store, as pip uses (a proxy's own CA works for both).
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/uv
	$(BIN)/uv pip install --python $(BIN)/python --native-tls --compile-bytecode -c $(LOCK) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Stage commands call `ait`, so the venv's bin dir goes first on PATH (as `source .venv/bin/activate`).
repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 dvc repro
	$(BIN)/ait summary

# Two worker processes, one torch thread each (tests/conftest.py), whole files per worker, longest first.
TEST_WORKERS ?= 2
test: $(STAMP)
	DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Refresh the lock: resolve pyproject.toml afresh (newest allowed versions) in a scratch venv, freeze it.
# Commit the new requirements.lock together with the dvc.lock its `make repro` produces.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --upgrade pip setuptools wheel uv
	.lock-venv/bin/python -m pip install -e ".[test]"
	{ sed -n '1,2p' $(LOCK); .lock-venv/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
