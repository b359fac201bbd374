"""Seeding: `seed_everything` makes multi-threaded CPU training bit-reproducible."""

from __future__ import annotations

import torch

from pipeline.core.runtime import seed_everything


def _embedding_grads(repeats: int) -> set[bytes]:
    """Gradients of a solver-sized embedding lookup with many repeated codes, once per repeat."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(291, 128, generator=g, requires_grad=True)
    codes = torch.randint(0, 16, (16, 224), generator=g)  # collisions: the racy accumulation case
    weights = torch.randn(16, 224, 128, generator=g)
    grads = set()
    for _ in range(repeats):
        table.grad = None
        (table[codes] * weights).sum().backward()
        grads.add(table.grad.numpy().tobytes())
    return grads


def test_seeded_multithreaded_embedding_backward_is_bitwise_repeatable():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(2)
        seed_everything(0)
        # deterministic kernels, and only a warning where an op has none
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert len(_embedding_grads(10)) == 1  # without deterministic mode: 10 different results
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
