"""The real `dvc repro` on a tiny params set, then incremental re-runs with `dvc exp run -S`.

Checks the user's main loop: the whole DAG runs; `dvc status` is clean afterwards; changing one
instance-tokenizer param re-runs no depth stage; setting it back restores every stage from DVC's
run-cache without running anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import ROOT, merge, tiny_params, tiny_solver, write_params

pytestmark = pytest.mark.slow

TINY_PIPELINE = {
    "cache": {"depth": {"crop_size": 48, "crop_stride": 16, "shard_max_samples": 8},
              "insseg": {"shard_max_samples": 8}},
    "solver": tiny_solver(steps=2, num_query=3),
}
INSSEG_KEY = "tokenizer.insseg.model.embedding_dim"


def _run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _restored(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dvc_repo")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    params = merge(tiny_params(root), TINY_PIPELINE)
    params["data"]["tasks"]["depth"]["root"] = "data/demo/nyuv2"  # the repo-relative demo output
    params["data"]["tasks"]["insseg"]["root"] = "data/demo"
    write_params(root / "params.yaml", params)
    bin_dir = str(Path(sys.executable).parent)  # where `ait` and `dvc` are installed
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GIT_CONFIG_NOSYSTEM": "1", "DVC_SITE_CACHE_DIR": str(root / ".dvc-site"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run(["git", "init", "-q"], root, env)
    _run([f"{bin_dir}/dvc", "init", "-q"], root, env)
    _run([*git, "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "tiny pipeline"], root, env)
    env["GIT"] = " ".join(git)
    return root, env


def test_repro_runs_everything_and_leaves_a_clean_status(repo):
    root, env = repo
    dvc = str(Path(sys.executable).parent / "dvc")
    out = _run([dvc, "repro"], root, env)
    ran = _ran(out)
    for stage in ("demo_data", "prepare@depth", "train_tokenizer@insseg", "cache_tokens@depth_mask50",
                  "train_solver@joint", "evaluate@depth", "evaluate@insseg"):
        assert stage in ran, f"{stage} did not run:\n{out}"
    assert json.loads(_run([dvc, "status", "--json"], root, env)) == {}
    metrics = json.loads((root / "results/evaluate/depth/metrics.json").read_text())
    assert "rmse" in metrics["depth"]["model"]


def test_insseg_tokenizer_change_reruns_no_depth_stage_and_reverts_from_run_cache(repo):
    root, env = repo
    dvc = str(Path(sys.executable).parent / "dvc")
    git = env["GIT"].split()
    _run([*git, "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "repro"], root, env)

    out = _run([dvc, "exp", "run", "-S", f"{INSSEG_KEY}=8"], root, env)
    ran = _ran(out)
    assert "train_tokenizer@insseg" in ran and "cache_tokens@insseg" in ran, out
    depth_stages = {s for s in ran if "depth" in s}
    assert not depth_stages, f"depth stages re-ran after an insseg-tokenizer change: {depth_stages}"
    assert json.loads(_run([dvc, "status", "--json"], root, env)) == {}

    out = _run([dvc, "exp", "run", "-S", f"{INSSEG_KEY}=16"], root, env)
    assert not _ran(out), f"stages ran instead of being restored:\n{out}"
    assert {"train_tokenizer@insseg", "cache_tokens@insseg", "train_solver@insseg"} <= _restored(out), out
    assert json.loads(_run([dvc, "status", "--json"], root, env)) == {}
