"""Solver evaluation: window/flip stitching, the mean-depth baseline, the COCO path and `ait evaluate`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.io import read_jsonl
from pipeline.data.coco import segmentation_to_mask
from pipeline.geometry.windows import letterbox, predict_windows, window_offsets
from pipeline.tasks.depth.evaluate import mean_depth_map
from pipeline.tasks.depth.metrics import METRIC_NAMES
from pipeline.tasks.insseg.evaluate import box_hits, coco_metrics, coco_results
from tests.test_solver_stages import _invoke, _train, project  # noqa: F401  (module fixture reused)

# -------------------------------------------------------------------------------------------------
# depth test-time protocol


def test_window_offsets_follow_the_official_protocol():
    assert window_offsets(640, 480) == [0, 160]  # paper: two 480² windows (PAPER_NOTES §5.1)
    assert window_offsets(160, 120) == [0, 40]  # demo frames
    assert window_offsets(480, 480) == [0]
    assert window_offsets(640, 480, shift=False) == [80]  # one centred window
    with pytest.raises(ValueError):
        window_offsets(100, 120)


def _column_images(n: int, size: int, width: int) -> torch.Tensor:
    """(n, 3, S, W): red = global column + 1, green = image index, blue = 0."""
    x = torch.arange(width, dtype=torch.float32) + 1
    images = torch.zeros(n, 3, size, width)
    images[:, 0] = x
    images[:, 1] = torch.arange(n, dtype=torch.float32)[:, None, None]
    return images


class LocalColumnModel:
    """A fake solver: red + 10·green + the column index INSIDE the window (not flip-equivariant)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        self.batches.append(views.shape[0])
        local = torch.arange(views.shape[-1], dtype=torch.float32)
        return (views[:, :1] + 10 * views[:, 1:2] + local).clone()


def test_flips_are_undone_and_averaged():
    S, W = 4, 6
    fake = LocalColumnModel()
    depth = predict_windows(_column_images(2, S, W), fake, S, flip_tta=True)
    assert fake.batches == [2 * 2 * 2]  # 2 images x 2 windows x 2 flips in ONE call
    # a view sees local column j, its mirror (S-1-j): un-flipped and averaged -> (S-1)/2 everywhere
    x = torch.arange(W, dtype=torch.float32) + 1
    for n in range(2):
        torch.testing.assert_close(depth[n, 0], (x + 10 * n + (S - 1) / 2).expand(S, W))


def test_overlapping_windows_are_averaged_per_column():
    S, W = 4, 6
    depth = predict_windows(_column_images(1, S, W), LocalColumnModel(), S, flip_tta=False)
    # window x=0 gives (x+1) + x on columns 0-3; window x=2 gives (x+1) + (x-2) on 2-5; 2-3 are averaged
    expected = torch.tensor([1.0, 3.0, 4.0, 6.0, 7.0, 9.0])
    torch.testing.assert_close(depth[0, 0], expected.expand(S, W))


def test_single_centred_window_fills_uncovered_columns_from_its_edges():
    S, W = 4, 6
    images = _column_images(1, S, W)
    depth = predict_windows(images, LocalColumnModel(), S, flip_tta=False, shift_windows=False)
    # one window at x=1: (x+1) + (x-1) = 2x on columns 1-4; columns 0 and 5 copy columns 1 and 4
    torch.testing.assert_close(depth[0, 0], torch.tensor([2.0, 2.0, 4.0, 6.0, 8.0, 8.0]).expand(S, W))


def test_predictions_are_clipped_at_1mm(monkeypatch):
    from pipeline.tasks.depth import task as depth_task
    from pipeline.tasks.depth.config import DepthInferConfig

    negative = lambda v: torch.full((v.shape[0], 1, 4, 4), -1.0)  # noqa: E731
    # the window stitching is shared by the dense tasks: it never clips ...
    assert torch.all(predict_windows(torch.zeros(1, 3, 4, 4), negative, 4) == -1.0)
    # ... the depth task does, after stitching (PAPER_NOTES §4.4 inference step 3)
    monkeypatch.setattr(depth_task, "depth_predictor", lambda *args: negative)
    model = torch.nn.Linear(1, 1)  # only its device is read
    depth = depth_task.infer_depth(model, None, None, DepthInferConfig(), np.zeros((1, 4, 4, 3), np.uint8), 4)
    assert np.all(depth == np.float32(1e-3))


def test_letterbox_keeps_aspect_and_pads_bottom_right():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    boxed, scale = letterbox(image, 60)
    assert scale == 2.0 and boxed.shape == (60, 60, 3) and boxed.dtype == np.float32
    assert np.all(boxed[:, 40:] == 0) and boxed[:, :40].max() > 0
    same, one = letterbox(image, 30)
    assert one == 1.0 and np.allclose(same[:, :20], image / 255.0, atol=1e-6)


def _tiny_parallel_ait(vocab):
    from pipeline.models.ait import build_ait
    from pipeline.models.backbone import BackboneConfig
    from pipeline.models.solver import SolverConfig

    torch.manual_seed(0)
    backbone = BackboneConfig(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 2, 2), drop_path_rate=0.0)
    solver = SolverConfig(dim=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                          dropout=0.0, drop_path=0.0, max_seq_len=84, parallel=True)
    return build_ait(backbone, solver, vocab).eval()


def _tiny_tokenizer(ratio: int, scale: str):
    from pipeline.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(1)
    return VQVAE(VQVAEConfig(hidden_dim=8, downsample_ratio=ratio, num_embeddings=16, embedding_dim=16,
                             input_scale=scale)).eval()


def test_parallel_solver_depth_is_one_teacher_forced_pass():
    from pipeline.core.vocab import Vocab
    from pipeline.tasks.depth import task as depth_task
    from pipeline.tasks.depth.config import DepthInferConfig
    from pipeline.tasks.depth.task import infer_depth

    vocab = Vocab.build(num_bins=16, num_classes=0, mask_codes=None, depth_codes=16)
    model, tokenizer = _tiny_parallel_ait(vocab), _tiny_tokenizer(8, "none")
    cfg = DepthInferConfig(tau=0.8, flip_tta=False)
    rgb = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    depth = infer_depth(model, tokenizer, vocab, cfg, rgb, 32)
    # AiT-P inputs carry position only: any teacher-forced tokens give the same logits (PAPER_NOTES §4.4)
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        logits = model(images, depth_task.TASK_ID, torch.zeros(1, 15, dtype=torch.long))
    expected = depth_task.predict_depth(logits, tokenizer, (4, 4), vocab, soft_decode=True, tau=0.8)
    np.testing.assert_allclose(depth, expected[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_instances_come_back_in_original_pixels_with_dataset_category_ids():
    from pipeline.core.vocab import Vocab
    from pipeline.tasks.insseg.config import InssegInferConfig, InssegTaskConfig
    from pipeline.tasks.insseg.task import infer_instances

    vocab = Vocab.build(num_bins=64, num_classes=3, mask_codes=16, depth_codes=None)
    model, tokenizer = _tiny_parallel_ait(vocab), _tiny_tokenizer(16, "symmetric")
    cfg = InssegTaskConfig(num_query=4, image_size=64)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), rng.integers(0, 256, (40, 20, 3), np.uint8)]
    preds = infer_instances(model, tokenizer, vocab, cfg, InssegInferConfig(), images, [11, 22, 33])
    for image, pred in zip(images, preds, strict=True):
        n, (h, w) = len(pred["scores"]), image.shape[:2]
        assert pred["boxes_xyxy"].shape == (n, 4) and pred["masks"].shape == (n, h, w)
        assert set(pred["category_ids"].tolist()) <= {11, 22, 33}
        assert np.all((pred["scores"] > 0) & (pred["scores"] <= 1))
        # coords <= image_size in the letterboxed frame, / scale (= 64 / long side) in original pixels
        assert np.all(pred["boxes_xyxy"] >= 0) and np.all(pred["boxes_xyxy"] <= max(h, w) + 1e-4)


# -------------------------------------------------------------------------------------------------
# baselines and metrics


def test_mean_depth_map_averages_valid_pixels_and_falls_back_to_the_global_mean():
    a = np.array([[1.0, 0.0], [2.0, 20.0]])  # 0 = hole, 20 m > MAX_DEPTH: both invalid
    b = np.array([[3.0, 0.0], [0.0, 4.0]])
    # valid pixels: 1, 2, 3, 4 -> global mean 2.5 for the never-valid pixel (0, 1)
    np.testing.assert_allclose(mean_depth_map([a, b]), [[2.0, 2.5], [2.0, 4.0]])
    with pytest.raises(ValueError):
        mean_depth_map([a, np.ones((3, 2))])


def _coco_records() -> tuple[list[dict], list[dict]]:
    def ann(i, cat, x, y, w, h):
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        return {"id": i, "category_id": cat, "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": 0,
                "segmentation": [poly]}

    records = [
        {"key": "a", "image_id": 1, "image": "a.jpg", "width": 40, "height": 30,
         "annotations": [ann(1, 5, 2, 3, 12, 10), ann(2, 7, 20, 10, 15, 18)]},
        {"key": "b", "image_id": 2, "image": "b.jpg", "width": 40, "height": 30,
         "annotations": [ann(3, 5, 5, 5, 20, 20)]},
    ]
    return records, [{"id": 5, "name": "cup"}, {"id": 7, "name": "tv"}]


def _perfect_prediction(record: dict) -> dict[str, np.ndarray]:
    anns = record["annotations"]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
    masks = np.array([segmentation_to_mask(a["segmentation"], record["height"], record["width"]) > 0
                      for a in anns])
    return {"boxes_xyxy": boxes, "category_ids": np.array([a["category_id"] for a in anns]),
            "scores": np.ones(len(anns), np.float32), "masks": masks}


def test_coco_path_scores_a_perfect_prediction_1_and_an_empty_one_0():
    records, categories = _coco_records()
    results = [r for rec in records for r in coco_results(rec["image_id"], _perfect_prediction(rec))]
    assert results[0]["bbox"] == [2.0, 3.0, 12.0, 10.0] and results[0]["segmentation"]["size"] == [30, 40]
    perfect = coco_metrics(records, categories, results)
    for iou_type in ("bbox", "segm"):
        assert perfect[iou_type]["AP"] == pytest.approx(1.0)
        assert perfect[iou_type]["AP50"] == pytest.approx(1.0)
    empty = coco_metrics(records, categories, [])
    assert empty["bbox"]["AP"] == 0.0 and empty["segm"]["AP"] == 0.0


def test_image_blind_prior_predicts_the_frequent_classes_at_their_median_box():
    from pipeline.tasks.insseg.evaluate import class_prior, prior_results

    def record(image_id, width, height, anns):
        return {"key": str(image_id), "image_id": image_id, "image": f"{image_id}.jpg", "width": width,
                "height": height, "annotations": [
                    {"id": 10 * image_id + i, "category_id": c, "bbox": b, "area": float(b[2] * b[3]),
                     "iscrowd": crowd, "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2],
                                                         b[1] + b[3], b[0], b[1] + b[3]]]}
                    for i, (c, b, crowd) in enumerate(anns)]}

    cup, tv = [4, 3, 12, 9], [20, 15, 8, 6]  # in a 40 x 30 frame
    train = [record(1, 40, 30, [(5, cup, 0), (7, tv, 0)]), record(2, 40, 30, [(5, cup, 0), (7, tv, 1)]),
             record(3, 80, 60, [(5, [2 * v for v in cup], 0)])]  # same relative box at twice the size
    prior = class_prior(train, k=1)
    assert [(c, share) for c, share, _ in prior] == [(5, 0.75)]  # the crowd tv does not count
    np.testing.assert_allclose(prior[0][2], [0.1, 0.1, 0.3, 0.3])
    assert [c for c, _, _ in class_prior(train, k=5)] == [5, 7]
    categories = [{"id": 5, "name": "cup"}, {"id": 7, "name": "tv"}]
    hit = [record(4, 80, 60, [(5, [8, 6, 24, 18], 0)])]
    results = prior_results(hit, prior)
    assert results[0]["bbox"] == pytest.approx([8, 6, 24, 18])
    metrics = coco_metrics(hit, categories, results)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)
    miss = [record(5, 80, 60, [(7, [8, 6, 24, 18], 0)])]  # right place, other class
    assert coco_metrics(miss, categories, prior_results(miss, prior))["bbox"]["AP"] == 0.0


def test_panels_show_every_part_side_by_side():
    from pipeline.core.viz import GAP, TITLE_HEIGHT
    from pipeline.tasks.depth.evaluate import depth_panel
    from pipeline.tasks.insseg.evaluate import instance_panel

    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (30, 40)).astype(np.float32)
    gt[:5] = 0  # holes stay black in GT and error maps
    picture = depth_panel(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), gt, gt + 0.5)
    assert picture.shape == (TITLE_HEIGHT + 30, 4 * 40 + 3 * GAP, 3)
    assert np.all(picture[TITLE_HEIGHT : TITLE_HEIGHT + 5, 40 + GAP : 80 + GAP] == 0)
    records, categories = _coco_records()
    image = np.full((30, 40, 3), 128, np.uint8)
    pred = _perfect_prediction(records[0])
    pred["scores"] = np.array([0.9, 0.1], np.float32)  # the second falls under the 0.3 threshold
    picture = instance_panel(image, pred, records[0], {c["id"]: c["name"] for c in categories}, 0.3)
    assert picture.shape == (TITLE_HEIGHT + 30, 2 * 40 + GAP, 3)
    shown, truth = picture[TITLE_HEIGHT:, :40], picture[TITLE_HEIGHT:, 40 + GAP :]
    assert np.any(shown[5:12, 4:12] != 128) and np.all(shown[20:26, 24:32] == 128)  # only the first
    assert np.any(truth[20:26, 24:32] != 128)  # the GT shows both


# -------------------------------------------------------------------------------------------------
# the stage on tiny trained artifacts


def _evaluate(project: Path, run: str, tag: str, *extra: str):  # noqa: F811
    return _invoke(["evaluate", run, "--params", str(project / "params.yaml"), "--device", "cpu",
                    "--model-dir", str(project / tag / "model"), "--out", str(project / tag / "eval"),
                    "--num-panels", "2", *extra], project)


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return isinstance(tree, (int, float)) and math.isfinite(tree)


def _png_panels(directory: Path) -> list[Path]:
    panels = sorted(directory.glob("*.png"))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 100 for p in panels)
    return panels


def _spy_on_depth_inference(monkeypatch) -> list[dict]:
    """Record every `predict_windows` of the stage: its images, the views the model saw, the predictions
    for them and the stitched depth it returned.

    A 4-step model can predict the 1 mm floor everywhere, which no averaging changes; so each prediction
    gets 1 m + its view's mean + a ramp over the view's own columns: not mirror-symmetric, so the
    stitched depth shows whether (and how) mirrored views were averaged."""
    from pipeline.tasks import dense  # where the dense tasks look up the window protocol
    from pipeline.tasks.depth import task as infer  # where infer_depth looks up its predictor

    calls: list[dict] = []
    predictor, predict_windows = infer.depth_predictor, dense.predict_windows

    def spy_predictor(*args, **kwargs):
        predict = predictor(*args, **kwargs)

        def recorded(views: torch.Tensor) -> torch.Tensor:
            ramp = torch.arange(views.shape[-1], dtype=torch.float32) / views.shape[-1]
            preds = predict(views) + 1.0 + views.mean((1, 2, 3))[:, None, None, None] + ramp
            calls[-1]["views"], calls[-1]["preds"] = views.clone(), preds
            return preds

        return recorded

    def spy_windows(images, predict, size, *args, **kwargs):
        calls.append({"images": images.clone(), "size": size})
        calls[-1]["depth"] = predict_windows(images, predict, size, *args, **kwargs)
        return calls[-1]["depth"]

    monkeypatch.setattr(infer, "depth_predictor", spy_predictor)
    monkeypatch.setattr(dense, "predict_windows", spy_windows)
    return calls


def _check_window_protocol(call: dict, flip: bool) -> None:
    """The views and the stitched depth of one recorded call against a hand-built reference: per image,
    each window's crop (then, with flip TTA, its mirror); the depth of a column is the mean over the
    windows covering it of the crop's prediction (averaged with the un-mirrored mirror prediction)."""
    images, S = call["images"], call["size"]
    N, W = images.shape[0], images.shape[-1]
    offsets = window_offsets(W, S)
    assert len(offsets) > 1  # overlapping windows: the averaging is exercised
    crops = [images[n, :, :, x : x + S] for n in range(N) for x in offsets]
    views = [v for crop in crops for v in ([crop, crop.flip(-1)] if flip else [crop])]
    assert torch.equal(call["views"], torch.stack(views))
    preds = call["preds"].view(N, len(offsets), 2 if flip else 1, 1, S, S)
    expected = torch.zeros(N, 1, S, W)
    unflipped = torch.zeros(N, 1, S, W)  # the same without the mirror pass: the negative control
    for n in range(N):
        for col in range(W):
            covering = [(k, col - x) for k, x in enumerate(offsets) if x <= col < x + S]
            own = [preds[n, k, 0, :, :, j] for k, j in covering]
            mirrored = [preds[n, k, 1, :, :, S - 1 - j] for k, j in covering] if flip else own
            expected[n, :, :, col] = sum((a + b) / 2 for a, b in zip(own, mirrored, strict=True)) / len(own)
            unflipped[n, :, :, col] = sum(own) / len(own)
    torch.testing.assert_close(call["depth"], expected.clamp_min(1e-3))
    if flip:
        assert (call["depth"] - unflipped.clamp_min(1e-3)).abs().max() > 1e-4  # the mirror pass counts


def test_evaluate_depth_run(project, monkeypatch):  # noqa: F811
    assert _train(project, "depth", "ev_depth").exit_code == 0
    calls = _spy_on_depth_inference(monkeypatch)
    result = _evaluate(project, "depth", "ev_depth")
    assert result.exit_code == 0, result.output
    # params.yaml's official protocol: overlapping windows and their mirrors, averaged (PAPER_NOTES §5.1)
    assert calls and sum(len(c["images"]) for c in calls) == 3  # every test image of the tiny demo
    for call in calls:
        _check_window_protocol(call, flip=True)
    metrics = json.loads((project / "ev_depth/eval/metrics.json").read_text())
    assert set(metrics) == {"depth"} and _finite(metrics)
    depth = metrics["depth"]
    for name in ("model", "mean_depth_baseline", "median_depth_baseline", "tokenizer_upper_bound"):
        assert set(depth[name]) == set(METRIC_NAMES)
    assert depth["rmse_gain_vs_mean"] == pytest.approx(
        1 - depth["model"]["rmse"] / depth["mean_depth_baseline"]["rmse"])
    spread = depth["spread_vs_mean_map"]
    assert spread["pred_rms_deviation"] > 0 and spread["gt_rms_deviation"] > 0
    panels = _png_panels(project / "ev_depth/eval/panels")
    assert len(panels) == 2 and all(p.name.startswith("depth_") for p in panels)
    assert sorted(p.name for p in _png_panels(project / "ev_depth/eval/live/plots/images")) == \
        [p.name for p in panels]


def test_evaluate_insseg_run(project):  # noqa: F811
    assert _train(project, "insseg", "ev_insseg").exit_code == 0
    result = _evaluate(project, "insseg", "ev_insseg", "--max-images", "3")
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "ev_insseg/eval/metrics.json").read_text())
    assert set(metrics) == {"insseg"} and _finite(metrics)
    assert metrics["insseg"]["num_images"] == 3
    for iou_type in ("bbox", "segm"):
        assert set(metrics["insseg"][iou_type]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert set(metrics["insseg"]["prior_baseline"][iou_type]) == set(metrics["insseg"][iou_type])
    results = json.loads((project / "ev_insseg/eval/insseg_results.json").read_text())
    assert len(results) == metrics["insseg"]["num_detections"]
    # the hit counts are those of the written results against the evaluated images' GT
    records = read_jsonl(project / "data/prepared/insseg/val.jsonl")[:3]
    assert metrics["insseg"]["hits"] == box_hits(records, results)
    assert metrics["insseg"]["hits"]["gt_objects"] == sum(
        not a.get("iscrowd", 0) for r in records for a in r["annotations"]) > 0
    assert all({"image_id", "category_id", "score", "bbox", "segmentation"} <= set(r) for r in results)
    assert len(_png_panels(project / "ev_insseg/eval/panels")) == 2


def test_evaluate_refuses_a_tokenizer_other_than_the_trained_one(project, tmp_path):  # noqa: F811
    from pipeline.core import checkpoint
    from pipeline.models.vqvae import load_vqvae

    assert _train(project, "depth", "ev_hash").exit_code == 0
    model, config = load_vqvae(project / "models/tokenizer/depth_mask50")
    with torch.no_grad():
        model.quantizer.codebook.add_(1.0)  # a different, valid checkpoint
    checkpoint.save(tmp_path / "tok" / "depth_mask50", model, config["architecture"])
    shutil.copytree(project / "models/tokenizer/insseg", tmp_path / "tok" / "insseg")
    result = _evaluate(project, "depth", "ev_hash", "--tokenizers", str(tmp_path / "tok"))
    assert result.exit_code == 1 and "is not the" in result.stderr and "Traceback" not in result.output


def test_evaluate_reads_its_options_from_params(project, monkeypatch):  # noqa: F811
    """`evaluate` in params.yaml (what `dvc exp run -S evaluate.…` changes) drives the stage."""
    import yaml

    assert _train(project, "depth", "ev_params").exit_code == 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"] |= {"max_images": 1, "num_panels": 1}
    params["evaluate"]["depth"]["flip_tta"] = False
    path = project / "params_eval.yaml"
    path.write_text(yaml.safe_dump(params))
    out = project / "ev_params"
    calls = _spy_on_depth_inference(monkeypatch)
    result = _invoke(["evaluate", "depth", "--params", str(path), "--device", "cpu",
                      "--model-dir", str(out / "model"), "--out", str(out / "eval")], project)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and len(calls[0]["images"]) == 1  # max_images
    _check_window_protocol(calls[0], flip=False)  # no mirrored view reached the model
    assert json.loads((project / "ev_params/eval/metrics.json").read_text())["depth"]["num_images"] == 1
    assert len(_png_panels(project / "ev_params/eval/panels")) == 1
