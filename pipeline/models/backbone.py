"""SwinV2 image backbone of the task-solver: a thin wrapper over `timm.create_model` -> NCHW stage-4 maps.

Follows PAPER_NOTES §4.1: only stage 4 is used (stride 32) with the final LayerNorm applied to it. The official
code vendors a modified SwinV2; we import timm's and pin its quirks in tests:
`forward_features` returns NHWC, `forward_intermediates` NCHW - this module is the one NHWC->NCHW site.

Input sizes (deliberate deviation, documented): the image is zero-padded at the bottom/right to a multiple
of the total stride 32, and the timm model is built with `strict_img_size=False`, so timm pads each stage's
map to a multiple of its window inside the attention (as the official code does per stage, PAPER_NOTES §4.1). We
pad to 32 rather than to 32 x window because windows are per stage and clamped by timm to the stage size
at `img_size`; padding the image further would only change the feature grid (e.g. 480 -> 512 gives 16x16
instead of the official 15x15). Output grid: ceil(H/32) x ceil(W/32).

Input normalisation (deliberate, PAPER_NOTES §7.3 "normalisation inconsistencies"): the official code feeds NYU
RGB in [0, 1] but ImageNet-normalises COCO, and the joint model sends both through one backbone. Here the
backbone itself standardises every image with its timm variant's mean/std (`normalize: true`, the
ImageNet statistics the SwinV2/SimMIM weights were trained with), so callers always pass [0, 1] RGB and
both tasks see one input distribution. It also matters from scratch: with raw [0, 1] pixels the patch
embedding's LayerNorm removes the brightness scale that dominates every patch and a freshly initialised
tiny SwinV2 emits nearly the same stage-4 vector for every image; normalised, the share of the feature
variance that lies between images is more than twice as large on real NYU frames
(`tests/test_backbone.py::test_normalisation_keeps_images_apart_in_a_fresh_backbone` measures it).
`normalize: false` reproduces the official NYU input.

Also here: `layer_id` for layer-wise learning-rate decay (PAPER_NOTES §4.6, official `get_num_layer_for_swin`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.config import BackboneConfig


class Backbone(nn.Module):
    """(B, 3, H, W) images -> (B, out_channels, ceil(H/32), ceil(W/32)) normalised stage-4 features."""

    def __init__(self, body: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.body = body
        cfg = body.pretrained_cfg
        stats = (cfg["mean"], cfg["std"]) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        # not persistent: a checkpoint holds weights only; the statistics come from the config
        for name, value in zip(("mean", "std"), stats, strict=True):
            buffer = torch.tensor(value, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer(name, buffer, persistent=False)
        self.out_channels: int = body.num_features
        # patch embedding x one 2x patch merging per later stage (32 for the standard patch 4)
        self.stride: int = body.patch_embed.patch_size[0] * 2 ** (len(body.layers) - 1)
        self.depths: tuple[int, ...] = tuple(len(stage.blocks) for stage in body.layers)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, C, ceil(H/32), ceil(W/32)); standardised, then zero-padded
        bottom/right to /32 (zero = the mean colour once normalised, as mmdet pads after normalising)."""
        h, w = images.shape[-2:]
        images = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        images = F.pad(images, (0, -w % self.stride, 0, -h % self.stride))
        last = len(self.body.layers) - 1
        # norm=True applies the final LayerNorm to stage 4: the "extra LayerNorm" of PAPER_NOTES §4.1
        (features,) = self.body.forward_intermediates(
            images, indices=[last], norm=True, intermediates_only=True
        )
        return features


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """timm SwinV2 (classifier head removed, any input size) -> Backbone, randomly initialised unless
    `init: timm` (hub weights, needs network). Local checkpoints load through `models/pretrained.py`."""
    import timm  # heavy import (~4 s): only where a backbone is actually built

    overrides = {
        "embed_dim": cfg.embed_dim,
        "depths": cfg.depths,
        "num_heads": cfg.num_heads,
        "window_size": cfg.window_size,
        "patch_size": cfg.patch_size,
        "pretrained_window_sizes": cfg.pretrained_window_sizes,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    body = timm.create_model(
        cfg.name,
        pretrained=cfg.init == "timm",
        features_only=False,
        num_classes=0,  # the classifier head is unused: no parameters for it
        **({} if cfg.img_size is None else {"img_size": cfg.img_size}),
        strict_img_size=False,  # accept any size; timm pads each stage to its window (see module doc)
        drop_path_rate=cfg.drop_path_rate,
        **overrides,
    )
    body.set_grad_checkpointing(cfg.grad_checkpointing)
    return Backbone(body, cfg.normalize)


def num_lr_layers(depths: Sequence[int]) -> int:
    """Number of layer-decay groups: patch embed + blocks + all but the last patch merging + "the rest"."""
    return sum(depths) + len(depths) - 1 + 2


_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
_MERGE = re.compile(r"layers\.(\d+)\.downsample\.")


def layer_id(param_name: str, depths: Sequence[int], prefix: str = "") -> int:
    """Layer-decay group of a parameter: 0 for the patch embed ... num_lr_layers-1 outside the backbone.

    `prefix` is where the timm model sits in the caller's module (e.g. "backbone.body."). Numbering as the
    official `get_num_layer_for_swin` (PAPER_NOTES §4.6): every stage but the last counts depth+1 layers (its patch
    merging); the official merging sits at the END of stage s, timm's at the START of stage s+1, so timm's
    `layers.{s}.downsample` gets the official id of stage s-1's merging. The final norm is "the rest".
    With depths (2, 2, 18, 2): 29 groups, lr scale = decay ** (28 - layer_id).
    """
    last = num_lr_layers(depths) - 1
    if not param_name.startswith(prefix):
        return last
    name = param_name[len(prefix) :]
    per_stage = [d + 1 for d in depths[:-1]] + [depths[-1]]
    if name.startswith("patch_embed."):
        return 0
    if match := _BLOCK.match(name):
        stage, block = int(match[1]), int(match[2])
        return sum(per_stage[:stage]) + block + 1
    if match := _MERGE.match(name):
        return sum(per_stage[: int(match[1])])
    return last
