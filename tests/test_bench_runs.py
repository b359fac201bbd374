"""The benches that run the real stage commands (bench/bench_learning.py, bench/bench_seeds.py) read their
figures through the tasks' score tables, resume from the runs they already have, and share identical runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _runs  # noqa: E402
from bench_learning import budget_params  # noqa: E402
from bench_seeds import seeded, summarise  # noqa: E402

PARAMS = {"base": {"seed": 0}, "solver": {"runs": {"insseg": {"steps": 600, "layer_decay": 0.85}}}}


def test_a_run_is_named_by_its_params_and_a_finished_step_is_not_run_again(tmp_path, monkeypatch):
    calls = []

    def fake_ait(cwd: Path, *args: str) -> float:
        calls.append(args[0])
        if args[0] == "evaluate":
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text('{"insseg": {}}')
        if args[0] == "train-solver" and len(calls) == 1:
            raise KeyboardInterrupt  # stopped during the first training
        return 1.5

    monkeypatch.setattr(_runs, "ait", fake_ait)
    inputs = {k: tmp_path / k for k in ("project", "prepared", "tokenizers", "caches")}
    runs = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        _runs.solver_run(runs, "insseg", budget_params(PARAMS, "insseg", 1, []), inputs)
    first = _runs.solver_run(runs, "insseg", budget_params(PARAMS, "insseg", 1, []), inputs)
    assert calls == ["train-solver", "train-solver", "evaluate"]  # the stopped step again, then the next
    # the learning bench's 1x run is the seed bench's seed-0 run: same params, same folder, nothing re-run
    again = _runs.solver_run(runs, "insseg", seeded(PARAMS, 0), inputs)
    assert again == first and len(calls) == 3 and first["seconds"] == {"train": 1.5, "evaluate": 1.5}
    longer = _runs.solver_run(runs, "insseg", budget_params(PARAMS, "insseg", 3, []), inputs)
    assert len(calls) == 5 and longer["folder"] != first["folder"]
    assert "steps: 1800" in (Path(longer["folder"]) / "params.yaml").read_text()


def test_overrides_follow_dotted_keys_and_refuse_unknown_parents():
    params = budget_params(PARAMS, "insseg", 10, ["solver.runs.insseg.layer_decay=1.0"])
    assert params["solver"]["runs"]["insseg"] == {"steps": 6000, "layer_decay": 1.0}
    assert PARAMS["solver"]["runs"]["insseg"]["steps"] == 600  # the project's params are not touched
    with pytest.raises(SystemExit, match="no 'solvr'"):
        _runs.override(PARAMS, "solvr.runs=1")


def test_held_out_reads_every_score_of_the_task_table_as_a_number():
    insseg = {"bbox": {"AP": 0.3, "AP50": 0.7}, "segm": {"AP": 0.2, "AP50": 0.5},
              "hits": {"gt_found": 40, "gt_objects": 100, "gt_found_right_class": 30},
              "prior_baseline": {"bbox": {"AP": 0.0, "AP50": 0.01}, "segm": {"AP": 0.0, "AP50": 0.0},
                                 "hits": {"gt_found": 2, "gt_objects": 100, "gt_found_right_class": 1}}}
    scores = _runs.held_out({"insseg": insseg})["insseg"]
    assert scores["box_ap50"] == {"value": 0.7, "baseline": 0.01, "lower_is_better": False}
    assert scores["found"]["value"] == 0.3 and scores["found"]["baseline"] == 0.01


def test_the_seed_verdict_needs_a_gap_beyond_twice_the_pooled_spread():
    rows = [{"miou": {"value": v, "baseline": 0.08, "lower_is_better": False}} for v in (0.11, 0.12, 0.13)]
    assert summarise(rows)["miou"]["verdict"] == "better beyond spread"  # gain 0.04 > 2 x 0.01
    rows = [{"miou": {"value": v, "baseline": 0.08, "lower_is_better": False}} for v in (0.06, 0.12, 0.18)]
    row = summarise(rows)["miou"]
    assert row["verdict"] == "within spread" and row["value"]["sd"] == pytest.approx(0.06)
    rows = [{"rmse": {"value": v, "baseline": 0.9, "lower_is_better": True}} for v in (1.0, 1.01, 1.02)]
    assert summarise(rows)["rmse"]["verdict"] == "worse beyond spread"  # higher error than the baseline
