"""Instance-segmentation task adapter: objects -> Pix2Seq-style token sequences, loss, tokens -> instances.

Follows PAPER_NOTES §4.5 (official `InsSegHead.get_seq` / `build_input_seq` / `get_targets` / `loss2` /
`_get_bboxes_single`) and §3.3 (aux loss). One object = `[x1, y1, x2, y2, class, m_0 .. m_{M-1}]`, M the
mask tokenizer's grid size (4 x 4 = 16 in the paper, so 21 tokens); `num_query` objects per image.
- `build_sequences`: real objects first in a random order, then noise objects (`noise.py`) with the noise
  class; noise box and mask targets are ignored (−100), their class target is the noise token; every
  class slot of the decoder INPUT is corrupted (random class / noise, p 0.5 / 0.5), never the targets;
- `insseg_loss`: weighted CE over the full vocabulary (mask-code targets × 0.2) / supervised tokens, plus
  the Dice + MSE aux term of the soft-decoded real-object masks against their GT 64² crops;
- `slot_accuracy`: teacher-forced accuracy of box, class and mask slots and of the first object's box;
- `decode_objects`: boxes, labels, scores (noise logit in the softmax denominator) and pasted masks.

Deliberate differences from the official code:
- images with more than `num_query` objects keep a random `num_query` of them (the official code
  crashes); `SeqBatch.real_order` records which, so the caller can drop the rest from the aux targets;
- the aux term works for any batch size: the GT crops travel with the batch (`gt_crops`), ordered here
  by `SeqBatch.real_order`; the official code asserts one image per GPU (PAPER_NOTES §3.3);
- the duplicate boxes' mask codes come from a caller-supplied `noise_mask_indices(image, sources, boxes)`
  (the caller crops the SOURCE object's GT mask at the jittered box and encodes it, the documented
  fallback of the token cache); this module never touches the tokenizer encoder or any file;
- every random draw comes from the caller's `torch.Generator` (PAPER_NOTES §7.2).

Shapes: B batch, Q = num_query, T tokens per object, L = Q·T, M mask tokens, K mask codebook size,
V vocabulary, S = 64 the mask crop side, H x W image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.vocab import Vocab
from pipeline.models.vqvae import VQVAE, grid_shape
from pipeline.tasks.insseg.config import InssegInferConfig, InssegTaskConfig
from pipeline.tasks.insseg.losses import dice_loss
from pipeline.tasks.insseg.masks import MASK_CROP_SIZE
from pipeline.tasks.insseg.noise import noise_objects
from pipeline.tasks.insseg.paste import PASTE_THRESHOLD, paste_masks
from pipeline.tasks.registry import TASK_IDS
from pipeline.tasks.sequences import (
    IGNORE_INDEX,
    hit_rate,
    num_supervised,
    sequence_ce_sum,
    token_accuracy,
    token_hits,
)

TASK_ID = TASK_IDS["insseg"]  # its row of the task embedding (tasks/registry.py)
BOX_TOKENS = 4  # x1, y1, x2, y2 (mmdet xyxy order, PAPER_NOTES §4.5)
CLASS_SLOT = 4  # the class token follows the box (`mask_before_label=False`)
MASK_START = 5  # the mask codes follow the class
SOFT_KINDS = frozenset({"mask"})  # solver-side soft inputs only at the mask positions (PAPER_NOTES §3.1)
MASK_WEIGHT = 0.2  # CE weight of mask-code targets and factor of the aux term (PAPER_NOTES §4.5, §3.3)
DEFAULT_CFG, DEFAULT_DECODING = InssegTaskConfig(), InssegInferConfig()  # their defaults are the paper's
RANDOM_CLASS_P = 0.5  # `rand_n_fake_cls`: an input class slot is a random class w.p. 0.5, else noise

NoiseMaskFn = Callable[[int, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ImageTargets:
    """The labels of one image, in the (augmented) input frame."""

    boxes_xyxy: Tensor  # (n, 4) float px
    labels: Tensor  # (n,) int64 contiguous class index 0..C-1
    mask_indices: Tensor  # (n, M) int64 local mask codes of the box crops
    image_hw: tuple[int, int]  # (H, W) of the image content, before padding
    norm: float  # coordinate normalisation: the padded input side (640 in the paper)

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.boxes_xyxy.shape != (n, 4) or self.mask_indices.ndim != 2 or self.mask_indices.shape[0] != n:
            raise ValueError(f"inconsistent targets: boxes {tuple(self.boxes_xyxy.shape)}, labels "
                             f"{tuple(self.labels.shape)}, mask indices {tuple(self.mask_indices.shape)}")


@dataclass(frozen=True)
class SeqBatch:
    """Teacher-forcing batch of instance sequences."""

    tokens_in: Tensor  # (B, L−1) int64 decoder input (class slots corrupted); position 0 = task embedding
    targets: Tensor  # (B, L) int64, IGNORE_INDEX where not supervised
    weights: Tensor  # (B, L) float CE weights (MASK_WEIGHT on mask codes, 0 where ignored)
    num_real: Tensor  # (B,) int64 real objects per image; they fill the first slots
    real_order: tuple[Tensor, ...]  # per image (num_real,) int64: object index in ImageTargets per slot


def mask_grid(tokenizer: VQVAE) -> tuple[int, int]:
    """Token grid (h, w) of the mask tokenizer on its S x S crops (4 x 4 in the paper)."""
    return grid_shape(tokenizer.cfg, MASK_CROP_SIZE, MASK_CROP_SIZE)


def tokens_per_object(mask_tokens: int) -> int:
    """T = 4 box + 1 class + M mask tokens (21 with the paper's 4 x 4 mask grid)."""
    return MASK_START + mask_tokens


def generation_kinds(num_query: int, mask_tokens: int) -> list[tuple[str, ...]]:
    """Per-position token kinds for `Solver.generate` over L = num_query·T (class excludes noise)."""
    one = [("coord",)] * BOX_TOKENS + [("class",)] + [("mask",)] * mask_tokens
    return one * num_query


# -------------------------------------------------------------------------------------------------
# labels -> sequences


def build_sequences(
    targets: Sequence[ImageTargets],
    vocab: Vocab,
    num_query: int,
    generator: torch.Generator,
    noise_mask_indices: NoiseMaskFn,
    zero_mask_indices: Tensor,
    mask_weight: float = MASK_WEIGHT,
    order: str = "random",
) -> SeqBatch:
    """Per-image labels -> SeqBatch with L = num_query·T (PAPER_NOTES §4.5 steps 1-4).

    `noise_mask_indices(image_index, sources (m,), boxes (m, 4))` returns the (m, M) local codes of the
    GT masks of objects `sources` cropped at the jittered duplicate `boxes`; `zero_mask_indices` (M,) are
    the codes of an all-zero mask, used by every bad box. `order` puts the real objects in a fresh random
    order (AiT, PAPER_NOTES §4.5) or largest box first ("area", one of Pix2Seq's orderings, §3.1 of its paper).
    """
    rows, tgt_rows, num_real, orders = [], [], [], []
    for b, image in enumerate(targets):
        real = _object_order(image.boxes_xyxy, order, generator)[:num_query]  # beyond num_query: dropped
        seq, tgt = _image_sequence(b, image, real, vocab, num_query, generator, noise_mask_indices,
                                   zero_mask_indices)
        rows.append(seq)
        tgt_rows.append(tgt)
        num_real.append(len(real))
        orders.append(real)
    clean, target = torch.stack(rows), torch.stack(tgt_rows)  # (B, Q, T)
    corrupted = clean.clone()
    corrupted[:, :, CLASS_SLOT] = _corrupt_classes(clean.shape[:2], vocab, generator).to(clean.device)
    weights = torch.ones(target.shape, dtype=torch.float32, device=target.device)
    weights[:, :, MASK_START:] = mask_weight
    weights[target == IGNORE_INDEX] = 0.0
    return SeqBatch(
        tokens_in=corrupted.flatten(1)[:, :-1],  # the last token is never an input (PAPER_NOTES §4.5 step 4)
        targets=target.flatten(1),
        weights=weights.flatten(1),
        num_real=torch.tensor(num_real, dtype=torch.long, device=target.device),
        real_order=tuple(orders),
    )


def _object_order(boxes_xyxy: Tensor, order: str, generator: torch.Generator) -> Tensor:
    """(n,) permutation of an image's objects: random, or by decreasing box area (ties: listed first)."""
    if order == "area":
        area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
        return torch.sort(area.float(), descending=True, stable=True).indices
    if order != "random":
        raise ValueError(f"object order {order!r}: expected 'random' or 'area'")
    perm = torch.randperm(len(boxes_xyxy), generator=generator, device=generator.device)
    return perm.to(boxes_xyxy.device)


def _image_sequence(
    b: int,
    image: ImageTargets,
    order: Tensor,
    vocab: Vocab,
    num_query: int,
    generator: torch.Generator,
    noise_mask_indices: NoiseMaskFn,
    zero_mask_indices: Tensor,
) -> tuple[Tensor, Tensor]:
    """One image and its real objects in sequence `order` (n_real,) -> clean tokens (Q, T), targets (Q, T)."""
    device = image.boxes_xyxy.device
    num_mask = zero_mask_indices.numel()
    if image.mask_indices.shape[1] != num_mask:
        raise ValueError(f"image {b}: {image.mask_indices.shape[1]} mask codes, expected {num_mask}")
    boxes = image.boxes_xyxy.float()[order]
    noise = noise_objects(boxes, num_query - len(order), image.image_hw, generator)
    noise_masks = zero_mask_indices.to(device).long().reshape(1, num_mask).repeat(len(noise.source), 1)
    is_dup = noise.source >= 0
    if is_dup.any():
        sources = order[noise.source[is_dup]]  # index into the image's objects, not into `order`
        dup_codes = noise_mask_indices(b, sources, noise.boxes[is_dup])
        noise_masks[is_dup] = dup_codes.to(device).long().reshape(-1, num_mask)
    noise_class = torch.full((len(noise.source),), vocab.noise_token, dtype=torch.long, device=device)
    classes = torch.cat((vocab.to_global(image.labels.long()[order], "class"), noise_class))
    seq = torch.cat(
        (
            vocab.coord_to_token(torch.cat((boxes, noise.boxes)), image.norm),
            classes[:, None],
            vocab.to_global(torch.cat((image.mask_indices.long()[order], noise_masks)), "mask"),
        ),
        dim=1,
    )  # (Q, T)
    target = seq.clone()
    target[len(order) :, :BOX_TOKENS] = IGNORE_INDEX  # noise boxes are not supervised ...
    target[len(order) :, MASK_START:] = IGNORE_INDEX  # ... nor their masks; their noise class is
    return seq, target


def _corrupt_classes(shape: torch.Size, vocab: Vocab, generator: torch.Generator) -> Tensor:
    """(B, Q) input class tokens: a uniform random class w.p. RANDOM_CLASS_P, else the noise token."""
    device = generator.device
    random_class = torch.randint(vocab.num_classes, shape, generator=generator, device=device)
    use_random = torch.rand(shape, generator=generator, device=device) < RANDOM_CLASS_P
    return torch.where(use_random, vocab.to_global(random_class, "class"), vocab.noise_token)


# -------------------------------------------------------------------------------------------------
# loss


def insseg_loss(
    logits: Tensor,
    seq: SeqBatch,
    *,
    vocab: Vocab,
    tokenizer: VQVAE | None = None,
    gt_crops: Sequence[Tensor] | Tensor | None = None,
    cfg: InssegTaskConfig = DEFAULT_CFG,
    num_targets: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, L, V) logits + SeqBatch [+ frozen mask tokenizer, GT crops] -> (loss, detached parts).

    loss = (Σ w·CE + aux_weight · mask_weight · n_mask · (Dice + MSE)) / N (the weights and the soft
    decode's tau from `cfg`, `solver.insseg`), as the official `loss2`:
    n_mask the number of supervised mask-code targets, N = `num_targets` (default: local supervised
    count). `gt_crops`: per image (n_i, [1,] S, S) in ImageTargets order, or one tensor already in
    sequence order, (sum num_real, [1,] S, S).
    """
    if (tokenizer is None) != (gt_crops is None):
        raise ValueError("the aux loss needs both the tokenizer and gt_crops (or neither)")
    count = num_supervised(seq.targets)
    norm = count if num_targets is None else torch.as_tensor(num_targets, dtype=count.dtype)
    loss = sequence_ce_sum(logits, seq.targets, seq.weights) / norm
    parts = {"ce": loss.detach(), "accuracy": token_accuracy(logits, seq.targets)}
    if tokenizer is not None:
        dice, mse = mask_aux_losses(logits, seq, tokenizer, gt_crops, vocab, cfg.tau)
        gh, gw = mask_grid(tokenizer)
        period = tokens_per_object(gh * gw)
        mask_targets = seq.targets.view(len(seq.targets), -1, period)[:, :, MASK_START:]
        num_mask = (mask_targets != IGNORE_INDEX).sum()
        loss = loss + cfg.aux_weight * cfg.mask_weight * num_mask * (dice + mse) / norm
        parts |= {"dice": dice.detach(), "mse": mse.detach()}
    return loss, parts


def slot_accuracy(logits: Tensor, targets: Tensor, period: int) -> dict[str, Tensor]:
    """Teacher-forced token accuracy per slot of an object: box coordinates, class, mask codes, and the
    first object's box alone (full-V argmax, supervised targets only, as `token_accuracy`).

    The first box is the one part of a sequence read from the image with nothing decoded before it:
    a run whose `accuracy_box` is fine but `accuracy_box_first` stays at the share of its most common
    value has learnt the coordinate prior, not where the objects are, and greedy generation then
    starts every image at that value and conditions everything after on it.
    """
    shape = (targets.shape[0], -1, period)  # (B, Q, T)
    hits, supervised = (x.view(shape) for x in token_hits(logits, targets))  # one argmax for all parts

    def part(slots: slice, first_only: bool = False) -> Tensor:
        rows = slice(0, 1) if first_only else slice(None)
        return hit_rate(hits[:, rows, slots], supervised[:, rows, slots])

    return {"accuracy_box": part(slice(0, BOX_TOKENS)), "accuracy_class": part(slice(CLASS_SLOT, MASK_START)),
            "accuracy_mask": part(slice(MASK_START, None)),
            "accuracy_box_first": part(slice(0, BOX_TOKENS), first_only=True)}


def mask_aux_losses(
    logits: Tensor,
    seq: SeqBatch,
    tokenizer: VQVAE,
    gt_crops: Sequence[Tensor] | Tensor,
    vocab: Vocab,
    tau: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """(Dice, MSE) of decode_soft(real objects' mask-code logits, τ) vs their GT crops (PAPER_NOTES §3.3)."""
    crops = _crops_in_sequence_order(gt_crops, seq)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        code_logits = real_mask_logits(logits.float(), seq.num_real, vocab, mask_grid(tokenizer))
        if code_logits.shape[0] != crops.shape[0]:
            raise ValueError(f"{code_logits.shape[0]} real objects but {crops.shape[0]} GT crops")
        if code_logits.shape[0] == 0:  # keep the graph: an image batch without objects adds 0
            zero = logits.float().sum() * 0.0
            return zero, zero
        pred = tokenizer.decode_soft(code_logits, tau)  # (N, 1, S, S), ~[0, 1]
        target = crops.to(pred)
        return dice_loss(pred, target), F.mse_loss(pred, target)


def real_mask_logits(logits: Tensor, num_real: Tensor, vocab: Vocab, grid_hw: tuple[int, int]) -> Tensor:
    """(B, L, V) logits -> (N, K, h, w) mask-code logits of the real objects (image-major, slot order)."""
    gh, gw = grid_hw
    B, L, V = logits.shape
    period = tokens_per_object(gh * gw)
    objects = logits.view(B, L // period, period, V)
    real = torch.arange(objects.shape[1], device=logits.device)[None] < num_real.to(logits.device)[:, None]
    r = vocab.task_range("mask")
    codes = objects[real][:, MASK_START:, r.start : r.stop]  # (N, M, K)
    return codes.reshape(-1, gh, gw, len(r)).permute(0, 3, 1, 2)


def _crops_in_sequence_order(gt_crops: Sequence[Tensor] | Tensor, seq: SeqBatch) -> Tensor:
    """GT crops per image (ImageTargets order) or already in sequence order -> (N, 1, S, S)."""
    if isinstance(gt_crops, Tensor):
        crops = gt_crops
    else:
        if len(gt_crops) != len(seq.real_order):
            raise ValueError(f"{len(gt_crops)} crop tensors for {len(seq.real_order)} images")
        crops = torch.cat([c.reshape(-1, *c.shape[-2:])[o.to(c.device)]
                           for c, o in zip(gt_crops, seq.real_order, strict=True)])
    return crops.reshape(-1, 1, *crops.shape[-2:])


# -------------------------------------------------------------------------------------------------
# outputs -> instances


@torch.no_grad()
def decode_objects(
    tokens: Tensor,
    logits: Tensor,
    vocab: Vocab,
    tokenizer: VQVAE,
    task: InssegTaskConfig,
    image_hw: Sequence[tuple[int, int]],
    decoding: InssegInferConfig = DEFAULT_DECODING,
    scale_factors: Sequence[float] | None = None,
) -> list[dict[str, Tensor]]:
    """Generated (B, L) tokens + raw (B, L, V) logits -> per image dict(boxes_xyxy, labels, scores, masks);
    `task.num_query` objects per sequence, `task.image_size` the coordinate normalisation (norm).

    box = token·norm/num_bins, divided by the image's scale factor (input frame -> `image_hw` frame,
    default 1); score = softmax over [class logits, noise logit] at the chosen class; masks (n, H, W)
    bool = decode_soft(τ) (or decode of the tokens) at S x S, pasted into the box at >= 0.5. Every one of
    the num_query slots is returned (no EOS, PAPER_NOTES §4.5: exactly num_query detections per image, §5.2), a
    degenerate box (x2 <= x1 or y2 <= y1) as it was generated with an empty mask: the official code keeps
    those slots too, and COCOeval counts them as false positives (dropping them would inflate AP).
    """
    num_query, norm = task.num_query, float(task.image_size)
    grid = mask_grid(tokenizer)
    period = tokens_per_object(grid[0] * grid[1])
    B = tokens.shape[0]
    objects = tokens[:, : num_query * period].reshape(B, num_query, period)
    object_logits = logits[:, : num_query * period].float().reshape(B, num_query, period, -1)
    boxes = vocab.token_to_coord(objects[..., :BOX_TOKENS], norm)  # (B, Q, 4) input-frame px
    labels = vocab.to_local(objects[..., CLASS_SLOT], "class")  # (B, Q)
    scores = _class_scores(object_logits[:, :, CLASS_SLOT], labels, vocab)
    results = []
    for b in range(B):
        box = boxes[b] / (1.0 if scale_factors is None else float(scale_factors[b]))
        valid = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        maps = _mask_maps(objects[b, valid], object_logits[b, valid], tokenizer, vocab, grid,
                          decoding.soft_decode, decoding.tau)
        masks = torch.zeros(num_query, *image_hw[b], dtype=torch.bool, device=box.device)
        masks[valid] = paste_masks(maps, box[valid], image_hw[b], PASTE_THRESHOLD)
        results.append(dict(boxes_xyxy=box, labels=labels[b], scores=scores[b], masks=masks))
    return results


def _class_scores(class_logits: Tensor, labels: Tensor, vocab: Vocab) -> Tensor:
    """(B, Q, V) logits at the class slots, (B, Q) chosen labels -> (B, Q) P(label) over classes + noise."""
    r = vocab.task_range("class")
    candidates = torch.cat((class_logits[..., r.start : r.stop], class_logits[..., [vocab.noise_token]]), -1)
    return candidates.softmax(dim=-1).gather(-1, labels[..., None])[..., 0]


def _mask_maps(
    objects: Tensor,
    object_logits: Tensor,
    tokenizer: VQVAE,
    vocab: Vocab,
    grid: tuple[int, int],
    soft_decode: bool,
    tau: float,
) -> Tensor:
    """(n, T) tokens, (n, T, V) logits of kept objects -> (n, S, S) float maps in ~[0, 1]."""
    n, (gh, gw) = objects.shape[0], grid
    if n == 0:
        return object_logits.new_zeros(0, MASK_CROP_SIZE, MASK_CROP_SIZE)
    with torch.autocast(device_type=objects.device.type, enabled=False):
        if soft_decode:
            r = vocab.task_range("mask")
            code_logits = object_logits[:, MASK_START:, r.start : r.stop].reshape(n, gh, gw, len(r))
            maps = tokenizer.decode_soft(code_logits.permute(0, 3, 1, 2), tau)
        else:
            maps = tokenizer.decode(vocab.to_local(objects[:, MASK_START:], "mask").reshape(n, gh, gw))
    return maps[:, 0]
