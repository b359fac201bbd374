"""The dense kind, written once: what depth and class maps share (behaviour follows the label's kind).

A dense task caches one code per token-grid cell of every view (a flip of the full frame, then a
full-height square crop at a cached x-offset; `token_cache.layouts.ViewLayout`), feeds the backbone that
crop, reads its codes in raster order after the task embedding (PAPER_NOTES §4.4), and decodes a frame by
S x S windows and flips (PAPER_NOTES §5.1). A dense task names its label field, what its examples add
(the label crop, the drawn augmentation), its loss, how one window's codes become a map, and its scores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pipeline.core.config import WindowInferConfig
from pipeline.core.viz import panel
from pipeline.geometry.windows import DenseFn, predict_windows, to_tensor
from pipeline.models.vqvae import VQVAE
from pipeline.solver_training.samples import worker_rng
from pipeline.tasks.base import Task, TrainingRecipe
from pipeline.token_cache.read import decode_sample


def view_crop(frame: np.ndarray, flip: int, x: int, size: int) -> np.ndarray:
    """The cached view of a frame (or of its label map): flip the full frame, then columns [x, x+size)."""
    return np.ascontiguousarray((frame[:, ::-1] if flip else frame)[:, x : x + size])


@dataclass
class DenseExamples:
    """Cached dense sample -> one randomly drawn cached view: its image, its tokens and what the task adds
    (`extra`: the label crop and the drawn augmentation). Randomness: the view, then the task's draws,
    from the DataLoader worker's generator."""

    crop_size: int
    seed: int
    fields: ClassVar[dict] = {}  # the task's cache field decoders
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        self._rng = self._rng or worker_rng(self.seed)
        s = decode_sample(raw, self.fields)
        v = int(self._rng.integers(len(s["views"])))
        flip, x = s["views"][v]["flip"], s["views"][v]["x"]
        return {"key": s["key"], "image": view_crop(s["rgb"], flip, x, self.crop_size),
                "indices": s["tokens"][v].astype(np.int64), **self.extra(s, flip, x, self._rng)}

    def extra(self, sample: dict, flip: int, x: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError


def predict_frames(model, images, predict: DenseFn, size: int, cfg: WindowInferConfig) -> Tensor:
    """(N, S, W, 3) uint8 frames -> (N, C, S, W): `predict` on S x S windows (and their flips) of each
    frame, averaged where they overlap (PAPER_NOTES §5.1; `cfg` chooses windows and flips)."""
    device = next(model.parameters()).device
    return predict_windows(to_tensor(images, device), predict, size, cfg.flip_tta, cfg.shift_windows)


class DenseTask(Task):
    """A dense task: sequence length and input side come from its cache (the grid and the crop)."""

    label: ClassVar[str]  # the record key and sample field of its label file
    collate: ClassVar[Callable[[list[dict]], dict]]  # examples -> one batch (a module-level function)
    loss_class: ClassVar[type]  # the loss adapter, built as loss_class(tokenizer, cfg=<task solver cfg>)

    def training(self, manifest: dict, cfg: Any) -> TrainingRecipe:
        h, w = manifest["tokenizer"]["grid"]
        return TrainingRecipe(h * w, manifest["views"]["crop_size"], self.examples(manifest, cfg),
                              self.collate, functools.partial(self.loss_class, cfg=cfg))

    def examples(self, manifest: dict, cfg: Any):
        """seed -> the picklable `DenseExamples` of this task."""
        raise NotImplementedError

    def inspect_panel(self, sample: dict, model: VQVAE, manifest: dict) -> np.ndarray:
        crop = manifest["views"]["crop_size"]
        x = sample["views"][0]["x"]  # view 0: flip 0, x 0 by construction (geometry/views.dense_views)
        decoded = model.decode(torch.from_numpy(sample["tokens"][:1].astype(np.int64)))
        gt = sample[self.label][:, x : x + crop]
        tiles, titles = self.inspect_tiles(gt, decoded, manifest)
        return panel([sample["rgb"][:, x : x + crop], *tiles], ["image", *titles, "decoded tokens (view 0)"])

    def inspect_tiles(self, gt: np.ndarray, decoded: Tensor, manifest: dict) -> tuple[list, list[str]]:
        """The GT and decoded tiles of `inspect_panel` and the GT tile's title."""
        raise NotImplementedError

