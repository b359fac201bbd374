"""train_solver@{depth,insseg,joint} on tiny caches: outputs, identity checks, resume after a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import checkpoint
from stages.cli import app
from tests.tiny import tiny_params, tiny_solver, write_params

CACHE = {"depth": {"crop_size": 48, "crop_stride": 8, "shard_max_samples": 4},
         "insseg": {"shard_max_samples": 4}}
SOLVER = tiny_solver(steps=4, num_query=4)


def _invoke(args: list[str], cwd: Path):
    with pytest.MonkeyPatch.context() as m:  # outside any git/DVC repository, as a fresh project
        m.chdir(cwd)
        return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory) -> Path:
    """Tiny tokenizers and token caches for both tasks, built with the real stage commands."""
    root = tmp_path_factory.mktemp("solver_project")
    (root / "data").mkdir()
    (root / "data/prepared").symlink_to(tiny_project / "data/prepared")
    params = write_params(root / "params.yaml", tiny_params(tiny_project, {"cache": CACHE, "solver": SOLVER}))
    for variant in ("depth_mask50", "insseg"):
        for args in (["train-tokenizer", variant, "--live-dir", str(root / "live" / variant)],
                     ["cache-tokens", variant]):
            result = _invoke([*args, "--params", str(params), "--device", "cpu"], root)
            assert result.exit_code == 0, result.output
    return root


def _train(project: Path, run: str, tag: str):
    return _invoke(["train-solver", run, "--params", str(project / "params.yaml"), "--device", "cpu",
                    "--out", str(project / tag / "model"), "--state-dir", str(project / tag / "state"),
                    "--live-dir", str(project / tag / "live")], project)


@pytest.mark.parametrize("run, tasks", [("depth", ["depth"]), ("insseg", ["insseg"]),
                                        ("joint", ["depth", "insseg"])])
def test_train_solver_writes_a_self_describing_checkpoint(project, run, tasks):
    result = _train(project, run, f"run_{run}")
    assert result.exit_code == 0, result.output
    config = checkpoint.read_config(project / f"run_{run}" / "model")
    assert config["tasks"] == tasks
    manifests = {t: json.loads((project / "data/tokens" / v / "manifest.json").read_text())
                 for t, v in (("depth", "depth_mask50"), ("insseg", "insseg"))}
    for task in tasks:  # trained against exactly the tokenizers its caches were built with
        assert config["tokenizers"][task]["hash"] == manifests[task]["tokenizer"]["hash"]
    # The vocabulary is derived from the caches, never typed: coords + classes + 2 + codebooks.
    vocab = config["vocab"]
    assert vocab["num_bins"] == 64
    assert vocab["depth_codes"] == (16 if "depth" in tasks else None)
    assert vocab["num_classes"] == (len(manifests["insseg"]["categories"]) if "insseg" in tasks else 0)
    live = json.loads((project / f"run_{run}" / "live" / "metrics.json").read_text())
    assert live["step"] == 3 and math.isfinite(live["loss"]) and live["lr"] > 0
    for task in tasks:
        assert math.isfinite(live[task]["ce"]) and 0 <= live[task]["accuracy"] <= 1
    if "insseg" in tasks:  # the per-slot split is logged beside the overall accuracy
        assert all(0 <= live["insseg"][f"accuracy_{k}"] <= 1 for k in ("box", "class", "mask", "box_first"))
    assert not (project / f"run_{run}" / "state").exists()  # a finished run leaves nothing to resume


def test_interrupted_training_resumes_from_its_last_checkpoint(project, monkeypatch):
    from pipeline.solver import train as loop

    calls = {"n": 0}
    original = loop.clip_gradients

    def crash_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")  # as a killed job: the step-2 checkpoint is on disk
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "clip_gradients", crash_at_step_3)
    result = _train(project, "depth", "resume")
    assert result.exit_code != 0 and not (project / "resume" / "model").exists()
    assert (project / "resume" / "state" / "state.pt").is_file()
    monkeypatch.setattr(loop, "clip_gradients", original)
    result = _train(project, "depth", "resume")
    assert result.exit_code == 0, result.output
    assert "steps 2->4" in result.stderr
    live = json.loads((project / "resume" / "live" / "metrics.json").read_text())
    assert live["step"] == 3  # DVCLive resumed: the step count continues
    rows = (project / "resume" / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2", "3"]


def test_cache_of_another_tokenizer_is_refused(project, tmp_path):
    import shutil

    shutil.copytree(project / "data/tokens", tmp_path / "tokens")
    manifest = tmp_path / "tokens" / "depth_mask50" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tokenizer"]["hash"] = "0" * 16
    manifest.write_text(json.dumps(data))
    result = _invoke(["train-solver", "depth", "--params", str(project / "params.yaml"), "--device", "cpu",
                      "--caches", str(tmp_path / "tokens"), "--out", str(tmp_path / "m"),
                      "--state-dir", str(tmp_path / "s"), "--live-dir", str(tmp_path / "l")], project)
    assert result.exit_code == 1 and "rebuild the cache" in result.stderr
