"""Shared pytest fixtures, and the suite's split over two processes (`make test`: pytest-xdist, one
file per worker at a time, the longest files first, one torch thread per worker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One core per worker: two processes each spinning two torch threads on two cores slow each other
    # many times over. Set before torch is imported; the stage commands the tests start inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# torch's CPU allocator asks for transparent huge pages on large blocks (c10's THP_MEM_ALLOC_ENABLE, read at
# the first allocation). The paper-size activations are fresh mappings each step, faulted in 4 KiB page
# by page without it: measured on tests/test_paper_scale.py alone, 166 s -> 121 s and kernel time
# 98 s -> 43 s, lower peak memory, identical numbers. Stage commands started by the tests inherit it.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# The files that take longest run first, so the two workers finish together (`make test` passes
# --no-loadscope-reorder: xdist would otherwise queue files by their number of tests). xdist gives each
# worker one file, then the next file in this order to the first worker left with two or fewer tests to
# run; both long files end on two short tests, so that is the worker that is nearly done. One worker
# builds the shared `dvc repro` and checks it; the other runs the paper-size models and then takes the
# DVC experiments (on its own copy of the repro, built by then); the instance memorisation and the small
# files fill in behind both.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_paper_scale.py", "test_dvc_reruns.py",
                 "test_solver_overfit_insseg.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))

# Generated inputs (tests/test_generated_inputs.py): the suite draws the same few examples on every run;
# `--hypothesis-profile long` (hypothesis' own pytest option, applied after this) draws many, at random.
_SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=_SLOW_OK)
settings.register_profile("long", max_examples=600, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile("ci")

# The read-only real-data samples live next to the repository, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<repo>/../shared/data`, or skip the test when that sample folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples absent: {SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A directory with a tiny params.yaml, the rendered tiny demo and every prepared dataset.

    Built once per session by running the real stage commands; tests that write outputs copy what
    they need or write elsewhere.
    """
    from typer.testing import CliRunner

    from stages.cli import app
    from tests.tiny import tiny_params, write_params

    root = tmp_path_factory.mktemp("tiny_project")
    params = write_params(root / "params.yaml", tiny_params(root))
    runner = CliRunner()
    steps = [["data", "demo", "--out", str(root / "data/demo")]]
    steps += [["prepare", t, "--out", str(root / "data/prepared" / t)] for t in ("depth", "insseg", "semseg")]
    for args in steps:
        result = runner.invoke(app, [*args, "--params", str(params)])
        assert result.exit_code == 0, f"ait {' '.join(args)} failed:\n{result.output}"
    return root


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A private copy, per test module, of the tiny project after a real `dvc repro`.

    The repro itself runs once per `pytest` run: under xdist the workers share their base temporary
    folder's parent, and the first worker to get there builds it (tests/dvc_repo.py).
    """
    from tests.dvc_repo import copy_of

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return copy_of(shared, tmp_path_factory.mktemp("dvc_repo"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests that pin torch to one thread (for a bit-stable result) hand the default back: otherwise
    every later test of the session runs on one core."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
