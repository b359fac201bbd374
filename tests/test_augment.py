"""The solver's augmentation: depth RGB (PAPER_NOTES §6.1: CutDepth, brightness/contrast, gamma, HSV), drawn
per sample in the loader and applied batched on the device; the instance LSJ window and colour jitter.

Hand references replay the documented draw order of `draw_depth` on a generator with the same seed and
apply each op by hand on the full frame; the HSV shift is also checked against torchvision's adjust_hue.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.solver_training.augment import color_jitter, draw_color_jitter
from pipeline.tasks.depth.augment import DEPTH_DRAW_SIZE, augment_depth, depth_view, draw_depth, shift_hsv
from pipeline.tasks.depth.config import DepthAugmentConfig
from pipeline.tasks.depth.task import DepthExamples, collate_depth
from pipeline.tasks.insseg.jitter import Jitter
from tests.tiny import depth_sample

OFF = DepthAugmentConfig(p_photometric=0.0, cutdepth_p=0.0)
ONLY_HUE = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.0, gamma=(1.0, 1.0), hue=20.0,
                              saturation=0.0, value=0.0, cutdepth_p=0.0)


def _frame(seed: int, h: int = 6, w: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 RGB and a depth in metres up to 12 m (beyond the cap) with holes."""
    g = np.random.default_rng(seed)
    depth = g.uniform(0.0, 12.0, (h, w)).astype(np.float32)
    depth[g.random((h, w)) < 0.2] = 0.0
    return g.integers(0, 256, (h, w, 3), dtype=np.uint8), depth


def _apply(cfg: DepthAugmentConfig, rgb: np.ndarray, depth: np.ndarray, view: tuple[int, int], size: int,
           rng: np.random.Generator) -> np.ndarray:
    """One view through draw_depth + augment_depth, as (S, S, 3) float."""
    row = draw_depth(cfg, rgb.shape[1], *view, rng)
    rgb_v, depth_v = depth_view(rgb, depth, *view, size)
    out = augment_depth(torch.from_numpy(rgb_v).permute(2, 0, 1)[None], torch.from_numpy(depth_v)[None, None],
                        torch.from_numpy(row)[None])
    return out[0].permute(1, 2, 0).numpy()


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _raw(h: int = 8, w: int = 12) -> tuple[dict, np.ndarray]:
    """An encoded cache sample (as the WebDataset shard holds it) and its depth in metres."""
    g = np.random.default_rng(0)
    mm = g.integers(0, 12000, (h, w)).astype(np.uint16)  # up to 12 m, some 0 (holes) likely
    views = [{"flip": 0, "x": 0}, {"flip": 1, "x": 4}, {"flip": 0, "x": 2}]
    raw = depth_sample("k0", _png(g.integers(0, 256, (h, w, 3), dtype=np.uint8)), "png", _png(mm),
                             np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2), views)
    # metres as every stage reads them: values outside (1 mm, 10 m) are holes
    return raw, np.where((mm > 1) & (mm < 10000), mm.astype(np.float32) / 1000.0, np.float32(0))


def _views(raw: dict) -> list[tuple[int, int]]:
    return [(v["flip"], v["x"]) for v in json.loads(raw["views.json"])]


@pytest.mark.parametrize("view", [(0, 0), (0, 5), (1, 0), (1, 7)])
def test_cut_depth_writes_depth_over_exactly_the_drawn_full_frame_columns(view):
    cfg = DepthAugmentConfig(p_photometric=0.0, cutdepth_p=1.0)
    for seed in range(20):
        rgb, depth = _frame(seed)
        depth_in = depth.copy()
        out = _apply(cfg, rgb, depth, view, 8, np.random.default_rng(seed))
        ref = np.random.default_rng(seed)
        ref.random()  # the coin
        alpha, beta = ref.random(2)
        W = rgb.shape[1]
        left, width = int(np.floor(alpha * W)), max(int(np.floor((W - alpha * W) * beta * 0.75)), 1)
        # By hand on the full frame (the official order: CutDepth, then flip and crop).
        full = rgb.astype(np.float32) / 255.0
        full[:, left : left + width] = np.clip(depth[:, left : left + width] / 10.0, 0.0, 1.0)[..., None]
        expected, _ = depth_view(full, depth, *view, 8)  # holes stay 0, > 10 m saturates at 1
        np.testing.assert_allclose(out, expected, atol=1e-6)
        np.testing.assert_array_equal(depth, depth_in)  # the target is untouched


def test_zero_probabilities_leave_the_image_unchanged():
    rgb, depth = _frame(1)
    np.testing.assert_array_equal(_apply(OFF, rgb, depth, (1, 3), 8, np.random.default_rng(0)),
                                  depth_view(rgb, depth, 1, 3, 8)[0] / np.float32(255.0))
    raw, _ = _raw()
    s = DepthExamples(8, 3, augment=OFF)(raw)
    rng = np.random.default_rng([3, 0, 0])  # the decoder's (seed, rank, worker) generator
    v = int(rng.integers(3))
    rgb8 = np.asarray(Image.open(io.BytesIO(raw["rgb.png"])))
    view, _ = depth_view(rgb8, np.zeros(rgb8.shape[:2]), *_views(raw)[v], 8)
    np.testing.assert_array_equal(s["image"], view)
    assert s["image"].dtype == np.uint8


def test_decoder_is_deterministic_per_seed():
    raw, _ = _raw()
    cfg = DepthAugmentConfig(p_photometric=0.9, cutdepth_p=0.5)
    decoder = DepthExamples(8, 7, augment=cfg)
    first = [decoder(raw) for _ in range(6)]
    again = DepthExamples(8, 7, augment=cfg)
    for s in first:
        t = again(raw)
        np.testing.assert_array_equal(t["image"], s["image"])
        np.testing.assert_array_equal(t["augment"], s["augment"])
    other = DepthExamples(8, 8, augment=cfg)
    assert any(not np.array_equal(other(raw)["augment"], s["augment"]) for s in first)


@pytest.mark.parametrize("g", [0.8, 1.2])
def test_gamma_with_a_fixed_exponent_is_a_power(g):
    rgb, depth = _frame(2)
    cfg = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.0, gamma=(g, g), hue=0.0,
                             saturation=0.0, value=0.0, cutdepth_p=0.0)
    out = _apply(cfg, rgb, depth, (0, 0), 16, np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (rgb / 255.0) ** g, rtol=1e-5, atol=1e-6)


def test_brightness_contrast_is_albumentations_gain_and_shift():
    rgb, depth = _frame(3)
    cfg = DepthAugmentConfig(p_photometric=1.0, brightness_contrast=0.2, gamma=(1.0, 1.0), hue=0.0,
                             saturation=0.0, value=0.0, cutdepth_p=0.0)
    out = _apply(cfg, rgb, depth, (0, 0), 16, np.random.default_rng(5))
    ref = np.random.default_rng(5)
    ref.random(3)  # the three coins
    gain, shift = ref.uniform(-0.2, 0.2, 2)
    np.testing.assert_allclose(out, np.clip(rgb / 255.0 * (1 + gain) + shift, 0, 1), atol=1e-6)


def test_hue_shift_turns_pure_red_by_hand():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    # +20 OpenCV units = +40°: between red (0°) and yellow (60°), G = 40/60; -40° mirrors it into B.
    np.testing.assert_allclose(shift_hsv(red, 20 / 180, 0, 0).flatten(), [1, 2 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(red, -20 / 180, 0, 0).flatten(), [1, 0, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(red, 1 / 3, 0, 0).flatten(), [0, 1, 0], atol=1e-6)  # 120°: green
    # Through draw_depth + augment_depth (p = 1, hue only): the drawn h ~ U(-20, 20) units moves red by 2h°.
    red8 = np.array([[[255, 0, 0]]], np.uint8)
    for seed in range(10):
        out = _apply(ONLY_HUE, red8, np.ones((1, 1), np.float32), (0, 0), 1, np.random.default_rng(seed))
        ref = np.random.default_rng(seed)
        ref.random(3)
        h = ref.uniform(-1, 1, 3)[0] * 20  # OpenCV units
        expected = [1, 2 * h / 60, 0] if h >= 0 else [1, 0, -2 * h / 60]
        np.testing.assert_allclose(out.flatten(), expected, atol=1e-6)


def test_hue_shift_matches_torchvision_and_saturation_value_are_additive():
    x = torch.from_numpy(_frame(4)[0]).permute(2, 0, 1) / 255.0
    for hue in (-0.11, 0.05, 0.4):
        torch.testing.assert_close(shift_hsv(x, hue, 0, 0), TF.adjust_hue(x, hue), atol=1e-5, rtol=0)
    torch.testing.assert_close(shift_hsv(x, 0, 0, 0), x, atol=1e-6, rtol=0)  # HSV round trip
    pink = torch.tensor([0.5, 0.25, 0.25]).view(3, 1, 1)  # H 0, S 0.5, V 0.5
    np.testing.assert_allclose(shift_hsv(pink, 0, 0.1, 0).flatten(), [0.5, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(pink, 0, 0, 0.1).flatten(), [0.6, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(shift_hsv(pink, 0, 0, 0.7).flatten(), [1.0, 0.5, 0.5], atol=1e-6)  # V clips


def test_a_batch_is_augmented_image_by_image():
    """Rows are independent: the batched op on the collated batch equals each image alone."""
    raw, _ = _raw()
    decoder = DepthExamples(8, 1, augment=DepthAugmentConfig(p_photometric=0.6, cutdepth_p=0.5))
    samples = [decoder(raw) for _ in range(8)]
    batch = collate_depth(samples)
    out = augment_depth(batch["images"], batch["depth"], batch["augment"])
    assert batch["augment"].shape == (8, DEPTH_DRAW_SIZE) and out.dtype == torch.float32
    assert len({tuple(r) for r in batch["augment"].tolist()}) > 1  # the draws differ between images
    for i in range(8):
        one = slice(i, i + 1)
        alone = augment_depth(batch["images"][one], batch["depth"][one], batch["augment"][one])
        torch.testing.assert_close(out[i : i + 1], alone, atol=0, rtol=0)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_decoder_output_keeps_dtype_shape_and_the_depth_target():
    raw, metres = _raw()
    cfg = DepthAugmentConfig(p_photometric=1.0, cutdepth_p=1.0)
    decoder = DepthExamples(8, 0, augment=cfg)
    views = _views(raw)
    for _ in range(5):
        s = decoder(raw)
        assert s["image"].dtype == np.uint8 and s["image"].shape == (8, 8, 3)
        assert s["augment"].dtype == np.float32 and s["augment"].shape == (DEPTH_DRAW_SIZE,)
        assert s["indices"].dtype == np.int64 and s["indices"].shape == (2, 2)
        v = int(np.flatnonzero((np.arange(12).reshape(3, 2, 2) == s["indices"]).all(axis=(1, 2)))[0])
        _, depth = depth_view(metres[..., None].repeat(3, 2), metres, *views[v], 8)
        np.testing.assert_allclose(s["depth"], depth, rtol=1e-6)  # CutDepth never touches the target


def test_color_jitter_is_brightness_then_contrast_then_saturation_per_image():
    rgb = np.stack([_frame(s, 5, 7)[0] for s in (5, 6)])
    factors = np.stack([draw_color_jitter(0.4, np.random.default_rng(s)) for s in (0, 1)])
    assert ((factors >= 0.6) & (factors <= 1.4)).all()
    np.testing.assert_array_equal(draw_color_jitter(0.0, np.random.default_rng(0)), [1, 1, 1])
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    out = color_jitter(images, torch.from_numpy(factors)).permute(0, 2, 3, 1)
    for img, (b, c, s), got in zip(rgb, factors, out.numpy(), strict=True):
        x = img / 255.0 * b
        x = (x - x.mean()) * c + x.mean()
        grey = x.mean(axis=2, keepdims=True)
        np.testing.assert_allclose(got, np.clip((x - grey) * s + grey, 0, 1), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_jitter_window_equals_resizing_the_whole_frame_then_cropping(seed):
    """Only the source under the window is resampled; the pixels are the full resize's up to rounding."""
    g = np.random.default_rng(seed)
    h, w = int(g.integers(60, 120)), int(g.integers(60, 120))
    rgb = np.asarray(Image.fromarray(g.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)).resize((w, h)))
    jitter = Jitter.draw((h, w), 64, (0.1, 3.0), g)
    rh, rw = jitter.resized_hw
    full = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BILINEAR)).astype(np.int16)
    if jitter.flip:
        full = full[:, ::-1]
    expected = np.zeros((64, 64, 3), np.int16)
    window = full[jitter.y0 : jitter.y0 + 64, jitter.x0 : jitter.x0 + 64]
    expected[: window.shape[0], : window.shape[1]] = window
    out = jitter.image(rgb)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert np.abs(out.astype(np.int16) - expected).max() <= 2
    assert (out[window.shape[0] :] == 0).all() and (out[:, window.shape[1] :] == 0).all()  # zero padding
