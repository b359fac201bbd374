"""Depth adapter: raster sequences, full-vocabulary CE, aux SiLog through the frozen detokenizer, and the
four soft/hard combinations of Table 7 (PAPER_NOTES §4.4, §3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.vocab import Vocab
from pipeline.models.solver import Solver, SolverConfig
from pipeline.models.vqvae import VQVAE, VQVAEConfig
from pipeline.tasks.depth import task as dep
from pipeline.tasks.depth.losses import silog_loss
from pipeline.tasks.sequences import IGNORE_INDEX

VOCAB = Vocab.build(num_bins=20, num_classes=5, mask_codes=8, depth_codes=16)  # V = 21+5+2+8+16 = 52
GRID = (4, 4)  # 32 x 32 depth maps, downsample 8


def _tokenizer(seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    model = VQVAE(VQVAEConfig(hidden_dim=8, downsample_ratio=8, num_embeddings=16, embedding_dim=16)).eval()
    with torch.no_grad():  # random init decodes to ~0 m; shift to ~3 m so the 1e-3 clip stays inactive
        model.decoder[-1].bias.fill_(3.0)
    for p in model.parameters():
        p.requires_grad_(False)  # frozen, as the solver stage holds it
    return model


def _indices(batch=2, seed=0) -> torch.Tensor:
    return torch.randint(16, (batch, *GRID), generator=torch.Generator().manual_seed(seed))


def _logits(batch=2, seed=0, requires_grad=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, VOCAB.size, generator=g).requires_grad_(requires_grad)


def test_depth_sequence_is_raster_order_and_round_trips():
    indices = _indices()
    tokens_in, targets = dep.depth_sequence(indices, VOCAB)
    assert tokens_in.shape == (2, 15) and targets.shape == (2, 16)
    assert torch.equal(tokens_in, targets[:, :-1])
    assert int(targets[1, 2 * 4 + 3]) == int(indices[1, 2, 3]) + VOCAB.offset("depth")  # row-major
    assert torch.equal(VOCAB.to_local(targets, "depth").view(2, *GRID), indices)


def test_ce_is_full_vocabulary_mean_and_ignores_minus_100():
    logits = _logits()
    _, targets = dep.depth_sequence(_indices(), VOCAB)
    loss, parts = dep.depth_loss(logits, targets, vocab=VOCAB)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert set(parts) == {"ce", "accuracy"}
    masked = targets.clone()
    masked[:, ::2] = IGNORE_INDEX
    loss_masked, _ = dep.depth_loss(logits, masked, vocab=VOCAB)
    expected = F.cross_entropy(logits[:, 1::2].flatten(0, 1), targets[:, 1::2].flatten())
    torch.testing.assert_close(loss_masked, expected)
    # a trainer-supplied normaliser (the all-reduced mean count) replaces the local count
    scaled, _ = dep.depth_loss(logits, targets, vocab=VOCAB, num_targets=64.0)
    torch.testing.assert_close(scaled, loss * 32 / 64)


def test_token_accuracy_counts_supervised_argmax_hits():
    _, targets = dep.depth_sequence(_indices(), VOCAB)
    logits = torch.zeros(2, 16, VOCAB.size)
    logits.scatter_(-1, targets[..., None], 1.0)
    logits[0, :4] = 0.0
    logits[0, :4, 0] = 1.0  # 4 wrong of 32
    assert float(dep.token_accuracy(logits, targets)) == pytest.approx(28 / 32)
    targets = targets.clone()
    targets[0, :4] = IGNORE_INDEX  # ignored positions do not count
    assert float(dep.token_accuracy(logits, targets)) == 1.0


def test_aux_silog_matches_reference_and_grads_reach_logits_only():
    tokenizer = _tokenizer()
    logits = _logits(requires_grad=True)
    _, targets = dep.depth_sequence(_indices(), VOCAB)
    gt = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 5
    gt[:, :, :4] = 0.0  # invalid pixels
    loss, parts = dep.depth_loss(logits, targets, vocab=VOCAB, tokenizer=tokenizer, gt_depth=gt, tau=0.8)
    depth_slice = logits[..., VOCAB.offset("depth") : VOCAB.offset("depth") + 16]
    codes = depth_slice.reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    reference = silog_loss(tokenizer.decode_soft(codes, 0.8), gt, lam=0.5)
    torch.testing.assert_close(parts["silog"], reference.detach())
    ce, _ = dep.depth_loss(logits, targets, vocab=VOCAB)
    torch.testing.assert_close(loss, ce + reference)  # CE_mean + 1.0·SiLog (PAPER_NOTES §3.3)
    assert torch.isfinite(loss)
    dep.depth_aux_loss(logits, tokenizer, gt, VOCAB, tau=0.8).backward()
    depth_grad = logits.grad[..., VOCAB.offset("depth") : VOCAB.offset("depth") + 16]
    assert depth_grad.abs().sum() > 0 and logits.grad[..., : VOCAB.offset("depth")].abs().max() == 0
    assert all(p.grad is None for p in tokenizer.parameters())
    with pytest.raises(ValueError):
        dep.depth_loss(logits, targets, vocab=VOCAB, tokenizer=tokenizer)  # gt_depth missing


def test_predict_depth_hard_soft_and_clipping():
    tokenizer = _tokenizer()
    logits = _logits()
    hard = dep.predict_depth(logits, tokenizer, GRID, VOCAB, soft_decode=False)
    assert hard.shape == (2, 1, 32, 32) and hard.min() >= dep.MIN_DEPTH
    argmax = logits[..., VOCAB.offset("depth") : VOCAB.offset("depth") + 16].argmax(-1) + VOCAB.offset("depth")
    torch.testing.assert_close(dep.predict_depth(argmax, tokenizer, GRID, VOCAB, soft_decode=False), hard)
    reference = tokenizer.decode((argmax - VOCAB.offset("depth")).view(2, *GRID)).clamp_min(1e-3)
    torch.testing.assert_close(hard, reference)
    peaked = dep.predict_depth(logits * 1e4, tokenizer, GRID, VOCAB, soft_decode=True)  # one-hot soft
    torch.testing.assert_close(peaked, hard, atol=1e-4, rtol=1e-4)
    soft = dep.predict_depth(logits, tokenizer, GRID, VOCAB, soft_decode=True, tau=0.8)
    assert soft.min() >= dep.MIN_DEPTH and (soft - hard).abs().max() > 1e-4
    with pytest.raises(ValueError):
        dep.predict_depth(argmax, tokenizer, GRID, VOCAB, soft_decode=True)


def test_table7_four_combinations_from_the_solver():
    tokenizer = _tokenizer()
    cfg = SolverConfig(dim=32, num_heads=4, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                       max_seq_len=16)
    torch.manual_seed(0)
    solver = Solver(cfg, VOCAB.size, backbone_channels=8).eval()
    memory = solver.encode(torch.randn(2, 8, 2, 2, generator=torch.Generator().manual_seed(0)))
    outputs = {}
    for solver_soft in (False, True):
        soft_kinds = dep.SOFT_KINDS if solver_soft else frozenset()
        tokens, logits = solver.generate(memory, dep.TASK_ID, 16, dep.generation_kinds(), VOCAB, soft_kinds)
        assert ((tokens >= VOCAB.offset("depth")) & (tokens < VOCAB.offset("depth") + 16)).all()
        for detok_soft in (False, True):
            source = logits if detok_soft else tokens
            depth = dep.predict_depth(source, tokenizer, GRID, VOCAB, detok_soft, 0.8)
            outputs[solver_soft, detok_soft] = depth
    assert all(o.shape == (2, 1, 32, 32) for o in outputs.values())
    assert not torch.allclose(outputs[False, True], outputs[False, False])  # detokenizer switch matters
    assert not torch.allclose(outputs[True, True], outputs[False, True])  # the solver switch matters
