"""Benchmark the task-solver's decoding paths and a tiny training step; prints one JSON object to stdout.

Measures (PAPER_NOTES §4.2 "inference uses a KV cache", §4.4 parallel decoder):
- KV-cache `generate` vs a reasonable cache-less loop, at the depth length (225) and at the instance
  length (num_query x 21), as a speed-up ratio. The cache-less loop computes each layer's cross-attention
  keys/values over the encoder memory once per sequence, as `generate` does, and projects only the last
  position onto the vocabulary; what it lacks is the self-attention KV cache, so it re-runs the decoder
  over the whole prefix at every step. The two must choose the same tokens (`tokens_match`);
- the parallel decoder's one pass (`generate_parallel`) vs auto-regressive soft-token depth decoding;
- training steps/s of the tiny config (SwinV2 embed_dim 32, depths 1-1-1-1 at 64x64 + a d32 1+1 solver).

Every timed path runs once as a warm-up, then `--repeats` times: the JSON gives the best and the median
(`*_s` is the best; ratios use the best of each side). Defaults are the paper's solver size
(d256, 6+6 layers, V=2467) at batch 1; use --num-query 100 for the full 2100-token instance sequence.
Example: python bench/bench_solver.py --repeats 2 --num-query 10
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F
from _timing import set_precision, timed, times

from pipeline.core.vocab import Vocab
from pipeline.models.backbone import BackboneConfig, build_backbone
from pipeline.models.sampling import choose, decoding_plan, restrict_logits
from pipeline.models.solver import Solver, SolverConfig
from pipeline.tasks.depth import task as depth
from pipeline.tasks.insseg import sequence as insseg_sequence
from pipeline.tasks.registry import TASK_IDS, get_task

DEPTH = get_task("depth")
DEPTH_TASK, INSSEG_TASK = TASK_IDS["depth"], TASK_IDS["insseg"]  # rows of the task embedding (PAPER_NOTES §9)
DEPTH_PATTERN = depth.generation_kinds()  # one depth code per position
MASK_TOKENS = 16  # the paper mask tokenizer's 4x4 grid of a 64x64 crop
INSSEG_PATTERN = insseg_sequence.generation_kinds(1, MASK_TOKENS)  # PAPER_NOTES §4.5, 21 tokens per object


@torch.no_grad()
def naive_generate(model: Solver, memory: torch.Tensor, task_id: int, legal: torch.Tensor) -> torch.Tensor:
    """Greedy decoding without a self-attention KV cache -> (B, L) tokens: the memory keys/values once,
    then at every step the decoder over the whole prefix and the vocabulary projection of its last state."""
    task_ids = torch.full((memory.shape[0],), task_id, dtype=torch.long, device=memory.device)
    memory_kv = [block.memory_kv(memory) for block in model.decoder]
    inputs = (model.task_embed[task_ids] + model.pos_embed[task_ids, 0])[:, None]  # (B, 1, D)
    tokens = []
    for i in range(legal.shape[0]):
        h = inputs
        for block, kv in zip(model.decoder, memory_kv, strict=True):
            h = block(h, kv)
        logits = model.norm(h[:, -1]) @ model.token_embed.t() + model.out_bias
        tokens.append(choose(restrict_logits(logits, legal[i])))
        step = model.token_embed[tokens[-1]] + model.pos_embed[task_ids, min(i + 1, legal.shape[0] - 1)]
        inputs = torch.cat((inputs, step[:, None]), dim=1)
    return torch.stack(tokens, dim=1)


def bench_cache(model: Solver, memory, vocab, task_id, pattern, length, repeats, device) -> dict:
    """KV-cache generate vs the cache-less loop (`naive_generate`) at one sequence length."""
    legal, _ = decoding_plan(vocab, pattern, length, device=device)
    cached = model.generate(memory, task_id, length, pattern, vocab)[0]
    match = torch.equal(cached, naive_generate(model, memory, task_id, legal))
    out = {"length": length, "tokens_match": match}
    out |= timed("kv_cache", lambda: model.generate(memory, task_id, length, pattern, vocab), repeats, device)
    out |= timed("naive", lambda: naive_generate(model, memory, task_id, legal), repeats, device)
    return out | {"speedup": out["naive_s"] / out["kv_cache_s"]}


def bench_parallel(cfg: SolverConfig, vocab: Vocab, features, length, repeats, device) -> dict:
    """One-pass AiT-P logits vs auto-regressive soft-token depth decoding of the same length."""
    ar = Solver(cfg, vocab.size, features.shape[1]).to(device).eval()
    par = Solver(replace(cfg, parallel=True), vocab.size, features.shape[1])
    par = par.to(device).eval()
    with torch.no_grad():
        mem_ar, mem_par = ar.encode(features), par.encode(features)
    def autoregressive() -> object:
        return ar.generate(mem_ar, DEPTH_TASK, length, DEPTH_PATTERN, vocab, soft_kinds=depth.SOFT_KINDS)

    out = {"length": length} | timed("autoregressive", autoregressive, repeats, device)
    with torch.no_grad():
        out |= timed("parallel", lambda: par.generate_parallel(mem_par, DEPTH_TASK, length), repeats, device)
    return out | {"speedup": out["autoregressive_s"] / out["parallel_s"]}


def bench_train_tiny(batch: int, seq_len: int, steps: int, repeats: int, device: torch.device) -> dict:
    """Steps/s of forward + backward + AdamW on the tiny backbone + tiny solver (depth-style targets)."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                             img_size=64, window_size=4)).to(device)
    vocab = Vocab.build(0, 0, None, 128)
    cfg = SolverConfig(dim=32, num_heads=4, ffn_dim=128, num_encoder_layers=1, num_decoder_layers=1,
                       max_seq_len=seq_len, num_tasks=3)
    solver = Solver(cfg, vocab.size, backbone.out_channels).to(device)
    params = list(backbone.parameters()) + list(solver.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, 64, 64, generator=g, device=device)
    codes = torch.randint(0, 128, (batch, seq_len), generator=g, device=device)
    targets = codes + vocab.offset(DEPTH.code_kind)

    def step() -> None:
        logits = solver(solver.encode(backbone(images)), DEPTH_TASK, targets[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = min(times(lambda: [step() for _ in range(steps)], repeats, device))
    return {"batch": batch, "seq_len": seq_len, "steps": steps, "steps_per_s": steps / seconds,
            "backbone_params": sum(p.numel() for p in backbone.parameters()),
            "solver_params": solver.num_params()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers each")
    parser.add_argument("--depth-len", type=int, default=225)
    parser.add_argument("--num-query", type=int, default=10, help="objects; 100 in the paper (2100 tokens)")
    parser.add_argument("--grid", type=int, default=15, help="feature grid side (15 for 480x480 depth)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-len", type=int, default=225)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--allow-tf32", action="store_true", help="let CUDA fp32 matmuls/convs use TF32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    precision = set_precision(args.allow_tf32)

    device = torch.device(args.device)
    torch.manual_seed(0)
    vocab = Vocab.paper(with_insseg=True)
    insseg_len = args.num_query * len(INSSEG_PATTERN)
    cfg = SolverConfig(dim=args.dim, num_heads=8, ffn_dim=4 * args.dim, num_encoder_layers=args.layers,
                       num_decoder_layers=args.layers, max_seq_len=max(2100, insseg_len, args.depth_len))
    features = torch.randn(args.batch, 1024, args.grid, args.grid, device=device)  # SwinV2-B stage 4
    model = Solver(cfg, vocab.size, features.shape[1]).to(device).eval()
    with torch.no_grad():
        memory = model.encode(features)
    report = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "batch": args.batch,
        "solver": {**asdict(cfg), "vocab_size": vocab.size, "params": model.num_params()},
        "depth_kv_cache": bench_cache(model, memory, vocab, DEPTH_TASK, DEPTH_PATTERN, args.depth_len,
                                      args.repeats, device),
        "insseg_kv_cache": bench_cache(model, memory, vocab, INSSEG_TASK, INSSEG_PATTERN, insseg_len,
                                       args.repeats, device),
        "parallel_vs_autoregressive": bench_parallel(cfg, vocab, features, args.depth_len, args.repeats,
                                                     device),
        "train_tiny": bench_train_tiny(args.train_batch, args.train_len, args.train_steps, args.repeats,
                                       device),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
