"""ablations.yaml against the paper and params.yaml; `ait ablate` commands as DVC reads them; `ait report`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pipeline.core.config import ConfigError, sections
from pipeline.core.params import from_dict
from pipeline.experiments import count_stages, experiment_name, load_ablations, param_paths
from pipeline.report import build_report, parse_exp_show
from stages import ablate, report

ROOT = Path(__file__).resolve().parents[1]
PAPER = Path(__file__).resolve().parents[2] / "shared/docs/PAPER.md"
TABLES = {1, 3, 5, 7, 8, 12}

@pytest.fixture(scope="module")
def tables():
    return load_ablations(ROOT / "ablations.yaml")


@pytest.fixture(scope="module")
def params() -> Path:
    return ROOT / "params.yaml"


def _invoke(command, *args: str):
    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def _ablate(params: Path, *args: str):
    return _invoke(ablate.main, *args, "--ablations", str(ROOT / "ablations.yaml"), "--params", str(params))


def _commands(output: str) -> list[list[str]]:
    return [shlex.split(line) for line in output.splitlines() if line.startswith("dvc exp run")]


def _flags(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-S"]


# ------------------------------------------------------------------------------------------------
# ablations.yaml


def test_every_table_loads_with_one_paper_number_per_column(tables):
    assert set(tables) == TABLES
    for table in tables.values():
        for row in table.rows:
            assert len(row.paper) == len(table.columns), row.id
            assert all(isinstance(x, float) or x is None for x in row.paper), row.id


def test_every_override_key_is_a_params_key(tables):
    known = param_paths(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for number, table in tables.items():
        for row in table.rows:
            for key in row.set:
                # "+key" appends; Hydra refuses to append a key that already exists
                assert (key[1:] not in known) if key.startswith("+") else (key in known), (number, key)


def test_ragged_row_is_rejected(tmp_path):
    raw = yaml.safe_load((ROOT / "ablations.yaml").read_text())
    raw["tables"][7]["rows"][0]["paper"].append(1.0)
    bad = tmp_path / "ablations.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="one entry per column"):
        load_ablations(bad)


def _paper_rows(text: str, number: int) -> list[list[str]]:
    """The data rows of the paper's Table N: tab-separated cells ending in a number or "-" (headers don't)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}. "))
    block: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.strip():
            block.append([c for c in (re.sub(r"</?b>", "", c).strip() for c in line.split("\t")) if c])
        elif block:
            break
    return [cells for cells in block if re.fullmatch(r"-|\d+(\.\d+)?", cells[-1])]


@pytest.mark.parametrize("number", sorted(TABLES))
def test_paper_numbers_equal_the_paper(tables, number):
    if not PAPER.is_file():
        pytest.skip(f"paper text absent: {PAPER} not found")
    table = tables[number]
    rows = _paper_rows(PAPER.read_text(), number)
    assert len(rows) == len(table.rows)
    width = len(table.columns)
    for cells, row in zip(rows, table.rows, strict=True):
        assert [None if c == "-" else float(c) for c in cells[-width:]] == list(row.paper), row.id


# ------------------------------------------------------------------------------------------------
# ait ablate


def test_ablate_7_prints_one_command_per_row(tables, params):
    result = _ablate(params, "7", "--dry-run")
    assert result.exit_code == 0, result.output
    commands = _commands(result.stdout)
    assert [argv[:6] for argv in commands] == [
        ["dvc", "exp", "run", "--queue", "-n", f"t7-{row.id}"] for row in tables[7].rows]
    for argv, row in zip(commands, tables[7].rows, strict=True):
        assert argv[-2:] == ["evaluate@depth", "evaluate@insseg"]
        flags = dict(f.split("=", 1) for f in _flags(argv))
        assert flags == {k: json.dumps(v) for k, v in row.set.items()}
    hard = dict(f.split("=", 1) for f in _flags(commands[0]))
    assert hard["evaluate.depth.soft_input"] == "false" and hard["solver.insseg.aux_weight"] == "0.0"


def test_extra_overrides_reach_every_row_but_never_replace_a_row_key(params):
    result = _ablate(params, "1", "--dry-run", "-S", "tokenizer.depth.train.crop_size=96",
                     "-S", "tokenizer.depth.model.num_embeddings=512")
    assert result.exit_code == 0, result.output
    commands = _commands(result.stdout)
    assert len(commands) == 3
    for argv, k in zip(commands, (64, 128, 256), strict=True):
        flags = _flags(argv)
        assert "tokenizer.depth.train.crop_size=96" in flags
        assert [f for f in flags if f.startswith("tokenizer.depth.model.num_embeddings")] == [
            f"tokenizer.depth.model.num_embeddings={k}"]
        assert argv[-2:] == ["eval_tokenizer@depth_mask50", "eval_tokenizer@insseg"]


def test_a_row_that_cannot_run_on_these_params_is_refused_before_anything_is_queued(params):
    """Table 5's ratio-32 row needs crops divisible by 32: without the README's override the dry run
    stops on that row, naming it, the key and why (DVC's own merge of its -S, then the schema)."""
    result = _ablate(params, "5", "--dry-run")
    assert result.exit_code == 1 and not _commands(result.stdout)
    assert ("t5-r32: " in result.output and "tokenizer.depth.train.crop_size: 120 is not a multiple of "
            "model.downsample_ratio 32" in result.output), result.output


def test_table_12_queues_one_experiment(params):
    result = _ablate(params, "12", "--dry-run")
    assert result.exit_code == 0, result.output
    assert [argv[5] for argv in _commands(result.stdout)] == ["t12-tokenizers"]


def test_dvc_reads_the_overrides_back_as_written(tables, params, tmp_path):
    """Apply each dry-run command's -S with DVC's own Hydra code; every row's values must land as set."""
    from dvc.utils.hydra import apply_overrides

    real = param_paths(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for number, table in tables.items():
        # Table 5's ratios need crops divisible by 32: its demo run adds the documented override.
        extra = ["-S", "tokenizer.depth.train.crop_size=96"] if number == 5 else []
        for argv, exp in zip(_commands(_ablate(params, str(number), "--dry-run", *extra).stdout),
                             dict.fromkeys(experiment_name(number, r) for r in table.rows), strict=True):
            target = tmp_path / f"{exp}.yaml"
            target.write_text(params.read_text())
            apply_overrides(target, _flags(argv))
            tree = yaml.safe_load(target.read_text())
            row = next(r for r in table.rows if experiment_name(number, r) == exp)
            for key, value in row.set.items():
                node = tree
                for part in key.lstrip("+").split("."):
                    node = node[part]
                assert node == value, (exp, key)
            if all(k in real for k in row.set if not k.startswith("+")):
                for section, cls in sections().items():  # still valid for the strict schema
                    from_dict(cls, tree[section], section)


def test_m30_adds_a_tokenizer_variant_and_trains_the_solver_on_it(params):
    argv = _commands(_ablate(params, "8", "--dry-run").stdout)[1]
    assert argv[5] == "t8-m30"
    assert '+tokenizer.variants.depth_mask30={task:"depth",mask_ratio:0.3}' in _flags(argv)
    assert 'tokenizer.solver_variants.depth="depth_mask30"' in _flags(argv)
    assert argv[-1:] == ["evaluate@depth"]


@pytest.mark.parametrize("args, message", [
    (("9", "--dry-run"), "unknown table '9'"),
    (("1", "--dry-run", "-S", "tokenizer.depth.model.num_embeding=3"), "num_embeding: not a key"),
    (("1", "--dry-run", "--run"), "exclude each other"),
])
def test_ablate_errors_are_one_line(params, args, message):
    result = _ablate(params, *args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_stage_counts_read_dvc_3_wording():
    log = ["Reproducing experiment 't7-solver'",
           "Stage 'train_solver@depth' is cached - skipping run, checking out outputs",
           "Stage 'demo_data' didn't change, skipping",
           "Running stage 'evaluate@depth':", "> ait evaluate depth", "Running stage 'evaluate@insseg':"]
    assert count_stages(log) == {"ran": 2, "cached": 1, "unchanged": 1}


# ------------------------------------------------------------------------------------------------
# ait report


def _rev(name: str, timestamp: str, metrics: dict, state: str | None = None, error=None) -> dict:
    files = {f"results/headline/{k}.json": {"data": v} for k, v in metrics.items()}
    files["results/headline/README.txt"] = {"data": "not json"}
    executor = None if state is None else {"state": state, "name": None, "local": {}}
    data = {"rev": "f" * 40, "timestamp": timestamp, "params": {"params.yaml": {"data": {}}},
            "metrics": files}
    return {"revs": [{"rev": "f" * 40, "name": name, "data": data, "error": error, "experiments": None}],
            "executor": executor, "name": name}


def _tok(depth: float, mask: float) -> dict:
    return {"eval_tokenizer_depth_mask50": {"tok": {"depth_mask50": {"rmse": depth, "interp_rmse": 0.9}}},
            "eval_tokenizer_insseg": {"tok": {"insseg": {"mask_ap": mask, "interp_mask_ap": 0.05}}}}


@pytest.fixture
def exp_show(tmp_path) -> Path:
    """Two baselines; t1-k64 ran on both (the newer must win); t1-k256 never ran; t7-hard failed."""
    old = [_rev("t1-k64", "2026-01-01T10:00:00", _tok(0.2222, 0.5)),
           _rev("t1-k128", "2026-01-01T11:00:00", _tok(0.1111, 0.8765))]
    new = [_rev("t1-k64", "2026-02-01T10:00:00", _tok(0.1234, 0.8812)),
           _rev("t7-hard", "2026-02-01T12:00:00", {"evaluate_depth": {"depth": {"rmse": 9.9}}},
                state="failed", error={"msg": "Experiment run failed", "type": ""}),
           _rev("t12-tokenizers", "2026-02-01T13:00:00", _tok(0.05, 0.7))]
    commits = [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
               {"rev": "b" * 40, "name": "main", "data": {}, "error": None, "experiments": new},
               {"rev": "a" * 40, "name": None, "data": {}, "error": None, "experiments": old}]
    path = tmp_path / "exp_show.json"
    path.write_text(json.dumps(commits))
    return path


def _report(exp_show: Path, *args: str):
    return _invoke(report.main, *args, "--json-file", str(exp_show),
                   "--ablations", str(ROOT / "ablations.yaml"))


def test_newest_experiment_of_a_name_wins(exp_show, tables):
    results = parse_exp_show(json.loads(exp_show.read_text()))
    assert results["t1-k64"].metrics["tok.depth_mask50.rmse"] == 0.1234
    rows = build_report(1, tables[1], results).rows
    assert [r.state for r in rows] == ["done", "done", "missing"]
    assert rows[0].ours == pytest.approx((0.1234, 88.12))


def test_report_puts_ours_beside_the_paper_and_says_what_is_missing(exp_show):
    result = _report(exp_show, "1")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if "1.0× / 64" in ln)
    assert re.search(r"0\.1234\s*│\s*0\.1025\s*│\s*88\.12\s*│\s*88\.94", line), line
    assert "0.2222" not in result.stdout
    k256 = next(ln for ln in result.stdout.splitlines() if "1.0× / 256" in ln)
    assert "missing" in k256
    assert ("t1-k256: dvc exp run --queue -n t1-k256 -S tokenizer.depth.model.num_embeddings=256 "
            "-S tokenizer.insseg.model.num_embeddings=256 eval_tokenizer") in result.stdout


def test_report_markdown_is_a_pipe_table(exp_show):
    result = _report(exp_show, "all", "--md")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert [ln for ln in out.splitlines() if ln.startswith("### ")][:2] == [
        "### Table 1 — VQ-VAE codebook size, reconstruction (the paper's Table 1, width 1.0×)",
        "### Table 3 — VQ-VAE width, reconstruction (the paper's Table 3, 128 tokens)"]
    for block in out.split("### ")[1:]:
        pipes = {ln.count("|") for ln in block.splitlines() if ln.startswith("|")}
        assert len(pipes) == 1, block
    assert "| 1.0× / 64 | 0.1234 | 0.1025 | 88.12 | 88.94 |" in out
    assert "- `table 3`: `ait ablate 3`" in out  # nothing of Table 3 ran
    assert "| Baseline (hard-inf) | failed | 0.3174 | failed | 43.6 | failed | 31.1 |" in out
    assert "- `t7-hard`: `dvc queue logs t7-hard`" in out
    assert "| interpolation | 0.9000 | 0.7544 | - | 43.8 | 5.0 | 4.2 |" in out
    assert "[" not in "".join(ln for ln in out.splitlines() if ln.startswith("|"))  # no rich markup


def test_report_unknown_table_is_one_line(exp_show):
    result = _report(exp_show, "2")
    assert result.exit_code == 1
    assert "unknown table '2'" in result.output and len(result.output.strip().splitlines()) == 1


def test_row_option_picks_rows_and_rejects_unknown_ids(params):
    result = _ablate(params, "7", "--row", "both", "--row", "hard", "--dry-run")
    assert result.exit_code == 0, result.output
    assert [argv[5] for argv in _commands(result.stdout)] == ["t7-hard", "t7-both"]  # table order
    result = _ablate(params, "7", "--row", "nope", "--dry-run")
    assert result.exit_code != 0 and "no row 'nope'" in result.output
