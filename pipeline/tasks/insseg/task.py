"""The instance-segmentation task: COCO instances as Pix2Seq-style object sequences (PAPER_NOTES §4.5, §5.2).

The sequence format itself (objects -> tokens, loss, tokens -> instances) is `sequence.py`; this
module binds it to the pipeline (`tasks/base.py`): mask-crop tokenizer data and loss, the per-object cache
layout, the large-scale-jittered training examples, the loss adapter with its on-the-fly fallback encodes,
letterboxed inference and the COCO evaluation (`evaluate.py`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.errors import DataError
from pipeline.core.vocab import Vocab
from pipeline.data.coco import segmentation_to_mask
from pipeline.geometry.windows import letterbox
from pipeline.models.ait import AiT
from pipeline.models.sampling import Nucleus, choose, decoding_plan, restrict_logits
from pipeline.models.vqvae import VQVAE
from pipeline.solver_training.augment import color_jitter, draw_color_jitter
from pipeline.solver_training.samples import stack_images, worker_rng
from pipeline.tasks.base import (
    Score,
    SolverEval,
    SolverResult,
    Task,
    TokenizerEval,
    TokenizerJob,
    TokenizerRecipe,
    TrainingRecipe,
    read_split,
)
from pipeline.tasks.insseg import sequence as objseq
from pipeline.tasks.insseg.config import CONFIGS, InssegInferConfig, InssegTaskConfig
from pipeline.tasks.insseg.evaluate import evaluate_insseg, instance_panel_cached
from pipeline.tasks.insseg.jitter import Jitter
from pipeline.tasks.insseg.layout import InstanceLayout
from pipeline.tasks.insseg.masks import crop_instance_mask
from pipeline.tasks.insseg.tokenizer import MaskCrops, evaluate_masks
from pipeline.token_cache.layouts import token_grid
from pipeline.token_cache.manifest import token_dtype
from pipeline.token_cache.read import decode_sample

# --------------------------------------------------------------------------------------------------
# training examples and loss


@dataclass
class InssegExamples:
    """Cached instance sample -> a large-scale-jittered uint8 image with its objects and its drawn
    `color_jitter` factors (applied on the training device).

    Per object (non-crowd, tokenised in the cache): the box in the augmented frame (clipped), its
    class index, the cached mask tokens when they are exact (box not truncated by the window) or
    None, and the 64×64 GT crop at the clipped box (aux-loss target and on-the-fly fallback input).
    The full GT masks travel with the example so jittered duplicate boxes can be cropped later.
    """

    image_size: int
    scale_range: tuple[float, float]
    color_jitter: float
    category_ids: list[int]
    mask_size: int
    seed: int
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        self._rng = self._rng or worker_rng(self.seed)
        s = decode_sample(raw)
        ann = s["annotations"]
        h, w = ann["height"], ann["width"]
        jitter = Jitter.draw((h, w), self.image_size, self.scale_range, self._rng)
        image, color = jitter.image(s["image"]), draw_color_jitter(self.color_jitter, self._rng)
        index = {a: i for i, a in enumerate(ann["ann_ids"])}
        rows = [index[a] for a in ann["token_ann_ids"]]
        xywh = np.array([ann["boxes"][i] for i in rows], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        aug = jitter.boxes(xyxy)
        clipped = jitter.clip(aug)
        keep = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
        exact = keep & np.all(np.isclose(aug, clipped), axis=1)
        masks = [segmentation_to_mask(ann["segmentations"][i], h, w) for i in rows]
        cached = s["tokens"][:, int(jitter.flip)].astype(np.int64)  # (n, 16): flipped crop second
        objects = []
        for j in np.flatnonzero(keep):
            crop = crop_from_original(masks[j], clipped[j], jitter, self.mask_size)
            objects.append({"box": clipped[j].astype(np.float32),
                            "label": self.category_ids.index(ann["category_ids"][rows[j]]),
                            "indices": cached[j] if exact[j] else None, "crop": crop, "mask": j})
        return {"key": s["key"], "image": image, "color": color, "objects": objects, "masks": masks,
                "jitter": jitter}


def crop_from_original(mask: np.ndarray, box_aug: np.ndarray, jitter: Jitter, size: int) -> np.ndarray:
    """The `size`² crop of an original-resolution mask at a box given in the augmented frame."""
    x1, y1, x2, y2 = jitter.to_original(box_aug[None])[0]
    crop = crop_instance_mask(mask, (x1, y1, x2 - x1, y2 - y1), size)
    if crop is None:  # box under 2 px in the original frame: an all-zero target
        crop = np.zeros((size, size), np.float32)
    return crop[:, ::-1].copy() if jitter.flip else crop


def collate_insseg(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B, 3, S, S) uint8 and colour factors (B, 3); keep the ragged per-image objects
    as lists."""
    return {
        "keys": [s["key"] for s in samples],
        "images": stack_images([s["image"] for s in samples]),
        "color": torch.from_numpy(np.stack([s["color"] for s in samples])),
        "objects": [s["objects"] for s in samples],
        "masks": [s["masks"] for s in samples],
        "jitters": [s["jitter"] for s in samples],
    }


@dataclass
class InssegLoss:
    """The instance loss adapter of the training step: targets from the cache, the documented exceptions
    encoded on the fly with the frozen mask tokenizer (objects whose box the jitter window truncated, and
    the jittered duplicate boxes of the noise objects, PAPER_NOTES §7.1; `fallback_fraction` says how often),
    Pix2Seq sequences, weighted CE + aux Dice/MSE."""

    tokenizer: VQVAE
    cfg: InssegTaskConfig
    mask_size: int
    _zero: Tensor | None = field(default=None, repr=False)

    @torch.no_grad()
    def encode_crops(self, crops: list[np.ndarray], device: torch.device) -> Tensor:
        """(m, S, S) GT crops -> (m, h·w) local mask codes with the frozen tokenizer."""
        if not crops:
            return torch.zeros(0, self.grid_tokens, dtype=torch.long, device=device)
        x = torch.from_numpy(np.stack(crops)).float()[:, None].to(device)
        return self.tokenizer.encode(x).flatten(1)

    def zero_mask(self, device: torch.device) -> Tensor:
        """The codes of the all-zero mask (padding and noise objects' targets), encoded once per device:
        the tokenizer is frozen, so they never change."""
        if self._zero is None or self._zero.device != device:
            blank = np.zeros((self.mask_size, self.mask_size), np.float32)
            self._zero = self.encode_crops([blank], device)[0]
        return self._zero

    @property
    def grid_tokens(self) -> int:
        h, w = objseq.mask_grid(self.tokenizer)
        return h * w

    def targets(self, batch: dict, device: torch.device) -> tuple[list, list[Tensor], float]:
        """ImageTargets per image (cached tokens or fallback encodes), GT crops, fallback fraction."""
        missing = [o["crop"] for objs in batch["objects"] for o in objs if o["indices"] is None]
        fallback = iter(self.encode_crops(missing, device))
        out, crops, total = [], [], 0
        for objs in batch["objects"]:
            total += len(objs)
            indices = [torch.as_tensor(o["indices"], device=device) if o["indices"] is not None
                       else next(fallback) for o in objs]
            out.append(objseq.ImageTargets(
                boxes_xyxy=torch.tensor(np.array([o["box"] for o in objs]).reshape(-1, 4), device=device),
                labels=torch.tensor([o["label"] for o in objs], dtype=torch.long, device=device),
                mask_indices=torch.stack(indices) if indices else
                torch.zeros(0, self.grid_tokens, dtype=torch.long, device=device),
                image_hw=(self.cfg.image_size, self.cfg.image_size), norm=float(self.cfg.image_size)))
            crops.append(torch.from_numpy(np.stack([o["crop"] for o in objs]) if objs else
                                          np.zeros((0, self.mask_size, self.mask_size), np.float32)))
        return out, crops, len(missing) / max(total, 1)

    def loss(self, model: AiT, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        targets, crops, fallback = self.targets(batch, device)
        zero = self.zero_mask(device)

        def duplicates(b: int, sources: Tensor, boxes: Tensor) -> Tensor:
            # Jittered duplicates: crop the GT mask at the jittered box (not cacheable, PAPER_NOTES §7.1).
            objs, jitter = batch["objects"][b], batch["jitters"][b]
            masks = [batch["masks"][b][objs[int(i)]["mask"]] for i in sources]
            return self.encode_crops([crop_from_original(m, box.cpu().numpy(), jitter, self.mask_size)
                                      for m, box in zip(masks, boxes, strict=True)], device)

        seq = objseq.build_sequences(targets, vocab, self.cfg.num_query, generator, duplicates, zero,
                                          mask_weight=self.cfg.mask_weight, order=self.cfg.order)
        images = color_jitter(batch["images"].to(device), batch["color"])
        logits = model(images, objseq.TASK_ID, seq.tokens_in)
        aux = self.cfg.aux_weight > 0
        loss, parts = objseq.insseg_loss(
            logits, seq, vocab=vocab, tokenizer=self.tokenizer if aux else None,
            gt_crops=[c.to(device) for c in crops] if aux else None, cfg=self.cfg)
        parts |= objseq.slot_accuracy(logits, seq.targets, objseq.tokens_per_object(self.grid_tokens))
        parts["fallback_fraction"] = torch.tensor(fallback)
        return loss, parts


# --------------------------------------------------------------------------------------------------
# inference (PAPER_NOTES §4.5): letterbox, generate num_query objects, decode back to original pixels


def _instance_tokens(model: AiT, memory: Tensor, vocab: Vocab, cfg: InssegInferConfig, num_query: int,
                     mask_tokens: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Encoder memory -> generated (B, L) tokens and raw (B, L, V) logits, L = num_query·T (PAPER_NOTES §4.5)."""
    kinds = objseq.generation_kinds(num_query, mask_tokens)
    length = len(kinds)
    if model.solver.cfg.parallel:  # one pass; choose per position inside its legal range
        logits = model.solver.generate_parallel(memory, objseq.TASK_ID, length)
        legal, _ = decoding_plan(vocab, kinds, length, device=memory.device)
        restricted = restrict_logits(logits, legal).flatten(0, 1)
        return choose(restricted, cfg.top_p, generator).view(logits.shape[:2]), logits
    soft = objseq.SOFT_KINDS if cfg.soft_input else frozenset()
    return model.solver.generate(memory, objseq.TASK_ID, length, kinds, vocab, soft_kinds=soft,
                                 draw=Nucleus(cfg.top_p, generator))


@torch.no_grad()
def infer_instances(model: AiT, tokenizer: VQVAE, vocab: Vocab, task: InssegTaskConfig,
                    cfg: InssegInferConfig, images: Sequence[np.ndarray], category_ids: Sequence[int],
                    generator: torch.Generator | None = None) -> list[dict[str, np.ndarray]]:
    """(H_i, W_i, 3) uint8 images -> per image boxes_xyxy (n, 4) original px, category_ids (n,),
    scores (n,), masks (n, H_i, W_i) bool; `category_ids[k]` is the dataset id of contiguous class k.
    `task` is how the model was trained (query count, input side), `cfg` how it decodes."""
    if len(category_ids) != vocab.num_classes:
        raise ValueError(f"{len(category_ids)} category ids for a vocabulary of {vocab.num_classes} classes")
    device = next(model.parameters()).device
    boxed = [letterbox(im, task.image_size) for im in images]
    batch = torch.from_numpy(np.stack([b for b, _ in boxed])).permute(0, 3, 1, 2).to(device)
    gh, gw = objseq.mask_grid(tokenizer)
    memory = model.encode(batch)
    tokens, logits = _instance_tokens(model, memory, vocab, cfg, task.num_query, gh * gw, generator)
    sizes = [im.shape[:2] for im in images]
    objects = objseq.decode_objects(tokens, logits, vocab, tokenizer, task, sizes, cfg,
                                    scale_factors=[s for _, s in boxed])
    ids = np.asarray(category_ids, dtype=np.int64)
    return [{"boxes_xyxy": o["boxes_xyxy"].float().cpu().numpy(),
             "category_ids": ids[o["labels"].cpu().numpy()],
             "scores": o["scores"].float().cpu().numpy(),
             "masks": o["masks"].cpu().numpy()} for o in objects]


# --------------------------------------------------------------------------------------------------
# the task


def hits_text(h: dict) -> str:
    return f"{h['gt_found']}/{h['gt_objects']} ({h['gt_found_right_class']})"


def _ap(key: str, label: str, iou: str, ap: str, **kw) -> Score:
    return Score(key, label, (iou, ap), ("prior_baseline", iou, ap), **kw)


def tokenizer_loss(model, batch: Tensor, generator: torch.Generator):
    """MSE in network space: (2y − 1) − (2x − 1) = 2 (y − x), as the official [-1, 1] loss + commitment."""
    recon, _, commit = model(batch)
    recon_loss = F.mse_loss(2.0 * recon.float() - 1.0, 2.0 * batch - 1.0)
    return recon_loss + commit, {"recon": recon_loss.detach(), "commit": commit.detach()}


class InssegTask(Task):
    """COCO instances: a variable number of objects, each box + class + mask codes (PAPER_NOTES §4.5)."""

    name = "insseg"
    code_kind = "mask"
    splits = ("train", "val")
    configs = CONFIGS
    scores = (
        _ap("box_ap", "box AP", "bbox", "AP"),
        _ap("mask_ap", "mask AP", "segm", "AP"),
        _ap("box_ap50", "box AP50", "bbox", "AP50", headline=()),
        _ap("mask_ap50", "mask AP50", "segm", "AP50", headline=()),
        Score("found", "GT objects found (IoU>=0.5; right class)", ("hits",), ("prior_baseline", "hits"),
              headline=(), text=hits_text),
    )
    tokenizer_score = Score("mask_ap", "mask AP", ("AP",))
    baseline_note = "the image-blind class prior"

    def tokenizer(self, job: TokenizerJob) -> TokenizerRecipe:
        return TokenizerRecipe(job.cfg.model, MaskCrops(job.records, job.cfg.train.crop_size, job.seed),
                               tokenizer_loss)

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        categories = read_categories(ctx.prepared)
        return evaluate_masks(ctx.model, ctx.records, categories, ctx.config["train"]["crop_size"], ctx.tau,
                              ctx.device, progress=ctx.progress)

    def cache_layout(self, splits, tok, cfg, prepared) -> InstanceLayout:
        s = int(tok.config["train"]["crop_size"])
        return InstanceLayout(s, token_grid(tok.model.cfg, s), token_dtype(tok.model.cfg.num_embeddings),
                              tuple(read_categories(prepared)))

    def vocab_classes(self, manifest):
        return len(manifest["categories"])

    def training(self, manifest, cfg) -> TrainingRecipe:
        h, w = manifest["tokenizer"]["grid"]
        ids = [c["id"] for c in manifest["categories"]]
        crop = manifest["mask_crop_size"]
        return TrainingRecipe(
            cfg.num_query * objseq.tokens_per_object(h * w), cfg.image_size,
            functools.partial(InssegExamples, cfg.image_size, cfg.scale_range, cfg.color_jitter, ids, crop),
            collate_insseg, functools.partial(InssegLoss, cfg=cfg, mask_size=crop))

    def evaluate(self, ctx: SolverEval) -> SolverResult | None:
        categories = read_categories(ctx.prepared)
        ids = [c["id"] for c in ctx.manifest["categories"]]  # contiguous class k <-> ids[k], as in training
        if len(ids) != ctx.vocab.num_classes:
            raise DataError(f"{ctx.prepared}: {len(ids)} cached categories, but the solver has "
                            f"{ctx.vocab.num_classes}")
        cfg, infer = ctx.task_cfg, ctx.infer_cfg
        device = next(ctx.model.parameters()).device

        def predict(first: int, images):
            # top_p > 0 samples reproducibly: one generator per batch (seeded by its first image), so the
            # draws do not depend on which process decodes the batch
            generator = torch.Generator(device=device).manual_seed(infer.seed + first)
            return infer_instances(ctx.model, ctx.tokenizer, ctx.vocab, cfg, infer, images, ids, generator)

        with ctx.progress("evaluate insseg") as cb:
            metrics, results, panels = evaluate_insseg(predict, ctx.records, categories,
                                                       read_split(ctx.prepared, self.splits[0]),
                                                       cfg.num_query, ctx.opts, infer.panel_score, cb)
        if metrics is None:  # another rank than 0: its batches went to rank 0
            return None
        # compact: a full COCO run holds ~500k results
        text = json.dumps(results, sort_keys=True, separators=(",", ":"))
        return SolverResult(metrics, panels, {"insseg_results.json": text.encode()})

    def inspect_panel(self, sample, model, manifest):
        names = {c["id"]: c["name"] for c in manifest["categories"]}
        return instance_panel_cached(sample, model, names, tuple(manifest["tokenizer"]["grid"]))


def read_categories(prepared) -> list[dict]:
    """The prepared `categories.json` (COCO categories of the dataset)."""
    path = prepared / "categories.json"
    if not path.is_file():
        raise DataError(f"{path}: prepared file not found (run `dvc repro prepare`)")
    return json.loads(path.read_text())


TASK = InssegTask()
