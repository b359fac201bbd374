"""SwinV2 backbone wrapper: NCHW stage-4 features vs timm, input normalisation, padding, layer-decay ids
(local checkpoints: test_pretrained.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models.backbone import BackboneConfig, build_backbone, layer_id, num_lr_layers

TINY = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), img_size=64, window_size=4)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def tiny():
    """The raw timm body (no input normalisation) so outputs compare with timm's directly."""
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(**TINY, normalize=False)).eval()


def _images(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_features_are_nchw_stage4_with_final_norm(tiny):
    backbone = copy.deepcopy(tiny)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # an initial final norm is ~the identity on SwinV2's post-normed stage 4
        for p in backbone.body.norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = _images(2, 3, 64, 96)  # a 2 x 3 grid: a transposed map would not even have the right shape
    with torch.no_grad():
        out = backbone(x)
        # The reference is timm's classifier path (patch embed, stages, final norm), which is NHWC:
        # the timm quirk this module pins.
        nhwc = backbone.body.forward_features(x)
        stage4 = backbone.body.layers(backbone.body.patch_embed(x))  # before the final norm
    assert backbone.out_channels == 256 and out.shape == (2, 256, 2, 3) and nhwc.shape == (2, 2, 3, 256)
    torch.testing.assert_close(out, nhwc.permute(0, 3, 1, 2))
    assert (out - stage4.permute(0, 3, 1, 2)).abs().max() > 0.1  # negative control: the norm is applied


def test_any_size_build_matches_strict_timm_model_at_nominal_size(tiny):
    import timm

    strict = timm.create_model("swinv2_tiny_window8_256", num_classes=0, **TINY).eval()
    strict.load_state_dict(tiny.body.state_dict())
    x = _images(1, 3, 64, 64, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), strict.forward_features(x).permute(0, 3, 1, 2))


def test_normalize_standardises_with_the_imagenet_statistics_and_adds_no_weights(tiny):
    normed = build_backbone(BackboneConfig(**TINY)).eval()
    normed.body.load_state_dict(tiny.body.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed(x), tiny((x - mean) / std))
    assert set(normed.state_dict()) == {f"body.{k}" for k in tiny.body.state_dict()}  # checkpoints unchanged


def _between_image_fraction(backbone, images: torch.Tensor) -> float:
    """Variance between images (per channel and position) over the variance of all feature values."""
    with torch.no_grad():
        f = backbone(images).flatten(2)  # (N, C, S)
    return float(f.var(0).mean() / f.var())


def test_normalisation_keeps_images_apart_in_a_fresh_backbone(shared_data):
    """From scratch, raw [0, 1] RGB gives nearly one stage-4 vector for every image (the patch embedding's
    LayerNorm divides out the brightness that dominates each patch); standardised input does not."""
    from pipeline.data.nyu import read_rgb

    paths = sorted((shared_data / "nyuv2_sample/sync").rglob("rgb_*.jpg"))
    images = torch.from_numpy(np.stack([read_rgb(p)[:128, :128] for p in paths])).permute(0, 3, 1, 2) / 255.0
    fractions = {}
    for normalize in (False, True):
        torch.manual_seed(0)
        backbone = build_backbone(BackboneConfig(**TINY | {"img_size": 128}, normalize=normalize)).eval()
        fractions[normalize] = _between_image_fraction(backbone, images.float())
    assert len(paths) >= 3 and fractions[True] > 2 * fractions[False], fractions


@pytest.mark.parametrize(("h", "w", "grid"), [(60, 80, (2, 3)), (96, 64, (3, 2)), (33, 31, (2, 1))])
def test_non_multiple_inputs_are_zero_padded_to_stride_32(tiny, h, w, grid):
    x = _images(1, 3, h, w, seed=2)
    padded = F.pad(x, (0, grid[1] * 32 - w, 0, grid[0] * 32 - h))  # bottom/right zeros
    with torch.no_grad():
        out = tiny(x)
        assert out.shape == (1, 256, *grid)
        assert torch.equal(out, tiny(padded))


def test_layer_ids_follow_the_official_swin_numbering():
    depths = (2, 2, 18, 2)  # SwinV2-B: 29 groups, scale = decay ** (28 - id) (PAPER_NOTES §4.6)
    assert num_lr_layers(depths) == 29
    p = "backbone.body."
    expected = {
        "patch_embed.proj.weight": 0,
        "layers.0.blocks.0.attn.qkv.weight": 1,
        "layers.0.blocks.1.mlp.fc1.bias": 2,
        "layers.1.downsample.reduction.weight": 3,  # official layers.0.downsample: sum([3]) = 3
        "layers.1.blocks.0.norm1.weight": 4,
        "layers.2.downsample.norm.bias": 6,
        "layers.2.blocks.17.attn.logit_scale": 24,
        "layers.3.downsample.reduction.weight": 25,
        "layers.3.blocks.1.attn.cpb_mlp.0.weight": 27,
        "norm.weight": 28,
    }
    assert {n: layer_id(p + n, depths, prefix=p) for n in expected} == expected
    assert layer_id("solver.token_embed", depths, prefix=p) == 28


def test_layer_ids_cover_every_tiny_backbone_parameter_in_order(tiny):
    ids = [layer_id(n, tiny.depths, prefix="body.") for n, _ in tiny.named_parameters()]
    assert min(ids) == 0 and max(ids) == num_lr_layers(tiny.depths) - 1 == 8
    assert ids == sorted(ids)  # timm registers parameters in forward order


def test_grad_checkpointing_gives_the_same_outputs_and_gradients():
    # Training mode with drop-path on: the recomputed forward must replay the same random draws.
    cfg = {**TINY, "drop_path_rate": 0.5}
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = build_backbone(BackboneConfig(**cfg, grad_checkpointing=checkpointing)).train()
        assert all(s.grad_checkpointing is checkpointing for s in backbone.body.layers)
        torch.manual_seed(1)
        out = backbone(_images(2, 3, 64, 64, seed=5))
        out.square().sum().backward()
        grads.append((out.detach(), {n: p.grad for n, p in backbone.named_parameters()}))
    (plain, plain_grads), (ckpt, ckpt_grads) = grads
    torch.testing.assert_close(ckpt, plain)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, msg=name)
