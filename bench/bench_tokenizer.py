"""Encode throughput of the paper-size tokenizers, fp32 vs bf16 autocast, and index agreement.

Prints one JSON object. Depth tokenizer: 480x640 maps (15x20 tokens), batch 16 by default. Mask
tokenizer: 64x64 crops (4x4 tokens). Each encode is timed after a warm-up, `--repeats` times (best and
median images/s). fp32 is fp32: TF32 is switched off explicitly on CUDA (`--allow-tf32` opts in) and
`precision` in the JSON says what was in force. Weights are random-init (the numbers are about compute and
numerics of the architecture, not a trained checkpoint); inputs are synthetic depth planes with holes
and soft ellipse masks. bf16 autocast is measured on CUDA only (on CPU, autocast_ctx is a null context),
and `index_change_fraction` is the share of token indices that differ between fp32 and autocast.
`flops` (FlopCounterMode, on CPU at batch 1, device-independent) gives per sample the encode of a cache
input (a 480x480 depth view, a 64x64 mask crop) and one training forward + backward (reconstruction +
commitment loss) at the training crop, for the cost model in docs/SCALE.md.

    .venv/bin/python bench/bench_tokenizer.py --device cpu --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from _timing import set_precision, times
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.runtime import autocast_ctx, pick_device
from pipeline.models.vqvae import DEPTH_VQVAE, MASK_VQVAE, VQVAE


def _depth_batch(n: int, g: torch.Generator) -> torch.Tensor:
    """`(n, 1, 480, 640)` tilted planes of 1-6 m with ~5 % zero holes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 480), torch.linspace(-1, 1, 640), indexing="ij")
    c = torch.rand(n, 3, 1, 1, generator=g)
    depth = 1.0 + 4.0 * c[:, 0] + c[:, 1] * xx + c[:, 2] * yy
    holes = torch.rand(n, 480, 640, generator=g) < 0.05
    return torch.where(holes, torch.zeros_like(depth), depth)[:, None]


def _mask_batch(n: int, g: torch.Generator) -> torch.Tensor:
    """`(n, 1, 64, 64)` soft ellipses in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    p = torch.rand(n, 4, 1, 1, generator=g)
    cy, cx = 16 + 32 * p[:, 0], 16 + 32 * p[:, 1]  # centres
    ry, rx = 8 + 24 * p[:, 2], 8 + 24 * p[:, 3]  # radii
    r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return (1.5 - r).clamp(0, 1)[:, None]


@torch.no_grad()
def _time_encode(model: VQVAE, x: torch.Tensor, device: torch.device, repeats: int, autocast: bool):
    """Indices of one encode and images/s: best and median of `repeats` calls after a warm-up."""
    with autocast_ctx(device, enabled=autocast):
        indices = model.encode(x)
        seconds = times(lambda: model.encode(x), repeats, device)
    return indices, x.shape[0] / min(seconds), x.shape[0] / statistics.median(seconds)


def bench_one(cfg, x: torch.Tensor, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = VQVAE(cfg).to(device).eval()
    x = x.to(device)
    idx32, best, median = _time_encode(model, x, device, repeats, autocast=False)
    out = {"input": list(x.shape), "grid": list(idx32.shape[1:]), "fp32_images_per_s": round(best, 2),
           "fp32_images_per_s_median": round(median, 2)}
    if device.type == "cuda":
        idx16, best, median = _time_encode(model, x, device, repeats, autocast=True)
        out["bf16_autocast_images_per_s"] = round(best, 2)
        out["bf16_autocast_images_per_s_median"] = round(median, 2)
        out["index_change_fraction"] = float((idx16 != idx32).float().mean())
        out["speedup_bf16_over_fp32"] = round(out["bf16_autocast_images_per_s"] / out["fp32_images_per_s"], 3)
    return out


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def flops_per_sample(cfg, side: int) -> dict:
    """FLOPs of one `side`² sample: encode (cache build) and a training forward + backward."""
    torch.manual_seed(0)
    model = VQVAE(cfg)
    x = torch.rand(1, 1, side, side)

    def train_step() -> None:
        recon, _, commit = model(x)
        (F.mse_loss(recon, x) + commit).backward()

    with torch.no_grad():
        encode = _count(lambda: model.encode(x))
    return {"side": side, "encode": encode, "train_fwd_bwd": _count(train_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu / cuda / cuda:1 (default: AIT_DEVICE or auto)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after a warm-up")
    parser.add_argument("--allow-tf32", action="store_true", help="let CUDA fp32 matmuls/convs use TF32")
    parser.add_argument("--depth-batch", type=int, default=16, help="480x640 depth maps per encode call")
    parser.add_argument("--mask-batch", type=int, default=512, help="64x64 mask crops per encode call")
    args = parser.parse_args()

    device = pick_device(args.device)
    precision = set_precision(args.allow_tf32)
    g = torch.Generator().manual_seed(0)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "precision": precision,
        "weights": "random init",
        "precisions": ["fp32", "bf16_autocast"] if device.type == "cuda" else ["fp32"],
        "note": None if device.type == "cuda" else "CPU: fp32 only (autocast_ctx is a no-op on CPU)",
        "depth": bench_one(DEPTH_VQVAE, _depth_batch(args.depth_batch, g), device, args.repeats),
        "mask": bench_one(MASK_VQVAE, _mask_batch(args.mask_batch, g), device, args.repeats),
        "flops": {"depth": flops_per_sample(DEPTH_VQVAE, 480), "mask": flops_per_sample(MASK_VQVAE, 64)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
