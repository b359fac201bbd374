"""`ait inspect cache|sample` on tiny caches, and the viz helpers it draws with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.core import checkpoint, viz
from pipeline.core.config import TokenizerTaskConfig
from pipeline.core.io import read_jsonl
from pipeline.core.params import load_section
from pipeline.data.coco import segmentation_to_mask
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.tasks.depth.evaluate import colorize_depth
from pipeline.tasks.insseg.tokenizer import instance_index
from pipeline.token_cache.read import ZarrTokens
from stages.cli import app
from tests.tiny import tiny_params, write_params

CACHE = {"depth": {"crop_size": 48, "crop_stride": 8, "shard_max_samples": 2},
         "insseg": {"shard_max_samples": 2}}
TASKS = {"depth_mask50": "depth", "insseg": "insseg"}


def _random_tokenizer(directory: Path, params: Path, variant: str, seed: int = 0) -> Path:
    """An untrained (seeded) tokenizer checkpoint with the tiny architecture: enough to decode."""
    task = TASKS[variant]
    cfg = load_section(params, f"tokenizer.{task}", TokenizerTaskConfig)
    torch.manual_seed(seed)
    checkpoint.save(directory, VQVAE(cfg.model), cfg.model,
                    {"kind": "vqvae", "task": task, "variant": variant, "mask_ratio": 0.0,
                     "train": {"crop_size": cfg.train.crop_size}})
    return directory


@pytest.fixture(scope="module")
def caches(tiny_project, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    params = write_params(root / "params.yaml", tiny_params(tiny_project, {"cache": CACHE}))
    for variant in TASKS:
        _random_tokenizer(root / "models" / variant, params, variant)
        result = CliRunner().invoke(app, [
            "cache-tokens", variant, "--params", str(params),
            "--prepared", str(tiny_project / "data/prepared"), "--model-dir", str(root / "models" / variant),
            "--out", str(root / "tokens" / variant), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    return root


def test_inspect_cache_table_shows_counts(caches):
    result = CliRunner().invoke(app, ["inspect", "cache", str(caches / "tokens/depth_mask50")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for line in result.stdout.splitlines()
            if len(cells := [c.strip() for c in line.strip("│").split("│")]) == 8}
    assert rows["train"][1:3] == ["6", "3"] and rows["test"][1:3] == ["3", "2"]  # samples, shards
    assert rows["train"][4] == "216.0"  # 6 views x 6 x 6 tokens


@pytest.mark.parametrize("variant", list(TASKS))
def test_inspect_keys_lists_what_inspect_sample_takes(caches, tiny_project, variant, tmp_path):
    """Every key of both splits, in cache order, each one `ait inspect sample` draws; the prepared
    manifests hold the same keys."""
    path = caches / "tokens" / variant
    result = CliRunner().invoke(app, ["inspect", "keys", str(path)])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    for split in ("train", "test") if variant != "insseg" else ("train", "val"):
        listed = [key for name, key in rows if name == split]
        assert listed == ZarrTokens(path, split).keys
        prepared = tiny_project / "data/prepared" / TASKS[variant] / f"{split}.jsonl"
        assert sorted(listed) == sorted(r["key"] for r in read_jsonl(prepared))
    only = CliRunner().invoke(app, ["inspect", "keys", str(path), "--split", rows[-1][0]])
    assert only.stdout.splitlines() == [f"{n}\t{k}" for n, k in rows if n == rows[-1][0]]
    sample = CliRunner().invoke(app, ["inspect", "sample", str(path), rows[-1][1], "--out",
                                      str(tmp_path / "s.png")])
    assert sample.exit_code == 0, sample.output
    bad = CliRunner().invoke(app, ["inspect", "keys", str(path), "--split", "nope"])
    assert bad.exit_code == 1 and "no split 'nope'" in bad.stderr


@pytest.mark.parametrize("variant", list(TASKS))
def test_inspect_cache_json_matches_the_store(caches, variant):
    path = caches / "tokens" / variant
    result = CliRunner().invoke(app, ["inspect", "cache", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["task"] == TASKS[variant] and summary["num_embeddings"] == 16
    for split, s in summary["splits"].items():
        tars = sorted((path / split).glob("*.tar"))
        assert s["shards"] == len(tars) and s["bytes"] == sum(t.stat().st_size for t in tars)
        tokens = ZarrTokens(path, split)
        flat = np.concatenate([np.ravel(tokens[i]) for i in range(len(tokens))])
        counts = np.bincount(flat, minlength=16)
        p = counts[counts > 0] / counts.sum()
        assert s["samples"] == len(tokens)
        assert s["tokens_per_sample"] == pytest.approx(flat.size / len(tokens))
        assert s["code_usage"] == {"min": counts.min(), "median": np.median(counts), "max": counts.max(),
                                   "perplexity": pytest.approx(float(np.exp(-(p * np.log(p)).sum()))),
                                   "unused_codes": int((counts == 0).sum())}


def test_inspect_sample_depth_png_holds_image_gt_and_decoded_view(caches, tmp_path):
    path = caches / "tokens/depth_mask50"
    key = ZarrTokens(path, "test").keys[0]
    out = tmp_path / "depth.png"
    result = CliRunner().invoke(app, ["inspect", "sample", str(path), key, "--out", str(out)])
    assert result.exit_code == 0, result.output
    png = np.asarray(Image.open(out))
    assert png.shape == (viz.TITLE_HEIGHT + 48, 3 * 48 + 2 * viz.GAP, 3)
    # The third tile is the hard decode of cached view 0 on the scale it shares with the GT tile.
    model, _ = load_vqvae(caches / "models/depth_mask50")
    tokens = ZarrTokens(path, "test")[0][:1].astype(np.int64)
    with torch.no_grad():
        decoded = model.decode(torch.from_numpy(tokens))[0, 0].numpy()
    gt_tile = png[viz.TITLE_HEIGHT :, 48 + viz.GAP : 2 * 48 + viz.GAP]
    lo, hi = viz.shared_range(decoded, _gt_crop(caches, key))
    decoded_tile = png[viz.TITLE_HEIGHT :, 2 * (48 + viz.GAP) :]
    np.testing.assert_array_equal(decoded_tile, colorize_depth(decoded, lo, hi))
    np.testing.assert_array_equal(gt_tile, colorize_depth(_gt_crop(caches, key), lo, hi))


def _gt_crop(caches: Path, key: str) -> np.ndarray:
    from pipeline.tasks.registry import get_task
    from pipeline.token_cache.read import decode_sample, iter_tar_samples

    for shard in sorted((caches / "tokens/depth_mask50/test").glob("*.tar")):
        for sample in iter_tar_samples(shard):
            if sample["__key__"] == key:
                return decode_sample(sample, get_task("depth").cache_fields)["depth"][:, :48]
    raise AssertionError(key)


def test_inspect_sample_insseg_png_has_image_gt_and_decoded_panels(caches, tiny_project, tmp_path):
    path = caches / "tokens/insseg"
    key = ZarrTokens(path, "val").keys[0]
    out = tmp_path / "insseg.png"
    result = CliRunner().invoke(app, ["inspect", "sample", str(path), key, "--out", str(out)])
    assert result.exit_code == 0, result.output
    png = np.asarray(Image.open(out))
    assert png.shape == (viz.TITLE_HEIGHT + 48, 3 * 64 + 2 * viz.GAP, 3)  # three 64x48 frames
    tiles = [png[viz.TITLE_HEIGHT :, k * (64 + viz.GAP) : k * (64 + viz.GAP) + 64] for k in range(3)]
    # Reference from the prepared record: the image as stored, and its tokenised instances drawn with
    # their own GT masks, boxes and category names.
    record = next(r for r in read_jsonl(tiny_project / "data/prepared/insseg/val.jsonl") if r["key"] == key)
    image = np.asarray(Image.open(record["image"]).convert("RGB"))
    anns = [record["annotations"][a] for _, a in instance_index([record])]
    assert anns, "the first val sample has instances to draw"
    names = {c["id"]: c["name"] for c in json.loads((path / "manifest.json").read_text())["categories"]}
    masks = np.stack([segmentation_to_mask(a["segmentation"], 48, 64) for a in anns])
    labels, boxes = [names[a["category_id"]] for a in anns], [a["bbox"] for a in anns]
    gt = viz.overlay_instances(image, masks, labels, boxes)
    np.testing.assert_array_equal(tiles[0], image)
    np.testing.assert_array_equal(tiles[1], gt)
    assert not np.array_equal(tiles[1], tiles[0]) and not np.array_equal(tiles[2], tiles[0])


def test_inspect_sample_refuses_another_tokenizer_and_unknown_keys(caches, tmp_path):
    other = _random_tokenizer(tmp_path / "other", caches / "params.yaml", "depth_mask50", seed=1)
    path = caches / "tokens/depth_mask50"
    key = ZarrTokens(path, "test").keys[0]
    result = CliRunner().invoke(app, ["inspect", "sample", str(path), key, "--out", str(tmp_path / "x.png"),
                                      "--model-dir", str(other)])
    assert result.exit_code == 1 and "tokens were made by tokenizer" in result.stderr
    result = CliRunner().invoke(app, ["inspect", "sample", str(path), "nope",
                                      "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no sample with key 'nope'" in result.stderr
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------------------------------
# viz


def test_colorize_uses_the_given_scale_and_blacks_out_invalid_pixels():
    depth = np.array([[0.0, 1.0, 3.0, np.nan]])
    lo, hi = viz.shared_range(depth, np.array([[2.0, 0.0]]))
    assert (lo, hi) == (1.0, 3.0)  # zeros and NaN are not depths
    rgb = colorize_depth(depth, lo, hi)
    np.testing.assert_array_equal(rgb[0, 1], viz._RAMP[0])  # vmin -> first colour
    np.testing.assert_array_equal(rgb[0, 2], viz._RAMP[-1])  # vmax -> last colour
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 3].tolist() == [0, 0, 0]
    mid = viz.colorize(np.array([[2.0]]), 1.0, 3.0)[0, 0]  # halfway = the middle anchor (9 anchors)
    np.testing.assert_array_equal(mid, viz._RAMP[4])


def test_panel_layout_and_overlay():
    a = np.full((4, 5, 3), 10, np.uint8)
    b = np.full((6, 3), 200, np.uint8)  # grey, taller
    out = viz.panel([a, b], ["", ""])
    assert out.shape == (viz.TITLE_HEIGHT + 6, 5 + viz.GAP + 3, 3)
    assert (out[viz.TITLE_HEIGHT : viz.TITLE_HEIGHT + 4, :5] == 10).all()
    assert (out[viz.TITLE_HEIGHT :, 5 + viz.GAP :] == 200).all()
    assert (out[viz.TITLE_HEIGHT + 4 :, :5] == 255).all()  # shorter tile: background below
    image = np.zeros((4, 4, 3), np.uint8)
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2, :2] = True
    over = viz.overlay_instances(image, masks, [""], alpha=0.5)
    np.testing.assert_array_equal(over[0, 0], np.round(0.5 * viz.instance_colors(1)[0]).astype(np.uint8))
    assert (over[2:, 2:] == 0).all()
