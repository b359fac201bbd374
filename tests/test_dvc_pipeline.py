"""The real `dvc repro` on a tiny params set, and what `dvc status` and `dvc exp run -S` then do.

Checks the user's main loop: the whole DAG runs; `dvc status` is clean afterwards; an edit in one task's
folder stales only the stages that run that task; no inference switch stales training; changing one
instance-tokenizer param re-runs no depth stage, and setting it back restores every stage from DVC's
run-cache without running anything. tests/test_dvc_reruns.py goes on from the same repro.
"""

from __future__ import annotations

import json

import pytest

from pipeline.presets import leaves
from tests.dvc_repo import DvcRepo, stages_ran, stages_restored
from tests.tiny import merge, write_params

pytestmark = pytest.mark.slow

INSSEG_KEY = "tokenizer.insseg.model.embedding_dim"


def test_repro_runs_everything_and_leaves_a_clean_status(dvc_repo: DvcRepo):
    root, out = dvc_repo.root, dvc_repo.repro_log
    ran = stages_ran(out)
    for stage in ("demo_data", "prepare@depth", "train_tokenizer@insseg", "cache_tokens@depth_mask50",
                  "train_solver@joint", "evaluate@depth", "evaluate@insseg", "prepare@semseg",
                  "train_tokenizer@semseg", "eval_tokenizer@semseg", "cache_tokens@semseg", "train_solver@semseg",
                  "evaluate@semseg", "train_solver@joint3", "evaluate@joint3"):
        assert stage in ran, f"{stage} did not run:\n{out}"
    assert dvc_repo.status() == {}  # in a copy of the reproduced repository: nothing is lost in the copy
    metrics = json.loads((root / "results/evaluate/depth/metrics.json").read_text())
    assert "rmse" in metrics["depth"]["model"]
    three = json.loads((root / "results/evaluate/joint3/metrics.json").read_text())
    assert set(three) == {"depth", "insseg", "semseg"} and "miou" in three["semseg"]["model"]


def _toggled(value):
    return (not value) if isinstance(value, bool) else value + (1 if isinstance(value, int) else 0.25)


def test_each_inference_switch_changes_only_evaluation_stages(dvc_repo: DvcRepo, monkeypatch):
    """Every key of the `evaluate` section (soft tokens, tau, top-p, TTA, the tokenizer's eval tau, ...),
    toggled, leaves training, caches and tokenizers up to date in DVC's status, and each key is read by
    some stage.

    DVC marks a stage stale when a params key it declares (or a section above it) changed, so the stages
    one switch stales are exactly those declaring it, and toggling every switch at once stales their
    union: one status, asked of DVC's Python API in this process (what `dvc status` prints), answers for
    all 22 switches; which stages declare each switch is read from the same DVC stage objects."""
    import yaml
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = dvc_repo.root
    monkeypatch.chdir(root)
    for key in ("DVC_NO_ANALYTICS", "DVC_SITE_CACHE_DIR"):
        monkeypatch.setenv(key, dvc_repo.env[key])
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    keys = [key for key, _ in leaves(params["evaluate"], "evaluate.")]
    assert {"evaluate.depth.soft_input", "evaluate.insseg.top_p", "evaluate.tokenizer.depth.tau"} <= set(keys)
    changed = params
    for key in keys:
        changed = merge(changed, _nested(key, _toggled(_get(params, key))))
    write_params(root / "params.yaml", changed)
    try:
        with Repo(str(root)) as repo:
            status = repo.status()
            declared = {stage.addressing: [p for dep in stage.deps if isinstance(dep, ParamsDependency)
                                           for p in (dep.params or [""])] for stage in repo.index.stages}
    finally:
        (root / "params.yaml").write_text(text)
    training = sorted(s for s in status if not s.startswith(("evaluate@", "eval_tokenizer@")))
    assert not training, f"inference-only keys invalidate {training}"
    for key in keys:
        readers = {s for s, names in declared.items()
                   if any(n == "" or key == n or key.startswith(f"{n}.") for n in names)}
        assert readers, f"{key}: no stage reads it"
        assert readers <= set(status), f"{key}: {readers - set(status)} declare it but were not stale"
    assert dvc_repo.status() == {}  # and the command line agrees once the file is restored


def _get(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def test_insseg_tokenizer_change_reruns_no_depth_stage_and_reverts_from_run_cache(dvc_repo: DvcRepo):
    dvc_repo.commit("repro")

    out = dvc_repo.run("dvc", "exp", "run", "-S", f"{INSSEG_KEY}=8")
    ran = stages_ran(out)
    assert "train_tokenizer@insseg" in ran and "cache_tokens@insseg" in ran, out
    depth_stages = {s for s in ran if "depth" in s}
    assert not depth_stages, f"depth stages re-ran after an insseg-tokenizer change: {depth_stages}"
    assert dvc_repo.status() == {}

    out = dvc_repo.run("dvc", "exp", "run", "-S", f"{INSSEG_KEY}=16")
    assert not stages_ran(out), f"stages ran instead of being restored:\n{out}"
    restored = stages_restored(out)
    assert {"train_tokenizer@insseg", "cache_tokens@insseg", "train_solver@insseg"} <= restored, out
    assert dvc_repo.status() == {}

    # the two variants side by side: only the changed params and headline metrics, every column shown
    # within 120 (DVC folds what does not fit into a trailing "…" column)
    show = ["dvc", "exp", "show", "--only-changed", "--drop", ".*/.*", "--no-pager"]  # no data-hash columns
    table = dvc_repo.run(*show, env={**dvc_repo.env, "COLUMNS": "120"})
    assert "tok.insseg.mask_ap" in table and INSSEG_KEY in table and "…" not in table, table
    assert max(len(line) for line in table.splitlines()) <= 120, table


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_editing_one_tasks_code_stales_only_the_stages_that_run_it(dvc_repo: DvcRepo, task):
    """A comment appended to a file of pipeline/tasks/<task>/ (the registry imports a task's folder by
    name) stales that task's stages and the runs that include it, and nothing else."""
    path = dvc_repo.root / "pipeline/tasks" / task / "evaluate.py"
    original = path.read_text()
    path.write_text(original + "# an edit\n")
    try:
        stale = set(dvc_repo.status())
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
    assert dvc_repo.status() == {}


def test_summary_names_the_numbers_a_stale_stage_puts_out_of_date(dvc_repo: DvcRepo, monkeypatch):
    """After a params change nothing has re-run yet, `ait summary` still prints the tables and warns on
    stderr which evaluating stages' numbers are out of date: the changed stage and all downstream of it.
    Asked in this process (DVC's Python API), as the user's `ait summary` asks."""
    import yaml
    from typer.testing import CliRunner

    from stages.cli import app

    root = dvc_repo.root
    monkeypatch.chdir(root)
    for key in ("DVC_NO_ANALYTICS", "DVC_SITE_CACHE_DIR"):
        monkeypatch.setenv(key, dvc_repo.env[key])
    clean = CliRunner().invoke(app, ["summary"])
    assert clean.exit_code == 0 and "warning" not in clean.stderr, clean.output
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["tokenizer"]["semseg"]["train"]["steps"] += 1  # upstream of the semseg runs' numbers only
    write_params(root / "params.yaml", params)
    try:
        result = CliRunner().invoke(app, ["summary"])
    finally:
        (root / "params.yaml").write_text(text)
    assert result.exit_code == 0 and "task-solver" in result.stdout, result.output
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    stale, _, affected = line.partition("out of date: ")
    assert "train_tokenizer@semseg" in stale
    assert affected.startswith("eval_tokenizer@semseg, evaluate@joint3, evaluate@semseg."), line
