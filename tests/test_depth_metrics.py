"""Depth metrics vs hand-computed values, eval crop, depth losses, mask augmentation, depth baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.tasks.depth import metrics as M
from pipeline.tasks.depth.interp import (
    depth_interp_decode,
    depth_interp_encode,
    depth_interp_reconstruct,
    valid_cell_means,
)
from pipeline.tasks.depth.losses import mse_ignore_zero, silog_loss
from pipeline.tasks.depth.mask_augment import num_masked_patches, random_patch_mask

# Two valid pixels: pred [2, 1], gt [1, 1] -> thr [2, 1], d [1, 0], e [ln 2, 0].
PRED = np.array([2.0, 1.0])
GT = np.array([1.0, 1.0])
LN2 = math.log(2.0)


def test_per_image_functions_by_hand():
    assert M.delta_accuracy(PRED, GT, 1) == 0.5  # 2 >= 1.25, 1 < 1.25
    assert M.delta_accuracy(PRED, GT, 3) == 0.5  # 1.25³ = 1.953 < 2
    assert M.delta_accuracy(np.array([1.9]), np.array([1.0]), 3) == 1.0
    assert M.abs_rel(PRED, GT) == pytest.approx(0.5)  # (1/1 + 0/1) / 2
    assert M.sq_rel(PRED, GT) == pytest.approx(0.5)  # (1/1 + 0) / 2
    assert M.rmse(PRED, GT) == pytest.approx(math.sqrt(0.5))
    assert M.rmse_log(PRED, GT) == pytest.approx(math.sqrt(LN2**2 / 2))
    assert M.log10_error(PRED, GT) == pytest.approx(math.log10(2.0) / 2)
    # mean e² = ln²2 / 2, mean e = ln2 / 2: sqrt(ln²2/2 − 0.5 · ln²2/4) = ln2 · sqrt(3/8)
    assert M.silog(PRED, GT) == pytest.approx(LN2 * math.sqrt(3 / 8))


def test_eval_crop_constants_and_scaling():
    assert M.NYU_EVAL_CROP == (slice(45, 471), slice(41, 601))
    assert M.eval_crop(480, 640) == M.NYU_EVAL_CROP
    # 45/4 = 11.25 -> 11, 471/4 = 117.75 -> 118, 41/4 = 10.25 -> 10, 601/4 = 150.25 -> 150
    assert M.eval_crop(120, 160) == (slice(11, 118), slice(10, 150))
    # 45/2 = 22.5 rounds half up -> 23
    assert M.eval_crop(240, 320)[0] == slice(23, 236)


def test_eval_mask_range_and_crop():
    gt = np.full((480, 640), 2.0)
    gt[100, 100] = 0.0  # hole
    gt[101, 100] = 10.0  # at MAX_DEPTH: excluded (strict <)
    gt[102, 100] = 1e-3  # at MIN_DEPTH: excluded (strict >)
    mask = M.eval_mask(gt)
    assert mask.sum() == (471 - 45) * (601 - 41) - 3
    assert not mask[44, 300] and mask[45, 300] and mask[470, 300] and not mask[471, 300]
    assert not mask[200, 40] and mask[200, 41] and mask[200, 600] and not mask[200, 601]


def test_depth_metrics_on_a_tiny_map():
    # 480x640 gt of 1 m; the prediction is 2 m on exactly half the valid crop, exact elsewhere.
    gt = np.ones((480, 640))
    pred = np.ones((480, 640))
    pred[45:258, 41:601] = 2.0  # 213 of the 426 cropped rows
    pred[0:10, :] = np.inf  # outside the crop: ignored even though non-finite
    metrics = M.depth_metrics(pred, gt)
    assert set(metrics) == set(M.METRIC_NAMES)
    assert metrics["d1"] == pytest.approx(0.5)
    assert metrics["abs_rel"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(0.5))
    assert metrics["silog"] == pytest.approx(LN2 * math.sqrt(3 / 8))


def test_depth_metrics_repairs_non_finite_predictions():
    gt = np.full((480, 640), 5.0)
    pred = np.full((480, 640), 5.0)
    pred[45, 41] = np.inf  # -> 10 m: thr 2, |d| = 5
    pred[45, 42] = np.nan  # -> 1e-3 m
    m = M.depth_metrics(pred, gt)
    n = 426 * 560
    assert m["d1"] == pytest.approx((n - 2) / n)
    assert m["abs_rel"] == pytest.approx((1.0 + (5.0 - 1e-3) / 5.0) / n)


def test_mean_metrics_averages_images_not_pixels():
    assert M.mean_metrics([{"rmse": 1.0, "d1": 0.5}, {"rmse": 3.0, "d1": 1.0}]) == {"rmse": 2.0, "d1": 0.75}
    with pytest.raises(ValueError):
        M.mean_metrics([])


def test_depth_losses_by_hand():
    pred = torch.tensor([[2.0, 1.0, 7.0]])
    target = torch.tensor([[1.0, 1.0, 0.0]])  # the third pixel is invalid
    assert mse_ignore_zero(pred, target).item() == pytest.approx(0.5)
    assert mse_ignore_zero(pred, torch.zeros_like(target)).item() == 0.0
    # d = log gt − log pred = [−ln2, 0]: sqrt(ln²2/2 − 0.5·ln²2/4)
    assert silog_loss(pred, target).item() == pytest.approx(LN2 * math.sqrt(3 / 8), rel=1e-6)
    # Predictions are clipped at 1e-3 before the log.
    clipped = silog_loss(torch.tensor([-1.0]), torch.tensor([1e-3]), lam=0.0)
    assert clipped.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("H", "W", "ratio"), [(64, 64, 0.5), (48, 80, 0.3), (40, 56, 0.7)])
def test_patch_mask_zeros_exactly_the_expected_patches(H, W, ratio):
    depth = 1.0 + torch.rand(3, 1, H, W, generator=torch.Generator().manual_seed(0))
    count, total = num_masked_patches(H, W, ratio, patch=16)
    assert count == math.floor(ratio * total + 0.5)

    masked = random_patch_mask(depth, ratio, patch=16, generator=torch.Generator().manual_seed(1))

    gh, gw = math.ceil(H / 16), math.ceil(W / 16)
    padded = torch.nn.functional.pad(masked, (0, gw * 16 - W, 0, gh * 16 - H), value=0.0)
    zeroed = (padded.view(3, gh, 16, gw, 16) != 0).sum(dim=(2, 4)) == 0  # (B, gh, gw) fully-zero patches
    assert (zeroed.sum(dim=(1, 2)) == count).all()
    # Every other pixel is untouched: rebuild the masked map from the patch decisions alone.
    keep = (~zeroed).repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None, :H, :W]
    assert torch.equal(masked, depth * keep)
    assert not torch.equal(masked[0] == 0, masked[1] == 0)  # independent per sample


def test_paper_patch_count_and_determinism():
    assert num_masked_patches(480, 480, 0.5) == (450, 900)  # PAPER_NOTES §2
    depth = torch.ones(2, 1, 32, 48)
    a = random_patch_mask(depth, 0.5, generator=torch.Generator().manual_seed(7))
    b = random_patch_mask(depth, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(random_patch_mask(depth, 0.0), depth)


def test_depth_interpolation_baseline():
    depth = torch.full((2, 1, 64, 96), 3.0)
    indices = depth_interp_encode(depth, (2, 3))
    # 3 m in 128 bins of 10/128 m: floor(3 · 12.8) = 38, centre (38.5) · 10/128 = 3.0078 m
    assert indices.shape == (2, 2, 3) and (indices == 38).all()
    assert torch.allclose(depth_interp_decode(indices, (64, 96)), torch.tensor(38.5 * 10 / 128))
    assert depth_interp_encode(torch.full((1, 1, 4, 4), 25.0), (1, 1)).item() == 127
    ramp = torch.linspace(1, 5, 96).expand(1, 1, 64, 96)
    assert (depth_interp_reconstruct(ramp, (2, 3)) - ramp).abs().mean() < 0.3


def test_fair_interpolation_ignores_holes_and_fills_empty_cells_from_the_nearest():
    # 4x6 map on a 2x3 grid of 2x2 cells; 0 m = sensor hole.
    depth = torch.tensor([[2.0, 0.0, 5.0, 5.0, 0.0, 0.0],
                          [4.0, 0.0, 5.0, 5.0, 0.0, 0.0],
                          [0.0, 0.0, 1.0, 3.0, 8.0, 8.0],
                          [0.0, 0.0, 1.0, 3.0, 8.0, 0.0]])[None, None]
    cells = valid_cell_means(depth, (2, 3))[0]
    # top row: mean of {2, 4} = 3; all 5; empty -> nearest valid is (0,1)=5 and (1,2)=8 at distance 1:
    # the tie goes to the lower row-major index, (0,1). bottom: empty -> (0,0)=3 (distance 1, first);
    # mean of {1, 3, 1, 3} = 2; mean of {8, 8, 8} = 8 (the hole is not averaged in as 0 m).
    assert cells.tolist() == [[3.0, 5.0, 5.0], [3.0, 2.0, 8.0]]
    # the literal rule samples the holes: its (1, 2) cell is pulled below 8 m, its (1, 0) cell is 0 m
    literal = depth_interp_encode(depth, (2, 3), "literal")[0]
    fair = depth_interp_encode(depth, (2, 3), "fair")[0]
    assert fair[1, 0] == int(3.0 * 12.8) and literal[1, 0] == 0
    assert fair[1, 2] == int(8.0 * 12.8) > literal[1, 2]
    # an all-hole map has nothing to average: bin 0 everywhere rather than NaN
    assert (depth_interp_encode(torch.zeros(1, 1, 4, 6), (2, 3)) == 0).all()
