"""train_tokenizer@* and eval_tokenizer@* on the tiny demo: outputs, identity hash, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.io import read_jsonl
from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres
from pipeline.models.vqvae import load_vqvae
from pipeline.tasks.insseg.masks import crop_instance_mask
from pipeline.tasks.registry import get_task
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
    model, _ = load_vqvae(trained / variant / "model")  # rebuilt from config.json, hash verified
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
        load_vqvae(tmp_path / "m")


def _usage(indices: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Unused codes and perplexity exp(H) of a set of code indices, by hand."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
    p = counts[counts > 0] / counts.sum()
    return {"unused_codes": int((counts == 0).sum()), "perplexity": float(torch.exp(-(p * p.log()).sum()))}


def _depth_reference(model, records: list[dict], tau: float) -> dict:
    """The NYU RMSE of the hard and soft reconstructions, the hole RMSE and the code usage, by hand.

    Soft decode as PAPER_NOTES §3.2 with the latent-to-code logits −‖z − e_k‖²: decoder(softmax(τ·logits) @ E).
    """
    rmse: dict[str, list[float]] = {"vqvae_hard": [], "vqvae_soft": [], "hole": []}
    used = []
    codebook = model.quantizer.codebook
    for record in records:
        gt = read_depth_metres(record["depth"])
        assert gt.shape == (48, 64)  # the tiny demo: a multiple of the stride, no padding
        x = torch.from_numpy(gt)[None, None]
        with torch.no_grad():
            indices = model.encode(x)
            z = model.encoder(model.normalize(x))  # (1, D, 6, 8)
            weights = torch.softmax(-tau * torch.cdist(z.flatten(2).transpose(1, 2), codebook[None]) ** 2, -1)
            codes = (weights @ codebook).transpose(1, 2).reshape(z.shape)
            soft = model.denormalize(model.decoder(codes))
            preds = {"vqvae_hard": model.decode(indices), "vqvae_soft": soft}
        used.append(indices)
        crop = np.zeros(gt.shape, bool)
        crop[5:47, 4:60] = True  # the Eigen crop [45:471, 41:601] of 480 x 640, scaled by 1/10, rounded
        valid = crop & (gt > 1e-3) & (gt < 10.0)
        for name, pred in preds.items():
            pred = pred[0, 0].numpy().clip(min=1e-3)
            rmse[name].append(float(np.sqrt(np.mean((pred[valid] - gt[valid]) ** 2))))
        complete = read_depth_metres(record["complete_depth"])
        holes = crop & (gt <= 0) & (complete > 1e-3) & (complete < 10.0)
        if holes.any():
            hard = preds["vqvae_hard"][0, 0].numpy().clip(min=1e-3)
            rmse["hole"].append(float(np.sqrt(np.mean((hard[holes] - complete[holes]) ** 2))))
    assert len(rmse["hole"]) > 0  # the demo's sensor holes are scored
    usage = _usage(torch.cat([u.flatten() for u in used]), model.cfg.num_embeddings)
    return {k: float(np.mean(v)) for k, v in rmse.items()} | usage


def _mask_usage(model, records: list[dict], crop_size: int) -> dict[str, float]:
    """Code usage over the unflipped GT-box crops of every non-crowd instance, by hand."""
    crops = []
    for record in records:
        for ann in record["annotations"]:
            mask = segmentation_to_mask(ann["segmentation"], record["height"], record["width"])
            crop = None if ann["iscrowd"] else crop_instance_mask(mask, ann["bbox"], crop_size)
            if crop is not None:
                crops.append(crop)
    assert len(crops) > 5
    with torch.no_grad():
        indices = model.encode(torch.from_numpy(np.stack(crops))[:, None])
    return _usage(indices, model.cfg.num_embeddings)


@pytest.mark.parametrize("variant, key", [("depth_mask50", "rmse"), ("insseg", "AP")])
def test_eval_reports_vqvae_next_to_baseline(tiny_project, trained, variant, key, tmp_path):
    model_dir = trained / variant / "model"
    model, config = load_vqvae(model_dir)
    held_out = get_task(config["task"]).splits[1]
    records = read_jsonl(tiny_project / "data/prepared" / config["task"] / f"{held_out}.jsonl")
    if variant == "depth_mask50":
        # After six training steps the decoder output sits below the 1 mm floor, where every decode
        # scores alike, and barely depends on the codes. A new checkpoint maps the output y to
        # 3 m + 50·(y − mean y), so that the RMSEs below measure reconstructions that differ.
        last = model.decoder[-1]
        with torch.no_grad():
            x = torch.from_numpy(read_depth_metres(records[0]["depth"]))[None, None]
            mean = float(model.decode(model.encode(x)).mean())
            last.weight *= 50.0
            last.bias.copy_(50.0 * last.bias + 3.0 - 50.0 * mean)
        model_dir = tmp_path / "spread"
        meta = {k: v for k, v in config.items() if k not in ("architecture", "content_hash")}
        config = checkpoint.save(model_dir, model, config["architecture"], meta)
    result = CliRunner().invoke(app, [
        "eval-tokenizer", variant, "--params", str(tiny_project / "params.yaml"),
        "--prepared", str(tiny_project / "data/prepared"), "--model-dir", str(model_dir),
        "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tokenizer_hash"] == config["content_hash"]
    for method in ("vqvae_hard", "vqvae_soft", "interp_baseline"):
        assert math.isfinite(metrics[method][key])
    # Negative control: the baseline is scored on its own reconstructions, not a copy of the VQ-VAE's.
    assert metrics["interp_baseline"][key] != metrics["vqvae_hard"][key]
    if variant == "depth_mask50":
        params = yaml.safe_load((tiny_project / "params.yaml").read_text())
        ref = _depth_reference(model.eval(), records, params["evaluate"]["tokenizer"]["depth"]["tau"])
        assert metrics["num_images"] == len(records) == 3
        assert metrics["vqvae_hard"]["rmse"] == pytest.approx(ref["vqvae_hard"], rel=1e-5)
        assert metrics["vqvae_soft"]["rmse"] == pytest.approx(ref["vqvae_soft"], rel=1e-5)
        assert abs(ref["vqvae_soft"] - ref["vqvae_hard"]) > 1e-4  # far beyond the tolerance: told apart
        # the demo ships complete depth: the sensor holes are scored against it
        assert metrics["vqvae_hard"]["hole_rmse"] == pytest.approx(ref["hole"], rel=1e-5)
    else:
        ref = _mask_usage(model.eval(), records, config["train"]["crop_size"])
    assert metrics["codebook"]["unused_codes"] == ref["unused_codes"]
    assert metrics["codebook"]["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-6)


def test_unknown_variant_is_one_line(tiny_project):
    params = str(tiny_project / "params.yaml")
    result = CliRunner().invoke(app, ["train-tokenizer", "nope", "--params", params])
    assert result.exit_code == 1
    assert "tokenizer.variants.nope" in result.stderr
