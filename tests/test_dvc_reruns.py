"""`dvc exp run` after the tiny repro: Table 7's inference-only rows, a class-map-tokenizer change, and
the same commands on 2 processes.

Works on its own copy of the repository tests/test_dvc_pipeline.py checks (tests/dvc_repo.py): `ait
ablate 7 --run` re-runs only evaluation for a row that changes only inference; changing one
class-map-tokenizer param re-runs only semseg stages; `dvc repro` on 2 gloo processes (`AIT_NPROC=2`),
and evaluation on 2 processes scoring exactly as on one.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.dvc_repo import DvcRepo, stages_ran, stages_restored

pytestmark = pytest.mark.slow

SEMSEG_KEY = "tokenizer.semseg.model.embedding_dim"


def test_table_7_rows_that_only_change_inference_rerun_only_evaluation(dvc_repo: DvcRepo):
    """`ait ablate 7 --run`: the hard-inference and solver-side soft-token rows share one trained solver
    (aux loss off), so for the second row DVC's run-cache restores training and only evaluate runs;
    `ait report 7 --md` then shows both rows beside the paper's numbers and how to run the others."""
    root = dvc_repo.root
    dvc_repo.commit("repro")  # the temporary experiments start from the reproduced commit
    out = dvc_repo.run("ait", "ablate", "7", "--row", "hard", "--row", "solver", "--run", "--timings", "t7.json")
    rows = dict(re.findall(r"\$ dvc exp run --temp -n (\S+) (.*?)(?=\$ dvc exp run|\Z)", out, re.S))
    assert list(rows) == ["t7-hard", "t7-solver"], out
    assert {"train_solver@depth", "evaluate@depth", "evaluate@insseg"} <= stages_ran(rows["t7-hard"])
    assert stages_ran(rows["t7-solver"]) == {"evaluate@depth", "evaluate@insseg"}, rows["t7-solver"]
    restored = stages_restored(rows["t7-solver"])
    assert {"train_solver@depth", "train_solver@insseg"} <= restored, rows["t7-solver"]
    timings = json.loads((root / "t7.json").read_text())
    assert [(t["exp"], t["ran"], t["returncode"]) for t in timings][1] == ("t7-solver", 2, 0), timings

    report = dvc_repo.run("ait", "report", "7", "--md")
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 5, report
    assert "0.3174" in table[2] and "missing" not in table[2] + table[3], report  # ours beside the paper's
    assert "`t7-detok`: `dvc exp run --queue -n t7-detok" in report  # the command for a missing row


def test_semseg_tokenizer_change_reruns_only_semseg_stages(dvc_repo: DvcRepo):
    dvc_repo.commit("before semseg change")
    ran = stages_ran(dvc_repo.run("dvc", "exp", "run", "-S", f"{SEMSEG_KEY}=8"))
    assert {"train_tokenizer@semseg", "eval_tokenizer@semseg", "cache_tokens@semseg", "train_solver@semseg",
            "evaluate@semseg", "train_solver@joint3", "evaluate@joint3"} <= ran, ran
    # the runs with class maps re-run; nothing that reads only depth or instances does
    others = {s for s in ran if "semseg" not in s and not s.endswith("@joint3")}
    assert not others, f"non-semseg stages re-ran after a semseg-tokenizer change: {others}"
    assert dvc_repo.status() == {}


def test_two_processes_evaluate_exactly_as_one(dvc_repo: DvcRepo):
    """`AIT_NPROC=2 ait evaluate joint3` (all three tasks) shares the held-out batches between 2 gloo
    workers and merges them on rank 0: metrics.json is byte-identical to the one-process output of
    `dvc repro` (both with one thread a process, as torchrun sets)."""
    root = dvc_repo.root
    out = root / "results/two_processes"
    log = dvc_repo.run("ait", "evaluate", "joint3", "--out", str(out / "joint3"), "--headline",
                       str(out / "headline"), env={**dvc_repo.env, "AIT_NPROC": "2"})
    assert (out / "joint3/metrics.json").is_file(), log
    one = (root / "results/evaluate/joint3/metrics.json").read_text()
    assert (out / "joint3/metrics.json").read_text() == one
    assert sorted(p.name for p in (out / "joint3/panels").iterdir()) == sorted(
        p.name for p in (root / "results/evaluate/joint3/panels").iterdir())


def test_dvc_repro_trains_on_two_processes_through_the_environment(dvc_repo: DvcRepo):
    """`AIT_NPROC=2 dvc repro`: the stage commands in dvc.yaml start 2 gloo workers each (torchrun's own
    launcher), so a changed run trains and evaluates on 2 processes with dvc.yaml untouched."""
    import yaml

    root = dvc_repo.root
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["solver"]["runs"]["depth"]["steps"] += 1
    params["cache"]["depth"]["shard_max_samples"] = 3  # whole shards per rank: 2 for the 6 training frames
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc_repo.run("dvc", "repro", "evaluate@depth", env={**dvc_repo.env, "AIT_NPROC": "2"})
        assert {"cache_tokens@depth_mask50", "train_solver@depth", "evaluate@depth"} <= stages_ran(out), out
        assert "2 process(es)" in out, out  # rank 0's report of the world it trained in
        status = dvc_repo.status()
        assert not {"cache_tokens@depth_mask50", "train_solver@depth", "evaluate@depth"} & set(status), status
    finally:
        (root / "params.yaml").write_text(text)
