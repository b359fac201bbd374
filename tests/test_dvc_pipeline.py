"""The real `dvc repro` on a tiny params set, then incremental re-runs with `dvc exp run -S`.

Checks the user's main loop: the whole DAG runs; `dvc status` is clean afterwards; an edit in one task's
folder stales only the stages that run that task; changing one
instance-tokenizer param re-runs no depth stage; setting it back restores every stage from DVC's
run-cache without running anything; changing one class-map-tokenizer param re-runs only semseg stages.
Last, the same `dvc repro` on 2 gloo processes (`AIT_NPROC=2`), and evaluation on 2 processes scoring
exactly as on one.
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

from stages.preset import leaves
from tests.tiny import ROOT, TINY_PIPELINE, merge, tiny_params, write_params

pytestmark = pytest.mark.slow

INSSEG_KEY = "tokenizer.insseg.model.embedding_dim"
SEMSEG_KEY = "tokenizer.semseg.model.embedding_dim"


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
    for name in ("dvc.yaml", "ablations.yaml", "models/pretrained/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    params = merge(tiny_params(root), TINY_PIPELINE)
    params["data"]["tasks"]["depth"]["root"] = "data/demo/nyuv2"  # the repo-relative demo output
    params["data"]["tasks"]["insseg"]["root"] = "data/demo"
    params["data"]["tasks"]["semseg"]["root"] = "data/demo/nyuv2"
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
                  "train_solver@joint", "evaluate@depth", "evaluate@insseg", "prepare@semseg",
                  "train_tokenizer@semseg", "eval_tokenizer@semseg", "cache_tokens@semseg", "train_solver@semseg",
                  "evaluate@semseg", "train_solver@joint3", "evaluate@joint3"):
        assert stage in ran, f"{stage} did not run:\n{out}"
    assert json.loads(_run([dvc, "status", "--json"], root, env)) == {}
    metrics = json.loads((root / "results/evaluate/depth/metrics.json").read_text())
    assert "rmse" in metrics["depth"]["model"]
    three = json.loads((root / "results/evaluate/joint3/metrics.json").read_text())
    assert set(three) == {"depth", "insseg", "semseg"} and "miou" in three["semseg"]["model"]



def _stale(root: Path, env: dict) -> set[str]:
    dvc = str(Path(sys.executable).parent / "dvc")
    return set(json.loads(_run([dvc, "status", "--json"], root, env)))


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_editing_one_tasks_code_stales_only_the_stages_that_run_it(repo, task):
    """A comment appended to a file of pipeline/tasks/<task>/ (the registry imports a task's folder by
    name) stales that task's stages and the runs that include it, and nothing else."""
    root, env = repo
    path = root / "pipeline/tasks" / task / "evaluate.py"
    original = path.read_text()
    path.write_text(original + "# an edit\n")
    try:
        stale = _stale(root, env)
    finally:
        path.write_text(original)
    semseg = {"prepare@semseg", "train_tokenizer@semseg", "eval_tokenizer@semseg", "cache_tokens@semseg",
              "train_solver@semseg", "evaluate@semseg"}
    if task == "semseg":
        assert stale == semseg | {"train_solver@joint3", "evaluate@joint3"}
    else:
        assert {"prepare@depth", "train_tokenizer@depth_mask50", "cache_tokens@depth_mask0", "train_solver@depth",
                "evaluate@joint"} <= stale
        assert not {s for s in stale if s.endswith(("@insseg", "@semseg"))}, stale
    assert _stale(root, env) == set()

def _toggled(value):
    return (not value) if isinstance(value, bool) else value + (1 if isinstance(value, int) else 0.25)


def test_each_inference_switch_changes_only_evaluation_stages(repo):
    """Every key of the `evaluate` section (soft tokens, tau, top-p, TTA, the tokenizer's eval tau, ...),
    toggled on its own, leaves training, caches and tokenizers up to date in `dvc status`."""
    import yaml

    root, env = repo
    dvc = str(Path(sys.executable).parent / "dvc")
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    keys = [key for key, _ in leaves(params["evaluate"], "evaluate.")]
    assert {"evaluate.depth.soft_input", "evaluate.insseg.top_p", "evaluate.tokenizer.depth.tau"} <= set(keys)
    for key in keys:
        changed = merge(params, _nested(key, _toggled(_get(params, key))))
        write_params(root / "params.yaml", changed)
        try:
            status = json.loads(_run([dvc, "status", "--json"], root, env))
        finally:
            (root / "params.yaml").write_text(text)
        assert status, f"{key}: no stage reads it"
        training = sorted(s for s in status if not s.startswith(("evaluate@", "eval_tokenizer@")))
        assert not training, f"{key} (inference only) invalidates {training}"


def _get(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


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

    # the two variants side by side: only the changed params and headline metrics, every column shown
    # within 120 (DVC folds what does not fit into a trailing "…" column)
    show = [dvc, "exp", "show", "--only-changed", "--drop", ".*/.*", "--no-pager"]  # no data-hash columns
    table = _run(show, root, {**env, "COLUMNS": "120"})
    assert "tok.insseg.mask_ap" in table and INSSEG_KEY in table and "…" not in table, table
    assert max(len(line) for line in table.splitlines()) <= 120, table


def test_table_7_rows_that_only_change_inference_rerun_only_evaluation(repo):
    """`ait ablate 7 --run`: the hard-inference and solver-side soft-token rows share one trained solver
    (aux loss off), so for the second row DVC's run-cache restores training and only evaluate runs;
    `ait report 7 --md` then shows both rows beside the paper's numbers and how to run the others."""
    root, env = repo
    ait = str(Path(sys.executable).parent / "ait")
    rows = ["--row", "hard", "--row", "solver"]
    out = _run([ait, "ablate", "7", *rows, "--run", "--timings", "t7.json"], root, env)
    rows = dict(re.findall(r"\$ dvc exp run --temp -n (\S+) (.*?)(?=\$ dvc exp run|\Z)", out, re.S))
    assert list(rows) == ["t7-hard", "t7-solver"], out
    assert {"train_solver@depth", "evaluate@depth", "evaluate@insseg"} <= _ran(rows["t7-hard"])
    assert _ran(rows["t7-solver"]) == {"evaluate@depth", "evaluate@insseg"}, rows["t7-solver"]
    assert {"train_solver@depth", "train_solver@insseg"} <= _restored(rows["t7-solver"]), rows["t7-solver"]
    timings = json.loads((root / "t7.json").read_text())
    assert [(t["exp"], t["ran"], t["returncode"]) for t in timings][1] == ("t7-solver", 2, 0), timings

    report = _run([ait, "report", "7", "--md"], root, env)
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 5, report
    assert "0.3174" in table[2] and "missing" not in table[2] + table[3], report  # ours beside the paper's
    assert "`t7-detok`: `dvc exp run --queue -n t7-detok" in report  # the command for a missing row


def test_semseg_tokenizer_change_reruns_only_semseg_stages(repo):
    root, env = repo
    dvc = str(Path(sys.executable).parent / "dvc")
    git = env["GIT"].split()
    _run([*git, "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "before semseg change", "--allow-empty"], root, env)
    out = _run([dvc, "exp", "run", "-S", f"{SEMSEG_KEY}=8"], root, env)
    ran = _ran(out)
    assert {"train_tokenizer@semseg", "eval_tokenizer@semseg", "cache_tokens@semseg", "train_solver@semseg",
            "evaluate@semseg", "train_solver@joint3", "evaluate@joint3"} <= ran, out
    # the runs with class maps re-run; nothing that reads only depth or instances does
    others = {s for s in ran if "semseg" not in s and not s.endswith("@joint3")}
    assert not others, f"non-semseg stages re-ran after a semseg-tokenizer change: {others}"
    assert json.loads(_run([dvc, "status", "--json"], root, env)) == {}


def test_two_processes_evaluate_exactly_as_one(repo):
    """`AIT_NPROC=2 ait evaluate joint3` (all three tasks) shares the held-out batches between 2 gloo
    workers and merges them on rank 0: metrics.json is byte-identical to the one-process output of
    `dvc repro` (both with one thread a process, as torchrun sets)."""
    root, env = repo
    ait = str(Path(sys.executable).parent / "ait")
    out = root / "results/two_processes"
    log = _run([ait, "evaluate", "joint3", "--out", str(out / "joint3"), "--headline", str(out / "headline")],
               root, {**env, "AIT_NPROC": "2"})
    assert (out / "joint3/metrics.json").is_file(), log
    one = (root / "results/evaluate/joint3/metrics.json").read_text()
    assert (out / "joint3/metrics.json").read_text() == one
    assert sorted(p.name for p in (out / "joint3/panels").iterdir()) == sorted(
        p.name for p in (root / "results/evaluate/joint3/panels").iterdir())


def test_dvc_repro_trains_on_two_processes_through_the_environment(repo):
    """`AIT_NPROC=2 dvc repro`: the stage commands in dvc.yaml start 2 gloo workers each (torchrun's own
    launcher), so a changed run trains and evaluates on 2 processes with dvc.yaml untouched."""
    import yaml

    root, env = repo
    dvc = str(Path(sys.executable).parent / "dvc")
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["solver"]["runs"]["depth"]["steps"] += 1
    params["cache"]["depth"]["shard_max_samples"] = 3  # whole shards per rank: 2 for the 6 training frames
    write_params(root / "params.yaml", params)
    try:
        out = _run([dvc, "repro", "evaluate@depth"], root, {**env, "AIT_NPROC": "2"})
        assert {"cache_tokens@depth_mask50", "train_solver@depth", "evaluate@depth"} <= _ran(out), out
        assert "2 process(es)" in out, out  # rank 0's report of the world it trained in
        status = json.loads(_run([dvc, "status", "--json"], root, env))
        assert not {"cache_tokens@depth_mask50", "train_solver@depth", "evaluate@depth"} & set(status), status
    finally:
        (root / "params.yaml").write_text(text)
