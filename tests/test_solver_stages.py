"""train_solver@{depth,insseg,joint} on tiny caches: outputs, identity checks, resume after a crash."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from pipeline.core import checkpoint
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
    # The vocabulary is derived from the caches, never typed: coords + classes + 2 + codebooks, and the
    # weights have exactly that many token rows (PAPER_NOTES §4.3).
    params = yaml.safe_load((project / "params.yaml").read_text())["solver"]
    codes = {t: manifests[t]["tokenizer"]["num_embeddings"] if t in tasks else 0 for t in ("depth", "insseg")}
    classes = len(manifests["insseg"]["categories"]) if "insseg" in tasks else 0
    size = params["num_bins"] + 1 + classes + 2 + codes["insseg"] + codes["depth"] + params["spare_codes"]
    with safe_open(project / f"run_{run}" / "model" / checkpoint.WEIGHTS, "pt") as weights:
        rows = {k: weights.get_slice(k).get_shape()[0] for k in ("solver.token_embed", "solver.out_bias")}
    assert rows == {"solver.token_embed": size, "solver.out_bias": size}
    kinds = {"insseg": "mask", "depth": "depth"}
    assert config["vocab"]["codes"] == [[kinds[t], codes[t]] for t in ("insseg", "depth") if t in tasks]
    live = json.loads((project / f"run_{run}" / "live" / "metrics.json").read_text())
    assert live["step"] == 3 and live["lr"] > 0
    # The logged total is the official step loss: each image's weighted task loss, averaged over the
    # images of the step (Σ_t w_t · b_t · L_t / Σ_t b_t, see test_shares.py).
    weights, batch = params["runs"][run].get("loss_weights", {}), params["runs"][run]["batch_size"]
    expected = sum(weights.get(t, 1.0) * batch[t] * live[t]["loss"] for t in tasks) / sum(batch.values())
    assert live["loss"] == pytest.approx(expected, rel=1e-5)
    if "depth" in tasks:  # CE + aux_weight · SiLog (PAPER_NOTES §3.3)
        depth = live["depth"]
        assert depth["loss"] == pytest.approx(depth["ce"] + params["depth"]["aux_weight"] * depth["silog"])
        assert math.isfinite(depth["ce"]) and depth["silog"] > 0
    if "insseg" in tasks:
        # The box, class and mask slots split the supervised tokens: with r real objects among the
        # B·Q queries, 4r box, B·Q class (a noise object supervises its class only) and M·r mask tokens.
        # The overall accuracy is their count-weighted mean for some r.
        ins, (q, b) = live["insseg"], (params["insseg"]["num_query"], batch["insseg"])
        m = manifests["insseg"]["tokens_shape"][1]
        box, cls, mask = (ins[f"accuracy_{k}"] for k in ("box", "class", "mask"))
        means = [(4 * r * box + q * b * cls + m * r * mask) / (4 * r + q * b + m * r)
                 for r in range(q * b + 1)]
        assert any(ins["accuracy"] == pytest.approx(mean, abs=1e-6) for mean in means), ins
        assert math.isfinite(ins["ce"]) and ins["loss"] > ins["ce"]  # the aux Dice + MSE term is on
    assert not (project / f"run_{run}" / "state").exists()  # a finished run leaves nothing to resume


def test_interrupted_training_resumes_from_its_last_checkpoint(project, monkeypatch):
    from pipeline.solver_training import train as loop

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
    shutil.rmtree(project / "resume" / "live")  # as DVC does to a stage's outs before re-running it
    result = _train(project, "depth", "resume")
    assert result.exit_code == 0, result.output
    assert "steps 2->4" in result.stderr
    live = json.loads((project / "resume" / "live" / "metrics.json").read_text())
    assert live["step"] == 3  # DVCLive resumed: the step count continues
    rows = (project / "resume" / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2", "3"]  # the steps before the crash kept


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


def _foreign(layout: str, body) -> dict:
    """`body`'s weights saved as each layout's own code saves them (tests/test_pretrained.py has more)."""
    import torch

    from tests.test_pretrained import official_layout

    official = official_layout(body)
    if layout == "timm":
        return dict(body.state_dict())
    if layout == "swin":
        return {"model": official}
    if layout == "simmim":
        return {"model": {**{f"encoder.{k}": v for k, v in official.items() if not k.startswith("head.")},
                          "encoder.mask_token": torch.zeros(1, 1, 16)}}
    return {"state_dict": {**{f"backbone.{k}": v for k, v in official.items() if not k.startswith("head.")},
                           "roi_head.fc.weight": torch.zeros(2, 2)}, "meta": {"epoch": 1}}


@pytest.mark.parametrize("layout", ["timm", "swin", "simmim", "detector"])
def test_a_run_starts_from_a_foreign_checkpoint_through_the_stage(project, tmp_path, layout):
    """`solver.runs.depth.backbone.weights` pointing at a checkpoint in another project's layout: the stage
    loads every backbone tensor, says so, and records the start (layout, file hash) in the checkpoint."""
    import torch

    from pipeline.core.config import BackboneConfig
    from pipeline.core.io import sha256_file
    from pipeline.models.backbone import build_backbone

    backbone = SOLVER["backbone"]
    cfg = BackboneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in backbone.items()},
                         img_size=48)  # the run's input side: the cached 48-px depth crops
    body = build_backbone(cfg).body
    path = tmp_path / f"{layout}.pth"
    torch.save(_foreign(layout, body), path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["solver"]["runs"]["depth"]["backbone"] = {"weights": str(path)}
    write_params(tmp_path / "params.yaml", params)
    result = _invoke(["train-solver", "depth", "--params", str(tmp_path / "params.yaml"), "--device", "cpu",
                      "--out", str(tmp_path / "model"), "--state-dir", str(tmp_path / "state"),
                      "--live-dir", str(tmp_path / "live")], project)
    assert result.exit_code == 0, result.output
    log = " ".join(result.output.split())  # rich wraps long lines outside a terminal
    assert f"({layout} layout): {len(body.state_dict())} backbone tensors" in log, result.output
    init = checkpoint.read_config(tmp_path / "model")["init"]
    assert init["layout"] == layout and init["sha256"] == sha256_file(path)
    assert init["backbone_tensors"] == len(body.state_dict()) and init["encoder_tensors"] == 0
