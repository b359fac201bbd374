"""The benchmarks compare like with like: the cache-less decoding loop of bench/bench_solver.py picks the
same tokens as the KV-cache `generate`, computes the memory keys/values once and only the last
position's logits; bench/_timing.py warms up, repeats, and pins the fp32 precision it reports."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _timing  # noqa: E402
from bench_solver import INSSEG_PATTERN, INSSEG_TASK, naive_generate  # noqa: E402

from pipeline.core.vocab import Vocab  # noqa: E402
from pipeline.models.sampling import decoding_plan  # noqa: E402
from pipeline.models.solver import Solver, SolverConfig  # noqa: E402


def test_naive_loop_matches_the_kv_cache_and_skips_the_redundant_work():
    torch.manual_seed(0)
    vocab = Vocab.paper(with_insseg=True)
    cfg = SolverConfig(dim=32, num_heads=4, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=2,
                       max_seq_len=64)
    model = Solver(cfg, vocab.size, 16).eval()
    memory = model.encode(torch.randn(2, 16, 3, 3))
    length = 2 * len(INSSEG_PATTERN)
    legal, _ = decoding_plan(vocab, INSSEG_PATTERN, length)
    calls = {"memory_kv": 0, "vocab_rows": 0}
    for block in model.decoder:
        original = block.memory_kv

        def counted(mem, original=original):
            calls["memory_kv"] += 1
            return original(mem)

        block.memory_kv = counted

    def count_rows(module, inputs, output):  # the final LayerNorm feeds the vocabulary projection
        calls["vocab_rows"] += output[..., 0].numel()

    model.norm.register_forward_hook(count_rows)
    with torch.no_grad():
        naive = naive_generate(model, memory, INSSEG_TASK, legal)
    assert calls == {"memory_kv": 2, "vocab_rows": 2 * length}  # once per layer; one row per image and step
    assert torch.equal(naive, model.generate(memory, INSSEG_TASK, length, INSSEG_PATTERN, vocab)[0])


def test_timing_warms_up_then_repeats():
    calls = []
    t = _timing.times(lambda: calls.append(1), 3, torch.device("cpu"))
    assert len(calls) == 4 and len(t) == 3
    timed = _timing.timed("x", lambda: None, 3, torch.device("cpu"))
    assert set(timed) == {"x_s", "x_median_s"} and timed["x_s"] <= timed["x_median_s"]


def test_precision_is_pinned_and_reported():
    try:
        assert _timing.set_precision(False) == {"float32_matmul_precision": "highest",
                                                "cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False}
        assert _timing.set_precision(True)["cudnn_allow_tf32"] is True
    finally:
        _timing.set_precision(False)
        torch.backends.cudnn.allow_tf32 = True  # torch's default, for the rest of the session
