"""Instance-segmentation adapter: sequence-builder invariants, loss masking, aux gradients, paste, decode,
and a tiny overfit of the real solver (PAPER_NOTES §4.5, §3.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.vocab import Vocab
from pipeline.models.sampling import decoding_plan
from pipeline.models.solver import Solver, SolverConfig
from pipeline.models.vqvae import VQVAE, VQVAEConfig
from pipeline.tasks.insseg import sequence as ins
from pipeline.tasks.insseg.config import InssegInferConfig, InssegTaskConfig
from pipeline.tasks.insseg.losses import dice_loss
from pipeline.tasks.insseg.noise import noise_objects, truncated_normal
from pipeline.tasks.insseg.paste import paste_masks
from pipeline.tasks.sequences import IGNORE_INDEX, token_accuracy

VOCAB = Vocab.build(num_bins=200, num_classes=5, mask_codes=16, depth_codes=None)
M = 16  # 4 x 4 mask grid of the tiny tokenizer below
T = 21
NORM = 64.0  # coordinate normalisation = padded input side
HW = (48, 64)


def _task(num_query: int) -> InssegTaskConfig:
    return InssegTaskConfig(num_query=num_query, image_size=int(NORM))


def _decoding(soft: bool) -> InssegInferConfig:
    return InssegInferConfig(soft_decode=soft)


def _tokenizer(seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    cfg = VQVAEConfig(hidden_dim=8, downsample_ratio=16, num_embeddings=16, embedding_dim=16,
                      input_scale="symmetric")
    model = VQVAE(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen, as the solver stage holds it
    return model


def _image(n: int, seed: int, hw=HW) -> ins.ImageTargets:
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
    wh = 4 + torch.rand(n, 2, generator=g) * torch.tensor([W * 0.35, H * 0.35])
    boxes = torch.cat((xy, xy + wh), dim=1)
    labels = torch.randint(VOCAB.num_classes, (n,), generator=g)
    return ins.ImageTargets(boxes, labels, torch.randint(16, (n, M), generator=g), hw, NORM)


ZERO_CODES = torch.full((M,), 3)


class _DupCodes:
    """Test double of the caller's duplicate-mask encoder: records calls, returns 100 + source index % 16."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, b, sources, boxes):
        self.calls.append((b, sources.clone(), boxes.clone()))
        return (sources[:, None] % 16).expand(len(sources), M)


def _build(images, num_query=6, seed=0, fn=None):
    fn = fn or _DupCodes()
    seq = ins.build_sequences(images, VOCAB, num_query, torch.Generator().manual_seed(seed), fn, ZERO_CODES)
    return seq, fn


def _objects(x):
    return x.reshape(x.shape[0], -1, T)


# -------------------------------------------------------------------------------------------------
# sequence builder


def test_layout_real_objects_first_all_supervised_then_noise_with_noise_class():
    images = [_image(3, seed=1), _image(1, seed=2)]
    seq, _ = _build(images, num_query=6)
    assert seq.tokens_in.shape == (2, 6 * T - 1) and seq.targets.shape == seq.weights.shape == (2, 6 * T)
    assert seq.num_real.tolist() == [3, 1]
    targets, weights = _objects(seq.targets), _objects(seq.weights)
    for b, image in enumerate(images):
        order, n = seq.real_order[b], int(seq.num_real[b])
        assert sorted(order.tolist()) == list(range(len(image.labels)))
        real = targets[b, :n]
        torch.testing.assert_close(real[:, :4], VOCAB.coord_to_token(image.boxes_xyxy[order], NORM))
        assert torch.equal(real[:, 4], image.labels[order] + VOCAB.class_offset)
        assert torch.equal(real[:, 5:], image.mask_indices[order] + VOCAB.offset("mask"))
        noise = targets[b, n:]
        assert (noise[:, :4] == IGNORE_INDEX).all() and (noise[:, 5:] == IGNORE_INDEX).all()
        assert (noise[:, 4] == VOCAB.noise_token).all()
    assert (weights[targets == IGNORE_INDEX] == 0).all()
    assert (weights[:, :, 5:][targets[:, :, 5:] != IGNORE_INDEX] == 0.2).all()
    assert (weights[:, :, :5][targets[:, :, :5] != IGNORE_INDEX] == 1.0).all()


def test_corruption_changes_class_inputs_only_and_targets_keep_true_classes():
    images = [_image(4, seed=s) for s in range(8)]
    seq, _ = _build(images, num_query=10)
    inputs = torch.cat((seq.tokens_in, torch.zeros(len(images), 1, dtype=torch.long)), dim=1)
    is_class_slot = (torch.arange(10 * T) % T == 4).expand_as(seq.targets)
    # non-class slots: the input at position j is the clean token j (= target j where supervised)
    keep = ~is_class_slot & (seq.targets != IGNORE_INDEX)
    keep[:, -1] = False
    assert torch.equal(inputs[keep], seq.targets[keep])
    # every input class slot is a class or the noise token, about half of each (400 slots)
    classes = inputs[is_class_slot]
    is_class = (classes >= VOCAB.class_offset) & (classes < VOCAB.class_offset + VOCAB.num_classes)
    assert (is_class | (classes == VOCAB.noise_token)).all()
    assert 0.4 < is_class.float().mean() < 0.6
    # the targets' real class slots are the true labels (corruption never reaches them)
    for b, image in enumerate(images):
        true_classes = image.labels[seq.real_order[b]] + VOCAB.class_offset
        assert torch.equal(_objects(seq.targets)[b, :4, 4], true_classes)


def test_noise_objects_duplicates_and_bad_boxes():
    images = [_image(2, seed=s) for s in range(6)]
    seq, fn = _build(images, num_query=12, seed=3)
    inputs = _objects(torch.cat((seq.tokens_in, torch.zeros(6, 1, dtype=torch.long)), dim=1))
    assert fn.calls, "six images with 10 noise slots each should draw some duplicates"
    for b, sources, boxes in fn.calls:
        image = images[b]
        src = image.boxes_xyxy[sources]
        sides = (src[:, 2:] - src[:, :2]).repeat(1, 2)
        clipped_src = src.clamp_min(0).minimum(torch.tensor([HW[1], HW[0]] * 2))
        # jitter = side · truncnormal(±2) / 2 · 0.1, at most 0.1 · side, then clipped to the image
        assert ((boxes - clipped_src).abs() <= 0.1 * sides + 1e-4).all()
        n = int(seq.num_real[b])
        noise_masks = (inputs[b, n:, 5:] - VOCAB.offset("mask"))[:, :-1]  # the very last token is no input
        dup_rows = (noise_masks != ZERO_CODES[:-1]).any(dim=1)
        assert int(dup_rows.sum()) == len(sources)  # the others carry the all-zero mask's codes
        assert torch.equal(noise_masks[dup_rows], (sources[:, None] % 16).expand(-1, M - 1))
    noise_coords = VOCAB.token_to_coord(inputs[:, :, :4], NORM)  # every box lies inside the image
    assert (noise_coords[..., 0::2] <= HW[1] + NORM / 400).all()
    assert (noise_coords[..., 1::2] <= HW[0] + NORM / 400).all()


def test_sequences_are_deterministic_for_a_seeded_generator():
    images = [_image(3, seed=1), _image(5, seed=2)]
    a, fa = _build(images, seed=7)
    b, fb = _build(images, seed=7)
    c, _ = _build(images, seed=8)
    for name in ("tokens_in", "targets", "weights", "num_real"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert all(torch.equal(x, y) for x, y in zip(a.real_order, b.real_order, strict=True))
    assert len(fa.calls) == len(fb.calls)
    assert not torch.equal(a.tokens_in, c.tokens_in)


def test_image_without_objects_is_all_noise_and_never_asks_for_duplicates():
    empty = ins.ImageTargets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                             torch.zeros(0, M, dtype=torch.long), HW, NORM)
    seq, fn = _build([empty], num_query=5)
    assert seq.num_real.tolist() == [0] and seq.real_order[0].numel() == 0 and not fn.calls
    targets = _objects(seq.targets)[0]
    assert (targets[:, 4] == VOCAB.noise_token).all()
    assert int((targets != IGNORE_INDEX).sum()) == 5  # only the five noise class targets
    inputs = _objects(torch.cat((seq.tokens_in, torch.zeros(1, 1, dtype=torch.long)), dim=1))[0]
    assert torch.equal(inputs[:-1, 5:], (ZERO_CODES + VOCAB.offset("mask")).expand(4, M))


def test_more_objects_than_num_query_keeps_a_random_subset():
    image = _image(9, seed=4)
    seq, fn = _build([image], num_query=4)
    order = seq.real_order[0]
    assert seq.num_real.tolist() == [4] and len(set(order.tolist())) == 4 and not fn.calls
    assert (seq.targets != IGNORE_INDEX).all()
    expected = VOCAB.coord_to_token(image.boxes_xyxy[order], NORM)
    torch.testing.assert_close(_objects(seq.targets)[0, :, :4], expected)


def test_area_order_puts_the_largest_boxes_first_every_time():
    image = _image(9, seed=4)
    area = (image.boxes_xyxy[:, 2:] - image.boxes_xyxy[:, :2]).prod(1)
    largest = torch.argsort(area, descending=True)
    orders = [ins.build_sequences([image], VOCAB, 4, torch.Generator().manual_seed(s), _DupCodes(),
                                  ZERO_CODES, order="area").real_order[0] for s in range(3)]
    assert all(torch.equal(o, largest[:4]) for o in orders)  # beyond num_query the smallest are dropped
    random = [_build([image], num_query=9, seed=s)[0].real_order[0] for s in range(3)]
    assert len({tuple(o.tolist()) for o in random}) == 3
    with pytest.raises(ValueError, match="object order"):
        ins.build_sequences([image], VOCAB, 4, torch.Generator(), _DupCodes(), ZERO_CODES, order="size")


def test_coordinate_tokens_round_trip_within_half_a_bin():
    coords = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * NORM
    back = VOCAB.token_to_coord(VOCAB.coord_to_token(coords, NORM), NORM)
    assert (back - coords).abs().max() <= NORM / VOCAB.num_bins / 2 + 1e-5


def test_truncated_normal_and_noise_box_statistics():
    g = torch.Generator().manual_seed(0)
    x = truncated_normal((20000,), g)
    assert x.abs().max() <= 2.0 and abs(float(x.mean())) < 0.03
    assert abs(float(x.std()) - 0.8796) < 0.02  # std of N(0, 1) truncated at ±2
    noise = noise_objects(torch.zeros(0, 4), 50, HW, g)  # no GT: only random boxes
    assert noise.boxes.shape == (50, 4) and (noise.source == -1).all()
    assert (noise.boxes[:, 2:] >= noise.boxes[:, :2]).all()


def test_generation_kinds_tile_the_object_layout():
    kinds = ins.generation_kinds(3, M)
    assert len(kinds) == 3 * T and kinds[:6] == [("coord",)] * 4 + [("class",), ("mask",)]
    legal, soft = decoding_plan(VOCAB, kinds, 3 * T, ins.SOFT_KINDS)
    assert not legal[4, VOCAB.noise_token] and legal[4, VOCAB.class_offset]  # noise is never chosen
    assert soft.view(3, T)[:, 5:].all() and not soft.view(3, T)[:, :5].any()


# -------------------------------------------------------------------------------------------------
# loss


def test_ce_is_weighted_sum_over_supervised_targets_and_ignores_the_rest():
    seq, _ = _build([_image(2, seed=1), _image(0, seed=2)], num_query=3)
    logits = torch.randn(2, 3 * T, VOCAB.size, generator=torch.Generator().manual_seed(0))
    loss, parts = ins.insseg_loss(logits, seq, vocab=VOCAB)
    sup = seq.targets != IGNORE_INDEX
    ce = F.cross_entropy(logits[sup], seq.targets[sup], reduction="none")  # full vocabulary
    expected = (ce * seq.weights[sup]).sum() / sup.sum()
    torch.testing.assert_close(loss, expected)
    changed = logits.clone()
    changed[~sup] = torch.randn_like(changed[~sup]) * 10  # logits at ignored targets do not matter
    torch.testing.assert_close(ins.insseg_loss(changed, seq, vocab=VOCAB)[0], loss)
    assert float(parts["accuracy"]) == float(token_accuracy(logits, seq.targets))


def test_aux_loss_matches_reference_and_grads_reach_logits_only():
    tokenizer = _tokenizer()
    images = [_image(2, seed=1), _image(3, seed=2)]
    seq, _ = _build(images, num_query=4)
    g = torch.Generator().manual_seed(1)
    crops = [(torch.rand(len(im.labels), 64, 64, generator=g) > 0.5).float() for im in images]
    logits = torch.randn(2, 4 * T, VOCAB.size, generator=g).requires_grad_(True)
    loss, parts = ins.insseg_loss(logits, seq, vocab=VOCAB, tokenizer=tokenizer, gt_crops=crops)
    # reference: decode_soft of each real object's mask-code logits vs its crop, in sequence order
    r = VOCAB.task_range("mask")
    preds, gts = [], []
    for b in range(2):
        for slot, obj in enumerate(seq.real_order[b].tolist()):
            code = logits[b, slot * T + 5 : slot * T + T, r.start : r.stop].reshape(1, 4, 4, 16)
            preds.append(tokenizer.decode_soft(code.permute(0, 3, 1, 2)))
            gts.append(crops[b][obj][None, None])
    pred, gt = torch.cat(preds), torch.cat(gts)
    torch.testing.assert_close(parts["dice"], dice_loss(pred, gt).detach())
    torch.testing.assert_close(parts["mse"], F.mse_loss(pred, gt).detach())
    ce_only = ins.insseg_loss(logits, seq, vocab=VOCAB)[0]
    num_mask, num_sup = 5 * M, int((seq.targets != IGNORE_INDEX).sum())
    expected = ce_only + 5.0 * 0.2 * num_mask * (parts["dice"] + parts["mse"]) / num_sup
    torch.testing.assert_close(loss.detach(), expected.detach())
    assert torch.isfinite(loss)
    aux = sum(ins.mask_aux_losses(logits, seq, tokenizer, crops, VOCAB))
    aux.backward()
    grad = _objects(logits.grad.abs().sum(-1))
    assert grad[0, :2, 5:].min() > 0 and grad[1, :3, 5:].min() > 0  # every real mask position
    assert grad[:, :, :5].max() == 0 and grad[0, 2:].max() == 0 and grad[1, 3:].max() == 0
    assert all(p.grad is None for p in tokenizer.parameters())


def test_gt_crops_as_a_list_or_in_sequence_order_agree():
    tokenizer = _tokenizer()
    images = [_image(2, seed=1), _image(3, seed=2)]
    seq, _ = _build(images, num_query=4)
    g = torch.Generator().manual_seed(2)
    crops = [torch.rand(len(im.labels), 1, 64, 64, generator=g) for im in images]
    ordered = torch.cat([c[o] for c, o in zip(crops, seq.real_order, strict=True)])
    logits = torch.randn(2, 4 * T, VOCAB.size, generator=g)
    a = ins.insseg_loss(logits, seq, vocab=VOCAB, tokenizer=tokenizer, gt_crops=crops)[0]
    b = ins.insseg_loss(logits, seq, vocab=VOCAB, tokenizer=tokenizer, gt_crops=ordered)[0]
    torch.testing.assert_close(a, b)


# -------------------------------------------------------------------------------------------------
# paste and decode


def test_paste_box_filling_mask_gives_the_box_and_zero_mask_nothing():
    ones = torch.ones(3, 64, 64)
    boxes = torch.tensor([[3.0, 5.0, 20.0, 11.0], [0.0, 0.0, 64.0, 48.0], [40.0, 30.0, 41.0, 47.0]])
    pasted = paste_masks(ones, boxes, HW)
    for mask, (x0, y0, x1, y1) in zip(pasted, boxes.long().tolist(), strict=True):
        expected = torch.zeros(HW, dtype=torch.bool)
        expected[y0:y1, x0:x1] = True
        assert torch.equal(mask, expected)
    odd = torch.tensor([[2.3, 4.6, 17.8, 31.2], [10.5, 0.4, 13.4, 40.9]])
    for mask, box in zip(paste_masks(torch.ones(2, 64, 64), odd, HW), odd, strict=True):
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        expected = torch.zeros(HW, dtype=torch.bool)
        expected[y0:y1, x0:x1] = True
        iou = (mask & expected).sum() / (mask | expected).sum()
        assert iou >= 0.95
    assert not paste_masks(torch.zeros(2, 64, 64), boxes[:2], HW).any()
    outside = torch.tensor([[70.0, 50.0, 90.0, 60.0]])
    assert not paste_masks(torch.ones(1, 64, 64), outside, HW).any()


def test_paste_follows_the_map_left_half():
    half = torch.zeros(1, 64, 64)
    half[:, :, :32] = 1.0
    pasted = paste_masks(half, torch.tensor([[8.0, 8.0, 24.0, 16.0]]), HW)[0]
    assert pasted[8:16, 8:16].all() and not pasted[:, 16:].any() and int(pasted.sum()) == 64


def test_decode_objects_hand_built():
    tokenizer = _tokenizer()
    Q = 3
    tokens = torch.zeros(1, Q * T, dtype=torch.long)
    objs = tokens.view(1, Q, T)
    objs[0, 0, :5] = torch.tensor([20, 30, 100, 120, VOCAB.class_offset + 2])  # px = token · 64/200
    objs[0, 1, :5] = torch.tensor([50, 10, 50, 60, VOCAB.class_offset + 0])  # x2 == x1: kept, empty mask
    objs[0, 2, :5] = torch.tensor([0, 0, 150, 140, VOCAB.class_offset + 4])
    objs[0, :, 5:] = VOCAB.offset("mask") + torch.arange(M) % 16
    logits = torch.zeros(1, Q * T, VOCAB.size)
    class_logits = logits.view(1, Q, T, -1)[0, :, 4]
    class_logits[0, VOCAB.class_offset + 2] = 3.0
    class_logits[0, VOCAB.noise_token] = 1.0
    class_logits[2, VOCAB.class_offset + 4] = 100.0  # overwhelming: score -> 1
    class_logits[2, VOCAB.class_offset + 1] = 200.0  # not the chosen class; the score is P(chosen)
    out = ins.decode_objects(tokens, logits, VOCAB, tokenizer, _task(Q), [HW], _decoding(False))[0]
    expected = torch.tensor([[6.4, 9.6, 32.0, 38.4], [16.0, 3.2, 16.0, 19.2], [0.0, 0.0, 48.0, 44.8]])
    torch.testing.assert_close(out["boxes_xyxy"], expected)
    assert out["labels"].tolist() == [2, 0, 4]  # one detection per query (PAPER_NOTES §5.2)
    e = math.exp(3.0)
    torch.testing.assert_close(out["scores"][0], torch.tensor(e / (e + math.e + 4.0)))  # noise in denominator
    assert float(out["scores"][2]) < 1e-6
    maps = tokenizer.decode(torch.arange(M).remainder(16).view(1, 4, 4).expand(2, 4, 4))[:, 0]
    assert not out["masks"][1].any()  # the degenerate box's mask is empty
    assert torch.equal(out["masks"][[0, 2]], paste_masks(maps, out["boxes_xyxy"][[0, 2]], HW))
    # soft decode of very peaked logits at the same codes gives the same masks
    logits.view(1, Q, T, -1)[0, :, 5:].scatter_(-1, objs[0, :, 5:, None], 1e4)
    soft = ins.decode_objects(tokens, logits, VOCAB, tokenizer, _task(Q), [HW], _decoding(True))[0]
    assert torch.equal(soft["masks"], out["masks"])
    half = ins.decode_objects(tokens, logits, VOCAB, tokenizer, _task(Q), [(24, 32)], scale_factors=[2.0])[0]
    torch.testing.assert_close(half["boxes_xyxy"], out["boxes_xyxy"] / 2)
    assert half["masks"].shape == (3, 24, 32)


# -------------------------------------------------------------------------------------------------
# overfit the real solver


@pytest.mark.slow
def test_tiny_solver_overfits_two_images_insseg_sequences():
    tokenizer = _tokenizer()
    images = [_image(2, seed=11), _image(3, seed=12)]
    num_query = 4
    cfg = SolverConfig(dim=64, num_heads=4, ffn_dim=128, num_encoder_layers=1, num_decoder_layers=2,
                       dropout=0.0, drop_path=0.0, max_seq_len=num_query * T)
    torch.manual_seed(0)
    solver = Solver(cfg, VOCAB.size, backbone_channels=16)
    features = torch.randn(2, 16, 2, 2, generator=torch.Generator().manual_seed(0))  # fixed "backbone"
    g = torch.Generator().manual_seed(0)
    crops = [(torch.rand(len(im.labels), 64, 64, generator=g) > 0.5).float() for im in images]
    dup_codes = lambda b, sources, boxes: images[b].mask_indices[sources]  # noqa: E731
    opt = torch.optim.AdamW(solver.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(150):  # reaches ~0.99 after ~100 steps
        seq = ins.build_sequences(images, VOCAB, num_query, g, dup_codes, ZERO_CODES)
        logits = solver(solver.encode(features), ins.TASK_ID, seq.tokens_in)
        loss, _ = ins.insseg_loss(logits, seq, vocab=VOCAB, tokenizer=tokenizer, gt_crops=crops)
        opt.zero_grad()
        loss.backward()
        opt.step()
    solver.eval()
    with torch.no_grad():
        accs = []
        for _ in range(5):  # fresh orders, noise and corruption
            seq = ins.build_sequences(images, VOCAB, num_query, g, dup_codes, ZERO_CODES)
            logits = solver(solver.encode(features), ins.TASK_ID, seq.tokens_in)
            accs.append(token_accuracy(logits, seq.targets))
    assert float(torch.stack(accs).mean()) >= 0.9


def test_slot_accuracy_splits_hits_by_slot_and_singles_out_the_first_box():
    seq, _ = _build([_image(2, seed=1), _image(3, seed=2)], num_query=3)
    sup = seq.targets != IGNORE_INDEX
    logits = torch.zeros(2, 3 * T, VOCAB.size)
    right = seq.targets.clamp_min(0)
    logits.scatter_(2, right[..., None], 1.0)  # every supervised target is the argmax ...
    slots = torch.arange(3 * T) % T
    wrong = (slots >= ins.MASK_START) & (torch.arange(3 * T) < T)  # ... but the first object's mask codes
    logits[:, wrong] = 0.0
    logits[:, wrong, VOCAB.noise_token] = 1.0  # never a mask-code target
    parts = ins.slot_accuracy(logits, seq.targets, T)
    assert float(parts["accuracy_box"]) == float(parts["accuracy_class"]) == 1.0
    assert float(parts["accuracy_box_first"]) == 1.0
    mask_sup = sup & (slots >= ins.MASK_START)
    expected = (mask_sup & ~wrong).sum() / mask_sup.sum()
    assert float(parts["accuracy_mask"]) == pytest.approx(float(expected))
    first_wrong = logits.clone()
    first_wrong[:, 0] = 0.0
    first_wrong[:, 0, VOCAB.noise_token] = 1.0  # x1 of the first object missed in both images
    parts = ins.slot_accuracy(first_wrong, seq.targets, T)
    assert float(parts["accuracy_box_first"]) == 0.75
    assert float(parts["accuracy_box"]) == pytest.approx(1 - 2 / float((sup & (slots < 4)).sum()))
