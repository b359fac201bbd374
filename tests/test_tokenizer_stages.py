"""train_tokenizer@* and eval_tokenizer@* on the tiny demo: outputs, identity hash, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import checkpoint
from stages.cli import app


def _train(project: Path, variant: str, out: Path) -> None:
    # Run outside any git/DVC repository, as a stage would in a fresh project directory.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(out.parent)
        result = CliRunner().invoke(app, [
            "train-tokenizer", variant, "--params", str(project / "params.yaml"),
            "--prepared", str(project / "data/prepared"), "--out", str(out / "model"),
            "--live-dir", str(out / "live"), "--device", "cpu"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def trained(tiny_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizers")
    for variant in ("depth_mask50", "insseg"):
        _train(tiny_project, variant, out / variant)
    return out


@pytest.mark.parametrize("variant, task", [("depth_mask50", "depth"), ("insseg", "insseg")])
def test_checkpoint_carries_config_and_identity(trained, variant, task):
    config = checkpoint.read_config(trained / variant / "model")
    assert config["task"] == task and config["variant"] == variant
    assert len(config["content_hash"]) == 16
    model, _ = checkpoint.load_vqvae(trained / variant / "model")  # rebuilt from config.json, hash verified
    assert model.cfg.num_embeddings == 16
    live = json.loads((trained / variant / "live" / "metrics.json").read_text())
    assert {"loss", "lr", "perplexity", "dead_codes"} <= set(live) and math.isfinite(live["loss"])
    assert (trained / variant / "live" / "plots" / "metrics" / "loss.tsv").is_file()


def test_training_is_deterministic(tiny_project, trained, tmp_path):
    _train(tiny_project, "depth_mask50", tmp_path / "again")
    first = (trained / "depth_mask50" / "model" / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model" / "model.safetensors").read_bytes() == first


def test_corrupt_weights_are_refused(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "insseg" / "model", tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content hash"):
        checkpoint.load_vqvae(tmp_path / "m")


@pytest.mark.parametrize("variant, key", [("depth_mask50", "rmse"), ("insseg", "AP")])
def test_eval_reports_vqvae_next_to_baseline(tiny_project, trained, variant, key, tmp_path):
    result = CliRunner().invoke(app, [
        "eval-tokenizer", variant, "--params", str(tiny_project / "params.yaml"),
        "--prepared", str(tiny_project / "data/prepared"), "--model-dir", str(trained / variant / "model"),
        "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tokenizer_hash"] == checkpoint.read_config(trained / variant / "model")["content_hash"]
    for method in ("vqvae_hard", "vqvae_soft", "interp_baseline"):
        assert math.isfinite(metrics[method][key])
    if variant == "depth_mask50":  # the demo ships complete depth: holes are scored too
        assert metrics["vqvae_hard"]["hole_rmse"] > 0
    assert metrics["codebook"]["unused_codes"] <= 16


def test_unknown_variant_is_one_line(tiny_project):
    result = CliRunner().invoke(app, ["train-tokenizer", "nope", "--params", str(tiny_project / "params.yaml")])
    assert result.exit_code == 1
    assert "tokenizer.variants.nope" in result.stderr
