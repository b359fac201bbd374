"""VectorQuantizerEMA: nearest-code assignment, straight-through, EMA arithmetic, collectives, restarts."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.quantizer import VectorQuantizerEMA
from pipeline.models.soft import soft_lookup


def _quantizer(K: int, D: int, seed: int = 0, **kwargs) -> VectorQuantizerEMA:
    torch.manual_seed(seed)  # buffers are drawn from the global generator, as in the reference
    return VectorQuantizerEMA(K, D, **kwargs)


def test_quantizer_matches_bruteforce():
    vq = _quantizer(8, 4).eval()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 3, 3, generator=g)

    quantized, indices, commit = vq(z)

    assert indices.shape == (2, 3, 3) and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) < 8
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = torch.cdist(flat, vq.codebook).argmin(dim=1).view(2, 3, 3)
    assert torch.equal(indices, expected)
    assert torch.equal(quantized, vq.codebook[indices].permute(0, 3, 1, 2))
    assert torch.allclose(commit, 0.25 * ((quantized - z) ** 2).mean())


def test_straight_through_gradient_is_identity():
    vq = _quantizer(8, 4)
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    w = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(3))

    quantized, _, _ = vq(z)
    (quantized * w).sum().backward()

    assert torch.equal(z.grad, w)


def test_commit_loss_gradient_pulls_latents_to_codes():
    vq = _quantizer(8, 4).eval()
    z = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(4), requires_grad=True)

    quantized, _, commit = vq(z)
    commit.backward()

    # d/dz of 0.25 · mean((z − q)²) = 0.5 (z − q) / numel
    assert torch.allclose(z.grad, 0.5 * (z - quantized).detach() / z.numel())


def _two_code_quantizer(**kwargs) -> VectorQuantizerEMA:
    vq = VectorQuantizerEMA(2, 2, decay=0.5, eps=0.1, **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
        vq.ema_w.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
        vq.ema_cluster_size.copy_(torch.tensor([1.0, 1.0]))
    return vq


def _three_latents() -> torch.Tensor:
    # (1, D=2, h=1, w=3): [1,1] and [2,0] go to code 0, [9,9] to code 1.
    return torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]).t().reshape(1, 2, 1, 3)


def test_one_ema_step_matches_hand_computation():
    vq = _two_code_quantizer().train()

    _, indices, _ = vq(_three_latents())

    assert indices.flatten().tolist() == [0, 0, 1]
    # counts [2, 1]: cluster = 0.5·[1, 1] + 0.5·[2, 1] = [1.5, 1.0], n = 2.5
    # Laplace: ([1.5, 1.0] + 0.1) / (2.5 + 2·0.1) · 2.5 = [4/2.7, 2.75/2.7]
    cluster = torch.tensor([4.0 / 2.7, 2.75 / 2.7])
    # dw = [[3, 1], [9, 9]]: ema_w = 0.5·[[0, 0], [10, 10]] + 0.5·dw = [[1.5, 0.5], [9.5, 9.5]]
    ema_w = torch.tensor([[1.5, 0.5], [9.5, 9.5]])
    assert torch.allclose(vq.ema_cluster_size, cluster)
    assert torch.allclose(vq.ema_w, ema_w)
    assert torch.allclose(vq.codebook, ema_w / cluster[:, None])
    assert torch.allclose(vq.codebook[0], torch.tensor([1.0125, 0.3375]))


def test_eval_mode_leaves_buffers_untouched():
    vq = _two_code_quantizer().eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}

    vq(_three_latents())

    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_all_reduce_is_applied_before_the_update():
    # Two identical "ranks" (all_reduce doubles) must equal one process seeing the batch twice.
    doubled = _two_code_quantizer(all_reduce=lambda t: t.mul_(2)).train()
    twice = _two_code_quantizer().train()
    z = _three_latents()

    doubled(z)
    twice(torch.cat([z, z]))

    for name in ("codebook", "ema_w", "ema_cluster_size"):
        assert torch.allclose(getattr(doubled, name), getattr(twice, name)), name


def test_autocast_distances_stay_fp32():
    vq = _quantizer(16, 8).eval()
    z = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(5))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        quantized, indices, _ = vq(z.bfloat16())
    flat = z.bfloat16().float().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.cdist(flat, vq.codebook).argmin(dim=1).view(4, 5, 5)
    assert quantized.dtype == torch.float32
    assert torch.equal(indices, expected)


def test_dead_codes_are_restarted_from_batch_latents():
    vq = _quantizer(8, 4, dead_code_threshold=0.1).train()
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(6)) + 100.0  # far from all codes

    vq(z)

    # One code takes all 18 latents (count 0.01·18 = 0.18 after one step, kept); the other 7 have
    # ~1e-6 < 0.1 and are restarted onto latents of this batch, with count = threshold.
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    restarted = vq.ema_cluster_size == 0.1
    assert int(restarted.sum()) == 7
    for code in vq.codebook[restarted]:
        assert (flat - code).abs().sum(1).min() == 0
    assert torch.allclose(vq.ema_w[restarted], 0.1 * vq.codebook[restarted])


def test_usage_reports_perplexity_and_dead_codes():
    vq = _two_code_quantizer().eval()
    vq(_three_latents())
    usage = vq.usage()
    p = torch.tensor([2 / 3, 1 / 3])
    assert usage["dead_codes"] == 0
    assert usage["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)


def test_indices_to_codes_inverts_nearest():
    vq = _quantizer(8, 4)
    indices = torch.tensor([[3, 0], [7, 7]])
    codes = vq.indices_to_codes(indices)
    assert codes.shape == (2, 2, 4)
    assert torch.equal(vq.codes_to_indices(codes.permute(2, 0, 1)[None]), indices[None])


def test_soft_lookup_one_hot_equals_hard_lookup():
    table = torch.randn(8, 4, generator=torch.Generator().manual_seed(7))
    indices = torch.tensor([[1, 5, 2], [0, 7, 7]])
    logits = torch.nn.functional.one_hot(indices, 8).float() * 1e4  # softmax is exactly one-hot in fp32

    out = soft_lookup(logits, table)

    assert out.shape == (2, 3, 4)
    assert torch.equal(out, table[indices])


def test_soft_lookup_tau_multiplies_logits():
    table = torch.tensor([[0.0], [1.0]])
    logits = torch.tensor([0.0, math.log(3.0)])  # probs [1/4, 3/4] at tau = 1
    assert soft_lookup(logits, table).item() == pytest.approx(0.75)
    assert soft_lookup(logits, table, tau=0.0).item() == pytest.approx(0.5)  # tau -> 0 is uniform
