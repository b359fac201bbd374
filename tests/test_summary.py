"""`ait summary`: the README's results tables are read back from stage outputs, every figure from its file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from stages.cli import app


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _depth_metrics(rmse: float) -> dict:
    return {"rmse": rmse, "abs_rel": rmse / 4, "d1": 1 - rmse / 2}


def test_summary_markdown_puts_every_method_beside_its_baselines(tmp_path):
    results = tmp_path / "results"
    _write(results / "eval_tokenizer/depth_a/metrics.json", {
        "task": "depth", "variant": "depth_a",
        "vqvae_hard": {"rmse": 0.11, "hole_rmse": 0.81}, "vqvae_soft": {"rmse": 0.12},
        "interp_baseline": {"rmse": 0.21, "hole_rmse": 0.91},
        "interp_literal": {"rmse": 0.31, "hole_rmse": 2.41}})
    _write(results / "evaluate/joint/metrics.json", {
        "depth": {"model": _depth_metrics(1.0), "mean_depth_baseline": _depth_metrics(0.8),
                  "median_depth_baseline": _depth_metrics(0.9), "tokenizer_upper_bound": _depth_metrics(0.2),
                  "rmse_gain_vs_mean": -0.25,
                  "spread_vs_mean_map": {"deviation_ratio": 0.031, "deviation_correlation": -0.12}},
        "insseg": {"bbox": {"AP": 0.5, "AP50": 0.6}, "segm": {"AP": 0.25, "AP50": 0.3},
                   "hits": {"gt_found": 8, "gt_objects": 96, "gt_found_right_class": 4},
                   "prior_baseline": {"bbox": {"AP": 0.01, "AP50": 0.02}, "segm": {"AP": 0.03, "AP50": 0.04},
                                      "hits": {"gt_found": 5, "gt_objects": 96, "gt_found_right_class": 2}}}})
    result = CliRunner().invoke(app, ["summary", "--md", "--prepared", str(tmp_path / "none"),
                                      "--results", str(results)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "| depth_a | RMSE (m) | 0.1100 | 0.1200 | 0.2100 | 0.3100 | 0.8100 | 0.9100 | 2.4100 |" in lines
    assert "| joint | depth RMSE (m) | 1.0000 | 0.8000 | -0.2000 | 0.2000 |" in lines  # lower is better
    assert "| joint | depth RMSE vs the median map (m) | 1.0000 | 0.9000 | -0.1000 |  |" in lines
    assert "| joint | depth spread vs mean map | 0.03 (corr -0.12) |  |  |  |" in lines
    assert "| joint | insseg mask AP50 | 0.3000 | 0.0400 | +0.2600 |  |" in lines
    hits = "| joint | insseg GT objects found (IoU>=0.5; right class) | 8/96 (4) | 5/96 (2) |  |  |"
    assert hits in lines
    assert "baseline: depth, the training mean depth map" in result.output  # from each task's record
    assert "prepared datasets" not in result.output  # no report.json: no table, no invented row


def test_summary_without_outputs_says_what_to_run(tmp_path):
    args = ["summary", "--md", "--prepared", str(tmp_path), "--results", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "run `dvc repro`" in result.output


def _seed_rows(values: list[float], baseline: float, key: str = "rmse") -> list[dict]:
    return [{key: {"value": v, "baseline": baseline, "lower_is_better": key.endswith("rmse")}} for v in values]


def test_summary_with_the_seed_bench_file_marks_which_gains_exceed_the_spread(tmp_path):
    """The seeds.json that bench/bench_seeds.py writes (its own `summarise`) adds each figure's seed sd
    and whether its gain over the baseline exceeds twice the pooled sd; rows of other runs stay blank."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_seeds import summarise

    results = tmp_path / "results"
    metrics = {"model": _depth_metrics(0.72), "mean_depth_baseline": _depth_metrics(0.98),
               "tokenizer_upper_bound": _depth_metrics(0.2)}
    _write(results / "evaluate/depth/metrics.json", {"depth": metrics})
    _write(results / "evaluate/joint/metrics.json", {"depth": metrics})
    _write(results / "eval_tokenizer/depth_a/metrics.json", {
        "task": "depth", "variant": "depth_a", "vqvae_hard": {"rmse": 0.11, "hole_rmse": 0.40},
        "interp_baseline": {"rmse": 0.109, "hole_rmse": 0.45}})
    spread = {"solver": {"depth": summarise(_seed_rows([0.70, 0.72, 0.74], 0.98))},
              "tokenizer": {"depth_a": summarise([r | h for r, h in zip(
                  _seed_rows([0.10, 0.11, 0.12], 0.109), _seed_rows([0.39, 0.40, 0.41], 0.45, "hole_rmse"),
                  strict=True)])}}
    (tmp_path / "seeds.json").write_text(json.dumps(spread))
    args = ["summary", "--md", "--prepared", str(tmp_path / "none"), "--results", str(results)]
    lines = CliRunner().invoke(app, [*args, "--spread", str(tmp_path / "seeds.json")]).output.splitlines()
    # gain 0.26 against 2 x 0.02: beyond the spread; the joint run was not re-seeded: no claim either way
    row = "| {} | depth RMSE (m) | 0.7200 | 0.9800 | +0.2600 | 0.2000 | {} |"
    assert row.format("depth", "±0.0200 (n=3) | better beyond spread") in lines
    assert row.format("joint", " | ") in lines
    # valid pixels: 0.001 apart against 2 x 0.01 (within); holes: 0.05 apart against 2 x 0.01 (beyond)
    assert ("| depth_a | RMSE (m) | 0.1100 | - | 0.1090 | - | 0.4000 | 0.4500 | - | ±0.0100 (n=3) "
            "| within spread | ±0.0100 (n=3) | better beyond spread |") in lines

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(app, [*args, "--spread", str(bad)])
    assert result.exit_code == 1 and "bad.json: not a seeds.json" in result.output
