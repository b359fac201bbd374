"""The depth solver's RGB augmentation (AiT ref §6.1): CutDepth, brightness/contrast, gamma, HSV.

Hand references replay the documented draw order of `cut_depth` / `photometric` on a generator with the
same seed; the HSV shift is also checked against torchvision's adjust_hue.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.solver.augment import DepthAugmentConfig, cut_depth, depth_view, photometric, shift_hsv
from pipeline.solver.samples import DepthDecoder
from pipeline.tokens import write

OFF = DepthAugmentConfig(p_photometric=0.0, cutdepth_p=0.0)
ONLY_HUE = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.0, gamma=(1.0, 1.0), hue=20.0,
                              saturation=0.0, value=0.0, cutdepth_p=0.0)


def _frame(seed: int, h: int = 6, w: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A random float RGB in [0, 1] and a depth in metres up to 12 m (beyond the cap) with holes."""
    g = np.random.default_rng(seed)
    depth = g.uniform(0.0, 12.0, (h, w)).astype(np.float32)
    depth[g.random((h, w)) < 0.2] = 0.0
    return g.random((h, w, 3), dtype=np.float32), depth


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _raw(h: int = 8, w: int = 12) -> tuple[dict, np.ndarray]:
    """An encoded cache sample (as the WebDataset shard holds it) and its depth in metres."""
    g = np.random.default_rng(0)
    mm = g.integers(0, 12000, (h, w)).astype(np.uint16)  # up to 12 m, some 0 (holes) likely
    views = [{"flip": 0, "x": 0}, {"flip": 1, "x": 4}, {"flip": 0, "x": 2}]
    raw = write.depth_sample("k0", _png(g.integers(0, 256, (h, w, 3), dtype=np.uint8)), "png", _png(mm),
                             np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2), views)
    return raw, mm.astype(np.float32) / 1000.0


def _views(raw: dict) -> list[tuple[int, int]]:
    return [(v["flip"], v["x"]) for v in json.loads(raw["views.json"])]


def test_cut_depth_writes_depth_over_exactly_the_drawn_columns():
    for seed in range(20):
        rgb, depth = _frame(seed)
        rgb_in, depth_in = rgb.copy(), depth.copy()
        out = cut_depth(rgb, depth, 1.0, np.random.default_rng(seed))
        ref = np.random.default_rng(seed)
        ref.random()  # the coin
        alpha, beta = ref.random(2)
        W = rgb.shape[1]
        left, width = int(np.floor(alpha * W)), max(int(np.floor((W - alpha * W) * beta * 0.75)), 1)
        cols = np.zeros(W, bool)
        cols[left : left + width] = True
        expected = np.clip(depth / 10.0, 0.0, 1.0)  # holes stay 0, > 10 m saturates at 1
        for c in range(3):
            np.testing.assert_array_equal(out[:, cols, c], expected[:, cols])
        np.testing.assert_array_equal(out[:, ~cols], rgb_in[:, ~cols])
        np.testing.assert_array_equal(depth, depth_in)  # the target is untouched
        np.testing.assert_array_equal(rgb, rgb_in)  # and so is the input image (a copy is returned)


def test_zero_probabilities_leave_the_image_unchanged():
    rgb, depth = _frame(1)
    assert cut_depth(rgb, depth, 0.0, np.random.default_rng(0)) is rgb
    np.testing.assert_array_equal(photometric(rgb, OFF, np.random.default_rng(0)), rgb)
    raw, _ = _raw()
    s = DepthDecoder(8, OFF, seed=3)(raw)
    rng = np.random.default_rng([3, 0, 0])  # the decoder's (seed, rank, worker) generator
    v = int(rng.integers(3))
    rgb8 = np.asarray(Image.open(io.BytesIO(raw["rgb.png"])))
    flip, x = _views(raw)[v]
    view, _ = depth_view(rgb8.astype(np.float32) / 255.0, np.zeros(rgb8.shape[:2]), flip, x, 8)
    np.testing.assert_array_equal(s["image"], view)


def test_decoder_is_deterministic_per_seed():
    raw, _ = _raw()
    cfg = DepthAugmentConfig(p_photometric=0.9, cutdepth_p=0.5)
    decoder = DepthDecoder(8, cfg, seed=7)
    first = [decoder(raw)["image"] for _ in range(6)]
    again = DepthDecoder(8, cfg, seed=7)
    for img in first:
        np.testing.assert_array_equal(again(raw)["image"], img)
    other = DepthDecoder(8, cfg, seed=8)
    assert any(not np.array_equal(other(raw)["image"], img) for img in first)


@pytest.mark.parametrize("g", [0.8, 1.2])
def test_gamma_with_a_fixed_exponent_is_a_power(g):
    rgb, _ = _frame(2)
    cfg = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.0, gamma=(g, g), hue=0.0,
                             saturation=0.0, value=0.0, cutdepth_p=0.0)
    out = photometric(rgb, cfg, np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, rgb.astype(np.float64) ** g, rtol=1e-5, atol=1e-6)


def test_brightness_contrast_is_albumentations_gain_and_shift():
    rgb, _ = _frame(3)
    cfg = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.2, gamma=(1.0, 1.0), hue=0.0,
                             saturation=0.0, value=0.0, cutdepth_p=0.0)
    out = photometric(rgb, cfg, np.random.default_rng(5))
    ref = np.random.default_rng(5)
    ref.random(3)  # the three coins
    gain, shift = ref.uniform(-0.2, 0.2, 2)
    np.testing.assert_allclose(out, np.clip(rgb * (1 + gain) + shift, 0, 1), atol=1e-6)


def test_hue_shift_turns_pure_red_by_hand():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    # +20 OpenCV units = +40°: between red (0°) and yellow (60°), G = 40/60; -40° mirrors it into B.
    np.testing.assert_allclose(shift_hsv(red, 20 / 180, 0, 0).flatten(), [1, 2 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(red, -20 / 180, 0, 0).flatten(), [1, 0, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(red, 1 / 3, 0, 0).flatten(), [0, 1, 0], atol=1e-6)  # 120°: green
    # Through `photometric` (p = 1, hue only): the drawn shift h ~ U(-20, 20) units moves red by 2h°.
    for seed in range(10):
        out = photometric(np.array([[[1.0, 0.0, 0.0]]], np.float32), ONLY_HUE, np.random.default_rng(seed))
        ref = np.random.default_rng(seed)
        ref.random(3)
        h = ref.uniform(-1, 1, 3)[0] * 20  # OpenCV units
        expected = [1, 2 * h / 60, 0] if h >= 0 else [1, 0, -2 * h / 60]
        np.testing.assert_allclose(out.flatten(), expected, atol=1e-6)


def test_hue_shift_matches_torchvision_and_saturation_value_are_additive():
    x = torch.from_numpy(_frame(4)[0]).permute(2, 0, 1)
    for hue in (-0.11, 0.05, 0.4):
        torch.testing.assert_close(shift_hsv(x, hue, 0, 0), TF.adjust_hue(x, hue), atol=1e-5, rtol=0)
    torch.testing.assert_close(shift_hsv(x, 0, 0, 0), x, atol=1e-6, rtol=0)  # HSV round trip
    pink = torch.tensor([0.5, 0.25, 0.25]).view(3, 1, 1)  # H 0, S 0.5, V 0.5
    np.testing.assert_allclose(shift_hsv(pink, 0, 0.1, 0).flatten(), [0.5, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(pink, 0, 0, 0.1).flatten(), [0.6, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(pink, 0, 0, 0.7).flatten(), [1.0, 0.5, 0.5], atol=1e-6)  # V clips


def test_decoder_output_keeps_dtype_shape_range_and_the_depth_target():
    raw, metres = _raw()
    cfg = DepthAugmentConfig(p_photometric=1.0, cutdepth_p=1.0)
    decoder = DepthDecoder(8, cfg, seed=0)
    views = _views(raw)
    for _ in range(5):
        s = decoder(raw)
        img = s["image"]
        assert img.dtype == np.float32 and img.shape == (8, 8, 3)
        assert img.min() >= 0.0 and img.max() <= 1.0 and np.isfinite(img).all()
        assert s["indices"].dtype == np.int64 and s["indices"].shape == (2, 2)
        v = int(np.flatnonzero((np.arange(12).reshape(3, 2, 2) == s["indices"]).all(axis=(1, 2)))[0])
        _, depth = depth_view(metres[..., None].repeat(3, 2), metres, *views[v], 8)
        np.testing.assert_allclose(s["depth"], depth, rtol=1e-6)  # CutDepth never touches the target
