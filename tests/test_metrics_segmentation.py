"""Semseg metrics by hand: confusion-matrix mIoU / accuracies, the per-pixel majority, label colours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.viz import colorize_labels, label_palette
from pipeline.tasks.semseg.metrics import ConfusionMatrix, PixelMajority, class_histogram

# 3x4 example, N = 3; the two GT-0 pixels (right column, rows 0-1) carry predictions 3 and 1.
GT = np.array([[1, 1, 2, 0],
               [1, 2, 2, 0],
               [3, 3, 2, 2]])
PRED = np.array([[1, 2, 2, 3],
                 [1, 2, 1, 1],
                 [3, 1, 2, 2]])
# By hand over the 10 labelled pixels, (gt, pred) pairs:
#   row 0: (1,1) (1,2) (2,2); row 1: (1,1) (2,2) (2,1); row 2: (3,3) (3,1) (2,2) (2,2).
# class 1: TP 2, GT 3 -> FN 1, predicted 1 on labelled pixels 4 -> FP 2; IoU = 2 / (2+2+1) = 2/5
# class 2: TP 4, GT 5 -> FN 1, predicted 2 five times -> FP 1;          IoU = 4 / (4+1+1) = 2/3
# class 3: TP 1, GT 2 -> FN 1, predicted 3 once (r0c3 is GT 0, ignored) -> FP 0; IoU = 1/2
# mIoU = (2/5 + 2/3 + 1/2) / 3 = (36 + 60 + 45) / 270 = 47/90
# pixel accuracy = (2 + 4 + 1) / 10 = 7/10
# mean class accuracy = (2/3 + 4/5 + 1/2) / 3 = (20 + 24 + 15) / 90 = 59/90
HAND = {"miou": 47 / 90, "pixel_accuracy": 0.7, "mean_class_accuracy": 59 / 90,
        "per_class_iou": {1: 2 / 5, 2: 2 / 3, 3: 1 / 2}, "num_pixels": 10}


def _scored(pairs, num_classes: int = 3) -> dict:
    cm = ConfusionMatrix(num_classes)
    for pred, gt in pairs:
        cm.add(pred, gt)
    return cm.result()


def _assert_close(result: dict, expected: dict) -> None:
    assert result["num_pixels"] == expected["num_pixels"]
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    assert result["per_class_iou"].keys() == expected["per_class_iou"].keys()
    for c, iou in expected["per_class_iou"].items():
        assert result["per_class_iou"][c] == (None if iou is None else pytest.approx(iou, abs=1e-12)), c


def test_hand_computed_miou_and_accuracies():
    _assert_close(_scored([(PRED, GT)]), HAND)


def test_gt_zero_pixels_are_ignored_whatever_is_predicted():
    other = PRED.copy()
    other[GT == 0] = 2  # change only predictions on unlabelled pixels
    _assert_close(_scored([(other, GT)]), HAND)


def test_absent_classes_are_excluded_and_reported_none():
    expected = dict(HAND, per_class_iou={**HAND["per_class_iou"], 4: None, 5: None})
    _assert_close(_scored([(PRED, GT)], num_classes=5), expected)


def test_class_only_in_the_prediction_counts_with_iou_zero():
    pred = PRED.copy()
    pred[0, 1] = 4  # was (1, 2): class 2 loses its FP, class 4 gets one, GT class 1 still misses it
    result = _scored([(pred, GT)], num_classes=4)
    # class 2: TP 4, FP 0, FN 1 -> 4/5; class 4: union 1, IoU 0; mIoU = (2/5 + 4/5 + 1/2 + 0) / 4
    # and class 1: TP 2, FP 2 (r1c2, r2c1), FN 1 -> 2/5 unchanged.
    assert result["per_class_iou"] == pytest.approx({1: 2 / 5, 2: 4 / 5, 3: 1 / 2, 4: 0.0})
    assert result["miou"] == pytest.approx((2 / 5 + 4 / 5 + 1 / 2) / 4)
    assert result["mean_class_accuracy"] == pytest.approx(59 / 90)  # GT-present classes only


def test_predicted_zero_is_a_miss_of_the_gt_class():
    pred = PRED.copy()
    pred[0, 0] = 0  # was a TP of class 1: now TP 1, FN 2, FP 2 -> IoU 1/5
    result = _scored([(pred, GT)])
    assert result["per_class_iou"][1] == pytest.approx(1 / 5)
    assert result["pixel_accuracy"] == pytest.approx(6 / 10)


def test_streaming_two_halves_equals_one_shot():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (20, 30))
    pred = rng.integers(1, 6, (20, 30))
    one_shot = _scored([(pred, gt)], num_classes=5)
    halves = _scored([(pred[:7], gt[:7]), (pred[7:], gt[7:])], num_classes=5)
    assert halves == one_shot
    _assert_close(_scored([(PRED[:1], GT[:1]), (PRED[1:], GT[1:])]), HAND)


def test_no_labelled_pixel_gives_nan_and_bad_ids_raise():
    result = _scored([(PRED, np.zeros_like(GT))])
    assert result["num_pixels"] == 0 and math.isnan(result["miou"]) and math.isnan(result["pixel_accuracy"])
    assert all(v is None for v in result["per_class_iou"].values())
    with pytest.raises(ValueError, match="0..3"):
        ConfusionMatrix(3).add(PRED + 1, GT)
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).add(PRED[:2], GT)


# Tiny training stack, N = 3, 2x3 maps; column 2 is never labelled.
STACK = [np.array([[1, 2, 0], [3, 2, 0]]),
         np.array([[1, 3, 0], [1, 3, 0]]),
         np.array([[2, 3, 0], [2, 0, 0]])]


def test_pixel_majority_with_lower_id_tie_rule():
    majority = PixelMajority(3)
    for labels in STACK:
        majority.add(labels)
    # (0,0): 1,1,2 -> 1.  (0,1): 2,3,3 -> 3.  (1,0): 3,1,2, a three-way tie -> lowest id 1.
    # (1,1): 2,3,(0 ignored), a tie -> 2.  Column 2 never labelled -> the global majority:
    # totals class 1: 3, class 2: 4, class 3: 4 -> tie between 2 and 3 -> 2.
    expected = np.array([[1, 3, 2], [1, 2, 2]])
    result = majority.result()
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)
    assert majority.counts.dtype == np.uint32 and majority.counts.shape == (4, 2, 3)
    assert majority.counts[0].sum() == 0  # unlabelled pixels cast no vote


def test_pixel_majority_rejects_a_new_shape():
    majority = PixelMajority(3)
    majority.add(STACK[0])
    with pytest.raises(ValueError, match="shape"):
        majority.add(np.ones((3, 2), dtype=np.int64))


def test_class_histogram_counts_unlabelled_at_index_zero():
    counts = class_histogram(iter(STACK), 3)
    np.testing.assert_array_equal(counts, [7, 3, 4, 4])  # 18 pixels; zeros: 2 + 2 + 3
    assert counts.dtype == np.int64


def test_colorize_labels_fixed_palette():
    labels = np.array([[0, 1, 2], [3, 4, 150]])

    rgb = colorize_labels(labels, 150)

    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    # PASCAL VOC palette: 0 black, then bit-interleaved half-intensity corners.
    np.testing.assert_array_equal(rgb[0], [[0, 0, 0], [128, 0, 0], [0, 128, 0]])
    np.testing.assert_array_equal(rgb[1, :2], [[128, 128, 0], [0, 0, 128]])
    palette = label_palette(150)
    assert len({tuple(c) for c in palette}) == 151  # every class its own colour
    np.testing.assert_array_equal(colorize_labels(labels, 150), rgb)  # deterministic
    with pytest.raises(ValueError, match="0..3"):
        colorize_labels(labels, 3)
