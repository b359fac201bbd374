"""The semantic-segmentation task: per-pixel classes of NYUv2 frames, the dense and discrete case.

Not in the paper (its conclusion names more tasks as future work); it sits between depth (dense,
continuous) and instances (variable length, discrete) and reuses depth's machinery wherever the label
type does not matter:
- tokenizer: a VQ-VAE on class maps (`input_scale: onehot`, one input channel and one output logit per
  class, `channels` derived from the prepared class list), cross-entropy on labelled pixels; UViM's
  panoptic "oracle" (big_vision `panoptic_task.py`) is the anchor;
- cache: depth's per-view layout (flip x full-height crop; `tokens/layouts.ViewLayout`), label PNGs in the
  samples, the class list in the manifest;
- solver: codes in raster order after the task embedding (`raster_sequence`), full-vocabulary CE plus an
  aux CE of the soft-decoded class logits on labelled pixels (the analogue of depth's aux SiLog, §3.3);
  training RGB gets colour jitter (flips and crops come from the cached views);
- inference: depth's windows and flips, class probabilities averaged, then the argmax (`semseg_eval.py`).

Class ids: 1..N as `classes.json` lists them (contiguous), 0 = unlabelled (ignored by losses and metrics).
Shapes: B batch, h x w token grid, L = h·w, V vocabulary, N classes, S crop side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.core.config import ConfigError, ViewCacheConfig, VQVAEConfig, WindowInferConfig
from pipeline.core.errors import DataError
from pipeline.core.viz import colorize_labels, panel
from pipeline.core.vocab import Vocab
from pipeline.geometry.windows import predict_windows, to_tensor
from pipeline.models.vqvae import VQVAE, grid_shape, labels_from_logits
from pipeline.solver_training.augment import color_jitter, draw_color_jitter
from pipeline.solver_training.infer import generate_dense, soft_inputs
from pipeline.solver_training.samples import stack_images, worker_rng
from pipeline.tasks.base import DenseTask, SolverEval, SolverResult, TokenizerEval, fmt, read_split
from pipeline.tasks.registry import TASK_IDS
from pipeline.tasks.semseg.config import SemsegTaskConfig
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
from pipeline.token_cache.read import decode_sample
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
class SemsegExamples:
    """Cached sample -> one randomly drawn cached view: image, GT class ids, its tokens, colour factors."""

    crop_size: int
    color_jitter: float
    seed: int
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        self._rng = self._rng or worker_rng(self.seed)
        s = decode_sample(raw)
        v = int(self._rng.integers(len(s["views"])))
        flip, x = s["views"][v]["flip"], s["views"][v]["x"]
        rgb, label = (a[:, ::-1] if flip else a for a in (s["rgb"], s["label"]))  # the full frame flips first
        crop = np.s_[:, x : x + self.crop_size]
        return {"key": s["key"], "image": np.ascontiguousarray(rgb[crop]),
                "labels": np.ascontiguousarray(label[crop], dtype=np.int64),
                "indices": s["tokens"][v].astype(np.int64),
                "color": draw_color_jitter(self.color_jitter, self._rng)}


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
    device = next(model.parameters()).device
    probs = predict_windows(to_tensor(images, device),
                            class_probabilities(model, tokenizer, vocab, cfg, size),
                            size, cfg.flip_tta, cfg.shift_windows)
    return labels_from_logits(probs).cpu().numpy()


# --------------------------------------------------------------------------------------------------
# the task


class SemsegTask(DenseTask):
    name = "semseg"
    task_id = TASK_ID
    code_kind = KIND
    splits = ("train", "test")
    solver_config = SemsegTaskConfig
    cache_config = ViewCacheConfig
    infer_config = WindowInferConfig
    soft_kinds = SOFT_KINDS
    tokenizer_metric = ("miou", "miou", "mIoU")

    def tokenizer_arch(self, cfg: VQVAEConfig, prepared: Path) -> VQVAEConfig:
        if cfg.input_scale != "onehot":
            raise ConfigError(f"tokenizer.semseg.model.input_scale: must be onehot, got {cfg.input_scale!r}")
        return replace(cfg, channels=len(read_classes(prepared)))  # one input plane per class, derived

    def tokenizer_crops(self, records, crop_size, seed, prepared):
        return LabelCrops(records, crop_size, seed)

    def tokenizer_loss(self, model, batch, mask_ratio, patch_size, generator):
        recon, _, commit = model(batch)
        recon_loss = label_ce_loss(recon.float(), batch)
        return recon_loss + commit, {"recon": recon_loss.detach(), "commit": commit.detach()}

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        return evaluate_semseg_tokenizer(ctx.model, ctx.records, read_label, ctx.tau, ctx.device,
                                         ctx.progress)

    def cache_layout(self, splits, tok, cfg, prepared) -> ViewLayout:
        classes = [{"id": c["id"], "name": c["name"]} for c in read_classes(prepared)]
        if len(classes) != tok.model.cfg.channels:
            raise DataError(f"{prepared / CLASSES}: {len(classes)} classes, but the tokenizer has "
                            f"{tok.model.cfg.channels}; retrain it (`dvc repro train_tokenizer`)")
        return view_layout(self.name, "label", read_label_input, splits, tok, cfg, {"classes": classes})

    def examples(self, manifest, cfg, seed):
        return SemsegExamples(manifest["views"]["crop_size"], cfg.color_jitter, seed), collate_semseg

    def loss_adapter(self, tokenizer, cfg, manifest):
        return SemsegLoss(tokenizer, cfg)

    def evaluate(self, ctx: SolverEval) -> SolverResult:
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

    def headline(self, metrics):
        model, base = metrics["model"], metrics["majority_baseline"]
        return {"miou": model["miou"], "pixel_acc": model["pixel_accuracy"], "base_miou": base["miou"],
                "base_pixel_acc": base["pixel_accuracy"],
                "tok_miou": metrics["tokenizer_upper_bound"]["miou"]}

    def report(self, m):
        return (f"mIoU {m['model']['miou']:.4f} "
                f"(per-pixel majority baseline {m['majority_baseline']['miou']:.4f}; "
                f"tokenizer bound {m['tokenizer_upper_bound']['miou']:.4f}), pixel accuracy "
                f"{m['model']['pixel_accuracy']:.3f} "
                f"(baseline {m['majority_baseline']['pixel_accuracy']:.3f})")

    def summary_rows(self, run, m):
        return [(run, f"semseg {label}", fmt(m["model"][key]), fmt(m["majority_baseline"][key]), "",
                 f"{m['model'][key] - m['majority_baseline'][key]:+.4f}",
                 fmt(m["tokenizer_upper_bound"][key]))
                for key, label in (("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy"))]

    def inspect_panel(self, sample, model, manifest):
        crop, n = manifest["views"]["crop_size"], len(manifest["classes"])
        x = sample["views"][0]["x"]  # view 0: flip 0, x 0 by construction (views.dense_views)
        decoded = labels_from_logits(model.decode(torch.from_numpy(sample["tokens"][:1].astype(np.int64))))[0]
        gt = sample["label"][:, x : x + crop]
        tiles = [sample["rgb"][:, x : x + crop], colorize_labels(gt, n), colorize_labels(decoded.numpy(), n)]
        return panel(tiles, ["image", "GT classes", "decoded tokens (view 0)"])


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
