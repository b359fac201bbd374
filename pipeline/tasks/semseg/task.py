"""The semantic-segmentation task: per-pixel classes of NYUv2 frames, the dense and discrete case.

Not in the paper (its conclusion names more tasks as future work); it sits between depth (dense,
continuous) and instances (variable length, discrete) and reuses depth's machinery wherever the label
type does not matter:
- tokenizer: a VQ-VAE on class maps (`input_scale: onehot`, one input channel and one output logit per
  class, `channels` derived from the prepared class list), cross-entropy on labelled pixels; UViM's
  panoptic "oracle" (big_vision `panoptic_task.py`) is the anchor;
- cache: the dense per-view layout (flip x full-height crop; `token_cache/layouts.ViewLayout`), label PNGs in the
  samples, the class list in the manifest;
- solver: codes in raster order after the task embedding (`raster_sequence`), full-vocabulary CE plus an
  aux CE of the soft-decoded class logits on labelled pixels (the analogue of depth's aux SiLog, §3.3);
  training RGB gets colour jitter (flips and crops come from the cached views);
- inference: the dense windows and flips, class probabilities averaged, then the argmax (`evaluate.py`).

Class ids: 1..N as `classes.json` lists them (contiguous), 0 = unlabelled (ignored by losses and metrics).
Shapes: B batch, h x w token grid, L = h·w, V vocabulary, N classes, S crop side.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.core.config import ConfigError, WindowInferConfig
from pipeline.core.errors import DataError
from pipeline.core.viz import colorize_labels
from pipeline.core.vocab import Vocab
from pipeline.models.vqvae import VQVAE, grid_shape, labels_from_logits
from pipeline.solver_training.augment import color_jitter, draw_color_jitter
from pipeline.solver_training.infer import generate_dense, soft_inputs
from pipeline.solver_training.samples import stack_images
from pipeline.tasks.base import (
    Score,
    SolverEval,
    SolverResult,
    TokenizerEval,
    TokenizerJob,
    TokenizerRecipe,
    read_split,
)
from pipeline.tasks.dense import DenseExamples, DenseTask, predict_frames, view_crop
from pipeline.tasks.registry import TASK_IDS
from pipeline.tasks.semseg.config import CONFIGS, SemsegTaskConfig
from pipeline.tasks.semseg.evaluate import evaluate_semseg, evaluate_semseg_tokenizer, train_majority
from pipeline.tasks.semseg.losses import label_ce_loss
from pipeline.tasks.sequences import (
    grid_code_logits,
    num_supervised,
    raster_sequence,
    sequence_ce_sum,
    token_accuracy,
)
from pipeline.token_cache.layouts import ViewLayout, view_layout
from pipeline.tokenizer_training.data import sample_rng

TASK_ID = TASK_IDS["semseg"]  # its row of the task embedding (tasks/registry.py)
KIND = "semseg"  # its code range in the shared vocabulary
SOFT_KINDS = frozenset({KIND})  # soft tokens at every position, as depth (PAPER_NOTES §3.1)
CLASSES = "classes.json"  # the prepared class list: [{"id": 1..N, "name"}]


def read_label(path: str) -> np.ndarray:
    """A label PNG (uint8 / uint16 ids, 0 = unlabelled) -> (H, W) int64."""
    return np.asarray(Image.open(path), dtype=np.int64)


def read_label_input(path: str) -> np.ndarray:
    """A label PNG -> (H, W) float32 ids: the tokenizer's encoder input (`VQVAE.normalize` one-hots it)."""
    return read_label(path).astype(np.float32)


def read_classes(prepared: Path) -> list[dict]:
    """The prepared class list, ids 1..N in order."""
    path = Path(prepared) / CLASSES
    if not path.is_file():
        raise DataError(f"{path}: prepared file not found (run `dvc repro prepare`)")
    classes = json.loads(path.read_text())
    if [c.get("id") for c in classes] != list(range(1, len(classes) + 1)):
        raise DataError(f"{path}: class ids must be 1..N in order")
    return classes


# --------------------------------------------------------------------------------------------------
# sequences and loss


def semseg_loss(logits: Tensor, targets: Tensor, *, vocab: Vocab, tokenizer: VQVAE | None = None,
                gt_labels: Tensor | None = None, aux_weight: float = 1.0, tau: float = 1.0
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, L, V) logits, (B, L) targets [, frozen tokenizer, (B, S, S) GT ids] -> (loss, parts):
    CE_sum / n (full vocabulary, PAPER_NOTES §4.3) + aux_weight · CE of the soft-decoded class logits."""
    count = num_supervised(targets)
    loss = sequence_ce_sum(logits, targets) / count
    parts = {"ce": loss.detach(), "accuracy": token_accuracy(logits, targets)}
    if tokenizer is not None:
        grid = grid_shape(tokenizer.cfg, *gt_labels.shape[-2:])
        with torch.autocast(device_type=logits.device.type, enabled=False):  # VQ math in fp32 (PAPER_NOTES §4.6)
            decoded = tokenizer.decode_soft(grid_code_logits(logits.float(), vocab, KIND, grid), tau)
            aux = label_ce_loss(decoded, gt_labels)
        loss = loss + aux_weight * aux
        parts["pixel_ce"] = aux.detach()
    return loss, parts


@dataclass
class SemsegExamples(DenseExamples):
    """Cached sample -> one randomly drawn cached view: image, GT class ids, its tokens, colour factors."""

    color_jitter: float = 0.0

    def extra(self, sample: dict, flip: int, x: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"labels": view_crop(sample["label"], flip, x, self.crop_size).astype(np.int64),
                "color": draw_color_jitter(self.color_jitter, rng)}


def collate_semseg(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Images (B, 3, S, S) uint8, labels (B, S, S) int64, indices (B, h, w), colour factors (B, 3)."""
    return {"keys": [s["key"] for s in samples], "images": stack_images([s["image"] for s in samples]),
            **{k: torch.from_numpy(np.stack([s[k] for s in samples]))
               for k in ("labels", "indices", "color")}}


@dataclass
class SemsegLoss:
    tokenizer: VQVAE
    cfg: SemsegTaskConfig

    def loss(self, model, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        tokens_in, targets = raster_sequence(batch["indices"].to(device), vocab, KIND)
        logits = model(color_jitter(batch["images"].to(device), batch["color"]), TASK_ID, tokens_in)
        aux = self.cfg.aux_weight > 0
        return semseg_loss(logits, targets, vocab=vocab, tokenizer=self.tokenizer if aux else None,
                           gt_labels=batch["labels"].to(device) if aux else None,
                           aux_weight=self.cfg.aux_weight, tau=self.cfg.tau)


# --------------------------------------------------------------------------------------------------
# inference: windows and flips of class probabilities


def class_probabilities(model, tokenizer: VQVAE, vocab: Vocab, cfg: WindowInferConfig, size: int):
    """A `predict` for `predict_windows`: (B, 3, S, S) -> (B, N, S, S) class probabilities."""
    grid = grid_shape(tokenizer.cfg, size, size)

    @torch.no_grad()
    def predict(images: Tensor) -> Tensor:
        logits = generate_dense(model, images, TASK_ID, grid[0] * grid[1], [(KIND,)], vocab,
                                soft_inputs(model, SOFT_KINDS, cfg))
        codes = grid_code_logits(logits.float(), vocab, KIND, grid)
        classes = (tokenizer.decode_soft(codes, cfg.tau) if cfg.soft_decode
                   else tokenizer.decode(codes.argmax(1)))
        return classes.float().softmax(1)

    return predict


@torch.no_grad()
def infer_semseg(model, tokenizer: VQVAE, vocab: Vocab, cfg: WindowInferConfig,
                 images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, S, W, 3) uint8 RGB -> (N, S, W) int64 class ids 1..N."""
    probs = predict_frames(model, images, class_probabilities(model, tokenizer, vocab, cfg, size), size, cfg)
    return labels_from_logits(probs).cpu().numpy()


# --------------------------------------------------------------------------------------------------
# the task


def _score(key: str, label: str, field: str, **kw) -> Score:
    return Score(key, label, ("model", field), ("majority_baseline", field), ("tokenizer_upper_bound", field), **kw)


def tokenizer_loss(model, batch: Tensor, generator: torch.Generator):
    """Cross-entropy of the reconstructed class logits on labelled pixels + commitment."""
    recon, _, commit = model(batch)
    recon_loss = label_ce_loss(recon.float(), batch)
    return recon_loss + commit, {"recon": recon_loss.detach(), "commit": commit.detach()}


class SemsegTask(DenseTask):
    name = "semseg"
    code_kind = KIND
    splits = ("train", "test")
    configs = CONFIGS
    label = "label"
    scores = (_score("miou", "mIoU", "miou"),
              _score("pixel_acc", "pixel accuracy", "pixel_accuracy", headline=("value", "baseline")))
    tokenizer_score = Score("miou", "mIoU", ("miou",))
    collate = staticmethod(collate_semseg)
    loss_class = SemsegLoss
    baseline_note = "the training per-pixel majority class"

    def tokenizer(self, job: TokenizerJob) -> TokenizerRecipe:
        cfg = job.cfg.model
        if cfg.input_scale != "onehot":
            raise ConfigError(f"tokenizer.semseg.model.input_scale: must be onehot, got {cfg.input_scale!r}")
        arch = replace(cfg, channels=len(read_classes(job.prepared)))  # one input plane per class, derived
        crops = LabelCrops(job.records, job.cfg.train.crop_size, job.seed)
        return TokenizerRecipe(arch, crops, tokenizer_loss)

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        return evaluate_semseg_tokenizer(ctx.model, ctx.records, read_label, ctx.tau, ctx.device,
                                         ctx.progress)

    def cache_layout(self, splits, tok, cfg, prepared) -> ViewLayout:
        classes = [{"id": c["id"], "name": c["name"]} for c in read_classes(prepared)]
        if len(classes) != tok.model.cfg.channels:
            raise DataError(f"{prepared / CLASSES}: {len(classes)} classes, but the tokenizer has "
                            f"{tok.model.cfg.channels}; retrain it (`dvc repro train_tokenizer`)")
        return view_layout(self.name, "label", read_label_input, splits, tok, cfg, {"classes": classes})

    def examples(self, manifest, cfg):
        crop = manifest["views"]["crop_size"]
        return functools.partial(SemsegExamples, crop, color_jitter=cfg.color_jitter)


    def evaluate(self, ctx: SolverEval) -> SolverResult | None:
        classes = len(ctx.manifest["classes"])
        with ctx.progress("evaluate: training majority classes") as cb:
            majority = train_majority(read_split(ctx.prepared, self.splits[0]), read_label, classes, cb)
        size = ctx.manifest["views"]["crop_size"]
        model, tokenizer, vocab, cfg = ctx.model, ctx.tokenizer, ctx.vocab, ctx.infer_cfg
        with ctx.progress("evaluate semseg") as cb:
            metrics, panels = evaluate_semseg(
                lambda rgbs: infer_semseg(model, tokenizer, vocab, cfg, rgbs, size), tokenizer, ctx.records,
                read_label, majority, ctx.opts, cb)
        return None if metrics is None else SolverResult(metrics, panels, {})

    def inspect_tiles(self, gt, decoded, manifest):
        n = len(manifest["classes"])
        labels = labels_from_logits(decoded)[0].numpy()
        return [colorize_labels(gt, n), colorize_labels(labels, n)], ["GT classes"]


class LabelCrops(torch.utils.data.Dataset):
    """`(1, S, S)` float32 class-id crops (flip p 0.5, a random square inside the frame) of label records."""

    def __init__(self, records: Sequence[dict], crop_size: int, seed: int) -> None:
        self.records, self.crop_size, self.seed = list(records), crop_size, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        index, epoch = item
        labels, rng, s = (read_label(self.records[index]["label"]), sample_rng(self.seed, epoch, index),
                          self.crop_size)
        if rng.random() < 0.5:
            labels = labels[:, ::-1]
        h, w = labels.shape
        if h < s or w < s:
            raise DataError(f"{self.records[index]['label']}: {w}x{h} labels are smaller than the {s}² crop")
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        return torch.from_numpy(np.ascontiguousarray(labels[y : y + s, x : x + s], dtype=np.float32)[None])


TASK = SemsegTask()
