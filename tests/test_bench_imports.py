"""Every benchmark still imports against the library it measures (a moved or renamed function breaks the
import here, not on the day someone runs the benchmark on a GPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_benchmark_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    assert module.__file__ and Path(module.__file__).parent == BENCH
    sys.modules.pop(name, None)
