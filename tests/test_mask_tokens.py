"""Mask crops and paste-back, the NN mask baseline, dice loss, RLE and COCO mAP (synthetic + real sample)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.tasks.insseg.interp import mask_interp_encode, mask_interp_reconstruct
from pipeline.tasks.insseg.losses import dice_loss
from pipeline.tasks.insseg.masks import crop_instance_mask, flip_crop, paste_mask, rounded_box
from pipeline.tasks.insseg.metrics import coco_mask_map, encode_rle

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_sample"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_paste_back_of_a_rectangle_has_iou_one():
    mask = np.zeros((100, 120), dtype=np.uint8)
    mask[20:70, 30:101] = 1
    bbox = (30.0, 20.0, 71.0, 50.0)  # the rectangle's own xywh box

    crop = crop_instance_mask(mask, bbox)
    pasted = paste_mask(crop, bbox, mask.shape)

    assert crop.shape == (64, 64) and crop.dtype == np.float32 and (crop == 1).all()
    assert pasted.dtype == np.uint8
    assert _iou(pasted.astype(bool), mask.astype(bool)) == 1.0


def test_crop_is_soft_and_paste_recovers_an_ellipse():
    yy, xx = np.mgrid[:90, :130]
    mask = ((((yy - 45) / 30.0) ** 2 + ((xx - 60) / 50.0) ** 2) <= 1).astype(np.uint8)
    bbox = (10.0, 15.0, 101.0, 61.0)

    crop = crop_instance_mask(mask, bbox)
    pasted = paste_mask(crop, bbox, mask.shape)

    assert 0.0 <= crop.min() and crop.max() <= 1.0
    assert ((crop > 0) & (crop < 1)).any()  # bilinear keeps soft edges
    assert _iou(pasted.astype(bool), mask.astype(bool)) > 0.97


def test_box_rounding_clamping_and_skipping():
    assert rounded_box((10.4, 5.6, 20.2, 30.3), (100, 100)) == (10, 6, 31, 36)
    assert rounded_box((-3.0, 90.0, 20.0, 30.0), (100, 100)) == (0, 90, 17, 100)  # clamped
    assert rounded_box((10.0, 10.0, 1.4, 30.0), (100, 100)) is None  # side < 2 px
    mask = np.ones((50, 50), dtype=np.uint8)
    assert crop_instance_mask(mask, (5.0, 5.0, 1.0, 1.0)) is None
    assert paste_mask(np.ones((64, 64)), (5.0, 5.0, 1.0, 1.0), (50, 50)).sum() == 0


def test_flip_crop_matches_crop_of_flipped_mask():
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[10:30, 12:20] = 1
    mask[10:18, 20:44] = 1  # an L shape in the box x 12..44
    bbox = (12.0, 10.0, 32.0, 20.0)
    flipped_bbox = (60 - 12.0 - 32.0, 10.0, 32.0, 20.0)

    expected = crop_instance_mask(mask[:, ::-1].copy(), flipped_bbox)

    assert np.allclose(flip_crop(crop_instance_mask(mask, bbox)), expected)


def test_mask_interpolation_baseline():
    masks = torch.zeros(2, 64, 64)
    masks[0, :32, :] = 1.0  # top half: exactly representable on a 4x4 grid
    masks[1, 5:9, 5:9] = 1.0  # a small blob that nearest sampling misses
    masks[1, 16:28, 32:48] = 1.0  # 12 of a cell's 16 rows: on by area, missed by nearest sampling

    # fair: each 16x16 cell's area average >= 0.5; the 4x4 blob covers 1/16 of its cell
    expected = torch.zeros(2, 4, 4, dtype=torch.long)
    expected[0, :2] = 1
    expected[1, 1, 2] = 1
    assert torch.equal(mask_interp_encode(masks), expected)
    recon = mask_interp_reconstruct(masks)
    assert torch.equal(recon[0], masks[0])
    assert recon[1].sum() == 16 * 16

    # literal: nearest 64 -> 4 samples pixel 16·i of each axis (pixel rows 0, 16, 32, 48): row 16 is
    # inside the 12-row block, so it is seen; the blob between samples is missed
    literal = mask_interp_encode(masks, method="literal")
    assert torch.equal(literal[0], expected[0]) and literal[1].sum() == 1 and literal[1, 1, 2] == 1
    masks[1, 16:28, 32:48] = 0.0
    masks[1, 17:29, 32:48] = 1.0  # same area, shifted off the sampled row: fair keeps it, literal misses it
    assert mask_interp_encode(masks)[1, 1, 2] == 1 and mask_interp_encode(masks, method="literal")[1].sum() == 0


def test_dice_loss_by_hand():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert dice_loss(target, target).item() == pytest.approx(0.0)
    # p = [1, 0, 1, 0]: 1 − (2·1 + 1) / (2 + 2 + 1) = 0.4; values outside [0, 1] are clipped first
    assert dice_loss(torch.tensor([[3.0, -1.0, 1.0, 0.0]]), target).item() == pytest.approx(0.4)
    both = dice_loss(torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]), target.repeat(2, 1))
    assert both.item() == pytest.approx(0.2)  # per-instance mean


def _synthetic_coco():
    from pycocotools.coco import COCO

    masks = {i: np.zeros(hw, np.uint8) for i, hw in ((1, (40, 50)), (2, (40, 50)), (3, (30, 30)))}
    masks[1][5:20, 5:30] = 1
    masks[2][22:38, 10:45] = 1
    masks[3][3:25, 4:18] = 1
    images = [{"id": 1, "height": 40, "width": 50}, {"id": 2, "height": 30, "width": 30}]
    anns = []
    for ann_id, img_id in ((1, 1), (2, 1), (3, 2)):
        ys, xs = np.nonzero(masks[ann_id])
        x0, y0 = float(xs.min()), float(ys.min())
        bbox = [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]
        anns.append({
            "id": ann_id, "image_id": img_id, "category_id": 1 + ann_id % 2, "iscrowd": 0,
            "area": float(masks[ann_id].sum()), "bbox": bbox, "segmentation": encode_rle(masks[ann_id]),
        })  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    gt.createIndex()
    return gt, masks


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under numpy 2
def test_encode_rle_is_json_ready_and_round_trips():
    from pycocotools import mask as mask_utils

    mask = np.zeros((7, 9), np.uint8)
    mask[2:5, 1:8] = 1
    rle = encode_rle(mask)
    json.dumps(rle)
    assert rle["size"] == [7, 9] and isinstance(rle["counts"], str)
    assert np.array_equal(mask_utils.decode(rle), mask)


def test_coco_mask_map_perfect_wrong_and_empty(capsys):
    gt, masks = _synthetic_coco()
    capsys.readouterr()  # drop createIndex's own chatter
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
         "segmentation": encode_rle(masks[a["id"]])}
        for a in gt.dataset["annotations"]
    ]  # fmt: skip
    wrong_class = [dict(r, category_id=3 - r["category_id"]) for r in perfect]

    assert coco_mask_map(gt, perfect)["AP"] == pytest.approx(1.0)
    assert coco_mask_map(gt, wrong_class)["AP"] == pytest.approx(0.0)
    assert coco_mask_map(gt, [])["AP50"] == pytest.approx(0.0)
    assert coco_mask_map(gt, perfect[:2], img_ids=[1])["AP"] == pytest.approx(1.0)
    assert "segmentation" in perfect[0] and "area" not in perfect[0]  # caller's dicts untouched
    assert capsys.readouterr().out == ""  # COCOeval printing is suppressed


@pytest.mark.skipif(not COCO_SAMPLE.is_dir(), reason=f"real COCO sample not found at {COCO_SAMPLE}")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 `copy=` warning
def test_real_coco_crop_paste_upper_bound():
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_SAMPLE / "annotations" / "instances_sample.json"))
    img_ids = sorted(gt.getImgIds())[:20]  # half the sample keeps the test under a second
    results = {"crop64": [], "nn4x4": []}
    for ann in gt.loadAnns(gt.getAnnIds(imgIds=img_ids, iscrowd=False)):
        mask = gt.annToMask(ann)
        crop = crop_instance_mask(mask, ann["bbox"])
        if crop is None:
            continue
        nn4 = mask_interp_reconstruct(torch.from_numpy(crop)[None], method="literal")[0].numpy()
        for name, c in (("crop64", crop), ("nn4x4", nn4)):
            pasted = paste_mask(c, ann["bbox"], mask.shape)
            results[name].append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                                  "score": 1.0, "segmentation": encode_rle(pasted)})  # fmt: skip

    crop_ap = coco_mask_map(gt, results["crop64"], img_ids=img_ids)["AP"]
    nn_ap = coco_mask_map(gt, results["nn4x4"], img_ids=img_ids)["AP"]
    # The 64x64 crop/paste round trip alone (a perfect tokenizer) is nearly lossless (AP ~1.0; the
    # paper's tokenizer reaches 0.893); the 4x4 nearest baseline is far below (paper Table 12).
    print(f"real COCO sample: crop64 AP {crop_ap:.4f}, nn4x4 AP {nn_ap:.4f}")
    assert crop_ap > 0.9
    assert nn_ap < crop_ap - 0.3
