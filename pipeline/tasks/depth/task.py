"""The depth task: depth codes -> token sequence, loss, logits/tokens -> depth (PAPER_NOTES §4.4, §3).

The UViM-style trio (big_vision `depth_task.py`):
- `depth_sequence`: cached tokenizer indices (B, h, w) -> decoder input / targets in row-major raster
  order; position 0 of the decoder input is the task embedding, added by the solver;
- `depth_loss`: CE over the FULL vocabulary (PAPER_NOTES §4.3), summed and divided by the number of target
  tokens, plus the aux SiLog (λ = 0.5) of the soft decode through the frozen tokenizer (PAPER_NOTES §3.3);
- `predict_depth`: detokenizer-side soft (`decode_soft`, softmax(τ·logits) @ codebook) or hard
  (`decode` of the restricted argmax) decode, clipped at 1e-3 m.

Table 7 of the paper is the product of two independent switches: solver-side soft inputs are
`Solver.generate(soft_kinds=SOFT_KINDS)` (or not); detokenizer-side soft decode is `soft_decode` here.

Normalisation (PAPER_NOTES §3.3 "normalisation"): the official loss is (CE_sum + aux·n_tokens) / N where N is the
all-reduced mean token count per GPU, i.e. CE_mean + aux_weight·SiLog on one process. `num_targets` lets
the trainer pass that N; the default is the local count. The tokenizer must be frozen by the caller
(requires_grad False): gradients still flow through its decoder into the logits, never into it.

`DepthTask` binds them to the pipeline (`tasks/base.py`, the dense kind `tasks/dense.py`): tokenizer
crops and loss, the per-view cache layout, training examples, the loss adapter, the window/flip inference,
the evaluation (`evaluate.py`) and its score table.

Shapes: B batch, h x w token grid, L = h·w, V vocabulary, K depth codebook size, H x W pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pipeline.core.viz import shared_range
from pipeline.core.vocab import Vocab
from pipeline.data.nyu import depth_png_metres, read_depth_metres
from pipeline.geometry.windows import DenseFn
from pipeline.models.vqvae import VQVAE, grid_shape
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
from pipeline.tasks.depth.augment import augment_depth, draw_depth
from pipeline.tasks.depth.config import CONFIGS, DepthAugmentConfig, DepthInferConfig, DepthTaskConfig
from pipeline.tasks.depth.evaluate import colorize_depth, evaluate_depth, train_depth_baselines
from pipeline.tasks.depth.losses import mse_ignore_zero, silog_loss
from pipeline.tasks.depth.mask_augment import random_patch_mask
from pipeline.tasks.depth.tokenizer import DepthCrops
from pipeline.tasks.depth.tokenizer import evaluate_depth as evaluate_depth_tokenizer
from pipeline.tasks.registry import TASK_IDS
from pipeline.tasks.sequences import (
    grid_code_logits,
    num_supervised,
    raster_sequence,
    sequence_ce_sum,
    token_accuracy,
)
from pipeline.token_cache.layouts import ViewLayout, view_layout

__all__ = [
    "TASK_ID", "SOFT_KINDS", "MIN_DEPTH", "generation_kinds", "depth_sequence", "depth_code_logits",
    "depth_loss", "token_accuracy", "predict_depth",
]

TASK_ID = TASK_IDS["depth"]  # its row of the task embedding (tasks/registry.py)
SOFT_KINDS = frozenset({"depth"})  # solver-side soft token at every depth position (PAPER_NOTES §3.1)
MIN_DEPTH = 1e-3  # predictions are clipped at 1e-3 m (PAPER_NOTES §4.4 inference step 3)
SILOG_LAMBDA = 0.5  # variance weight of the aux SiLog (PAPER_NOTES §3.3)


def generation_kinds() -> list[tuple[str, ...]]:
    """Per-position token kinds for `Solver.generate` (one pattern entry, tiled to any length)."""
    return [("depth",)]


def depth_sequence(indices: Tensor, vocab: Vocab) -> tuple[Tensor, Tensor]:
    """(B, h, w) local depth codes -> tokens_in (B, L−1) = targets[:, :-1], targets (B, L), L = h·w."""
    return raster_sequence(indices, vocab, "depth")


def depth_code_logits(logits: Tensor, vocab: Vocab, grid_hw: tuple[int, int]) -> Tensor:
    """(B, L, V) solver logits -> (B, K, h, w) logits of the depth codes, as `decode_soft` takes them."""
    return grid_code_logits(logits, vocab, "depth", grid_hw)


def depth_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    vocab: Vocab,
    tokenizer: VQVAE | None = None,
    gt_depth: Tensor | None = None,
    aux_weight: float = 1.0,
    tau: float = 1.0,
    num_targets: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, L, V) logits, (B, L) targets [, frozen tokenizer, (B, 1, H, W) GT metres] -> (loss, parts).

    loss = CE_sum / N + aux_weight · SiLog · n / N with n the local target count and N = `num_targets`
    (default n); parts holds detached "ce", "accuracy" and, with the aux term, "silog".
    """
    if (tokenizer is None) != (gt_depth is None):
        raise ValueError("the aux loss needs both the tokenizer and gt_depth (or neither)")
    count = num_supervised(targets)
    norm = count if num_targets is None else torch.as_tensor(num_targets, dtype=count.dtype)
    loss = sequence_ce_sum(logits, targets) / norm
    parts = {"ce": loss.detach(), "accuracy": token_accuracy(logits, targets)}
    if tokenizer is not None:
        silog = depth_aux_loss(logits, tokenizer, gt_depth, vocab, tau)
        loss = loss + aux_weight * silog * count / norm  # official: aux · n_tokens, then / N (PAPER_NOTES §3.3)
        parts["silog"] = silog.detach()
    return loss, parts


def depth_aux_loss(
    logits: Tensor, tokenizer: VQVAE, gt_depth: Tensor, vocab: Vocab, tau: float = 1.0
) -> Tensor:
    """SiLog(λ 0.5) of decode_soft(depth-code logits, τ) vs (B, 1, H, W) GT metres, GT > 0 (PAPER_NOTES §3.3)."""
    grid = grid_shape(tokenizer.cfg, *gt_depth.shape[-2:])
    # fp32 outside autocast: the detokenizer is VQ math (PAPER_NOTES §4.6 forces the losses to fp32)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        pred = tokenizer.decode_soft(depth_code_logits(logits.float(), vocab, grid), tau)
        return silog_loss(pred, gt_depth.float(), lam=SILOG_LAMBDA)  # clips pred at 1e-3 inside


@torch.no_grad()
def predict_depth(
    logits_or_tokens: Tensor,
    tokenizer: VQVAE,
    grid_hw: tuple[int, int],
    vocab: Vocab,
    soft_decode: bool = True,
    tau: float = 1.0,
) -> Tensor:
    """(B, L, V) logits or (B, L) tokens -> (B, 1, H, W) depth in metres, clipped at MIN_DEPTH.

    soft_decode: decode_soft(softmax(τ · depth-code logits) @ codebook) (needs logits; τ 0.8 in the
    paper's depth configs, PAPER_NOTES §3.2); else decode the argmax over the depth codes (or the given tokens).
    """
    is_logits = logits_or_tokens.is_floating_point()
    if soft_decode and not is_logits:
        raise ValueError("the soft decode needs logits, not tokens")
    with torch.autocast(device_type=logits_or_tokens.device.type, enabled=False):
        if soft_decode:
            depth = tokenizer.decode_soft(depth_code_logits(logits_or_tokens.float(), vocab, grid_hw), tau)
        else:
            if is_logits:  # argmax restricted to the depth codes = local code index
                indices = depth_code_logits(logits_or_tokens, vocab, grid_hw).argmax(dim=1)
            else:
                indices = vocab.to_local(logits_or_tokens, "depth").view(-1, *grid_hw)
            depth = tokenizer.decode(indices)
    return depth.clamp_min(MIN_DEPTH)


# --------------------------------------------------------------------------------------------------
# training examples and loss (cache sample -> augmented example -> sequences and loss)


@dataclass
class DepthExamples(DenseExamples):
    """Cached depth sample -> one randomly drawn cached view: image, GT depth, its tokens and the drawn
    RGB augmentation (PAPER_NOTES §6.1).

    The image is the (S, S, 3) uint8 view; `augment` is its `draw_depth` row, applied on the training
    device by `augment_depth` (CutDepth on the full frame, then the view, then the photometric ops).
    """

    augment: DepthAugmentConfig = field(default_factory=DepthAugmentConfig)
    fields: ClassVar[dict] = {"depth": depth_png_metres}  # the cached depth PNG decodes to metres

    def extra(self, sample: dict, flip: int, x: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"depth": view_crop(sample["depth"], flip, x, self.crop_size),
                "augment": draw_depth(self.augment, sample["rgb"].shape[1], flip, x, rng)}


def collate_depth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack depth examples: images (B, 3, S, S) uint8, depth (B, 1, S, S) metres, indices (B, h, w),
    augment (B, DEPTH_DRAW_SIZE) draws for `augment_depth`."""
    return {
        "keys": [s["key"] for s in samples],
        "images": stack_images([s["image"] for s in samples]),
        "depth": torch.from_numpy(np.stack([s["depth"] for s in samples]))[:, None],
        "indices": torch.from_numpy(np.stack([s["indices"] for s in samples])),
        "augment": torch.from_numpy(np.stack([s["augment"] for s in samples])),
    }


@dataclass
class DepthLoss:
    """The depth loss adapter of the training step: sequences, CE + aux SiLog through the frozen tokenizer."""

    tokenizer: VQVAE
    cfg: DepthTaskConfig

    def loss(self, model, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        tokens_in, targets = depth_sequence(batch["indices"].to(device), vocab)
        depth = batch["depth"].to(device)
        logits = model(augment_depth(batch["images"].to(device), depth, batch["augment"]), TASK_ID, tokens_in)
        aux = self.cfg.aux_weight > 0
        return depth_loss(logits, targets, vocab=vocab, tokenizer=self.tokenizer if aux else None,
                          gt_depth=depth if aux else None, aux_weight=self.cfg.aux_weight, tau=self.cfg.tau)


# --------------------------------------------------------------------------------------------------
# inference (PAPER_NOTES §5.1): S x S windows with flips, each decoded by the solver and the detokenizer


def depth_predictor(model, tokenizer: VQVAE, vocab: Vocab, cfg: DepthInferConfig, size: int) -> DenseFn:
    """A `predict` for `predict_windows`: (B, 3, S, S) -> (B, 1, S, S) metres through solver + detokenizer."""
    grid = grid_shape(tokenizer.cfg, size, size)

    @torch.no_grad()
    def predict(images: Tensor) -> Tensor:
        logits = generate_dense(model, images, TASK_ID, grid[0] * grid[1], generation_kinds(), vocab,
                                soft_inputs(model, SOFT_KINDS, cfg))
        return predict_depth(logits, tokenizer, grid, vocab, soft_decode=cfg.soft_decode, tau=cfg.tau)

    return predict


@torch.no_grad()
def infer_depth(model, tokenizer: VQVAE, vocab: Vocab, cfg: DepthInferConfig,
                images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, S, W, 3) uint8 RGB -> (N, S, W) float32 depth in metres by the official window/flip protocol
    (or the windows and flips `cfg` chooses)."""
    predict = depth_predictor(model, tokenizer, vocab, cfg, size)
    depth = predict_frames(model, images, predict, size, cfg)
    return depth[:, 0].clamp_min(MIN_DEPTH).float().cpu().numpy()


# --------------------------------------------------------------------------------------------------
# the task


def spread_text(s: dict) -> str:
    return f"{s['deviation_ratio']:.2f} (corr {s['deviation_correlation']:+.2f})"


def _mean_map(key: str, label: str, **kw) -> Score:
    return Score(key, label, ("model", key), ("mean_depth_baseline", key), ("tokenizer_upper_bound", key), **kw)


@dataclass(frozen=True)
class DepthTokenizerLoss:
    """MSE against the clean GT on valid pixels of the reconstruction of the mask-augmented input
    (PAPER_NOTES §1.3, §2: `mask_ratio` of the variant, `patch_size` squares) + commitment."""

    mask_ratio: float
    patch_size: int

    def __call__(self, model, batch: Tensor, generator: torch.Generator):
        inputs = (random_patch_mask(batch, self.mask_ratio, self.patch_size, generator) if self.mask_ratio > 0
                  else batch)
        recon, _, commit = model(inputs)
        recon_loss = mse_ignore_zero(recon.float(), batch)
        return recon_loss + commit, {"recon": recon_loss.detach(), "commit": commit.detach()}


class DepthTask(DenseTask):
    """NYUv2 depth: a dense continuous map, tokenised per cached view (paper §3, PAPER_NOTES §4.4)."""

    name = "depth"
    code_kind = "depth"
    splits = ("train", "test")
    configs = CONFIGS
    label = "depth"
    cache_fields = DepthExamples.fields
    scores = (
        _mean_map("rmse", "RMSE (m)", lower_is_better=True),
        _mean_map("d1", "δ1", headline=("value", "baseline")),
        _mean_map("abs_rel", "AbsRel", lower_is_better=True, headline=()),
        Score("rmse_median", "RMSE vs the median map (m)", ("model", "rmse"),
              ("median_depth_baseline", "rmse"), lower_is_better=True, headline=()),
        Score("spread", "spread vs mean map", ("spread_vs_mean_map",), headline=(), text=spread_text),
    )
    tokenizer_score = Score("rmse", "RMSE (m)", ("rmse",), lower_is_better=True)
    collate = staticmethod(collate_depth)
    loss_class = DepthLoss
    baseline_note = ("the training mean depth map (spread: RMS deviation of the prediction from the mean map "
                     "over the GT's, 0 = the model outputs the mean map, and their correlation)")

    def tokenizer(self, job: TokenizerJob) -> TokenizerRecipe:
        t = job.cfg.train
        return TokenizerRecipe(job.cfg.model, DepthCrops(job.records, t.crop_size, job.seed),
                               DepthTokenizerLoss(job.variant.mask_ratio, t.patch_size))

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        return evaluate_depth_tokenizer(ctx.model, ctx.records, ctx.tau, ctx.device, ctx.progress)

    def cache_layout(self, splits, tok, cfg, prepared) -> ViewLayout:
        return view_layout(self.name, "depth", read_depth_metres, splits, tok, cfg)

    def examples(self, manifest, cfg):
        return functools.partial(DepthExamples, manifest["views"]["crop_size"], augment=cfg.augment)


    def evaluate(self, ctx: SolverEval) -> SolverResult | None:
        with ctx.progress("evaluate: training depth statistics") as cb:
            baselines = train_depth_baselines(read_split(ctx.prepared, self.splits[0]), cb)
        size = ctx.manifest["views"]["crop_size"]
        model, tokenizer, vocab, cfg = ctx.model, ctx.tokenizer, ctx.vocab, ctx.infer_cfg
        with ctx.progress("evaluate depth") as cb:
            metrics, panels = evaluate_depth(
                lambda rgbs: infer_depth(model, tokenizer, vocab, cfg, rgbs, size), tokenizer, ctx.records,
                baselines, ctx.opts, cb)
        return None if metrics is None else SolverResult(metrics, panels, {})

    def inspect_tiles(self, gt, decoded, manifest):
        decoded = decoded[0, 0].numpy()
        lo, hi = shared_range(gt, decoded)
        tiles = [colorize_depth(gt, lo, hi), colorize_depth(decoded, lo, hi)]
        return tiles, [f"GT depth {lo:.2f}-{hi:.2f} m"]


TASK = DepthTask()
