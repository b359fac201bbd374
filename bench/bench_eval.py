"""Benchmark instance evaluation at the paper's size: images/s at batch 1 vs a batch of images per
`generate` call, and a projection of COCO val2017 on N GPUs from the measured FLOPs. Prints one JSON.

What is timed is `infer_instances` (pipeline/tasks/insseg/task.py), the per-batch work of `evaluate@insseg`:
letterbox to 640², the SwinV2-B backbone and the 6-layer encoder once, then `num_query` x 21 auto-regressive
tokens with soft mask inputs (the paper's 2,100), and the mask decode with the paper's mask tokenizer
(K128 r16 D512 on 64² crops). Weights are random (`init: scratch`): the decoding loop has a fixed length,
so its cost does not depend on what the weights predict. Images are the COCO sample if a folder is given,
else random 480x640 frames. Batch 1 decodes the images one call each; batch B decodes them in calls of B.

The projection (labelled as such in the JSON) divides the FLOPs of one image (torch's FlopCounterMode on one
batch-1 call) by N GPUs x a peak x an assumed utilisation. Auto-regressive decoding at small batch is
bound by latency rather than FLOPs on a GPU, so the low-utilisation column is the realistic one.
Example: python bench/bench_eval.py --images 2 --batch 2   (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _timing import set_precision, sync

from pipeline.core.config import BackboneConfig, SolverModelConfig, VQVAEConfig
from pipeline.core.vocab import Vocab
from pipeline.models.ait import build_ait, solver_config
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.insseg import sequence as insseg_sequence
from pipeline.tasks.insseg.config import InssegInferConfig, InssegTaskConfig
from pipeline.tasks.insseg.task import infer_instances

PAPER_BACKBONE = BackboneConfig(name="swinv2_base_window12_192", img_size=640, window_size=30, embed_dim=128,
                                depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                pretrained_window_sizes=(12, 12, 12, 6), init="scratch")
MASK_TOKENS = 16  # the paper mask tokenizer's 4x4 grid of a 64x64 crop
COCO_VAL_IMAGES = 5000
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM


def _images(folder: Path | None, n: int, seed: int = 0) -> list[np.ndarray]:
    if folder is not None:
        from PIL import Image

        paths = sorted(folder.glob("*.jpg"))[:n]
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def _models(num_query: int, device: torch.device):
    torch.manual_seed(0)
    vocab = Vocab.paper(with_insseg=True)
    length = num_query * (insseg_sequence.MASK_START + MASK_TOKENS)  # 21 tokens an object (PAPER_NOTES §4.5)
    model = build_ait(PAPER_BACKBONE, solver_config(SolverModelConfig(), length), vocab).to(device).eval()
    tokenizer = VQVAE(VQVAEConfig(hidden_dim=16, downsample_ratio=16, num_embeddings=128, embedding_dim=512,
                                  input_scale="symmetric")).to(device).eval()
    return model, tokenizer, vocab


def _run(model, tokenizer, vocab, images, batch: int, task: InssegTaskConfig, device) -> float:
    infer = InssegInferConfig()
    ids = list(range(1, vocab.num_classes + 1))
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for k in range(0, len(images), batch):
            infer_instances(model, tokenizer, vocab, task, infer, images[k:k + batch], ids)
    sync(device)
    return time.perf_counter() - start


def _flops_per_image(model, tokenizer, vocab, image, task, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        infer_instances(model, tokenizer, vocab, task, InssegInferConfig(), [image],
                        list(range(1, vocab.num_classes + 1)))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="images timed at each batch size")
    parser.add_argument("--batch", type=int, default=2, help="images per generate call of the batched run")
    parser.add_argument("--num-query", type=int, default=100, help="objects per sequence (paper: 100)")
    parser.add_argument("--coco", type=Path, default=None, help="a folder of COCO jpgs (else random frames)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the projection")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    precision = set_precision()
    model, tokenizer, vocab = _models(args.num_query, device)
    task = InssegTaskConfig(num_query=args.num_query, image_size=640)
    images = _images(args.coco, args.images)
    _run(model, tokenizer, vocab, images[:1], 1, task, device)  # warm-up (allocations, oneDNN plans)
    one = _run(model, tokenizer, vocab, images, 1, task, device)
    many = _run(model, tokenizer, vocab, images, args.batch, task, device)
    flops = _flops_per_image(model, tokenizer, vocab, images[0], task, device)
    per_gpu = COCO_VAL_IMAGES / args.gpus * flops
    print(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "precision": precision,
        "images": len(images), "num_query": args.num_query, "tokens_per_image": args.num_query * (insseg_sequence.MASK_START + MASK_TOKENS),
        "batch_1": {"seconds": one, "images_per_s": len(images) / one},
        f"batch_{args.batch}": {"seconds": many, "images_per_s": len(images) / many},
        "speedup_batched_vs_1": one / many,
        "gflop_per_image": flops / 1e9,
        "projection_coco_val": {
            "label": f"PROJECTION, not a measurement: {COCO_VAL_IMAGES} images x measured FLOPs / "
                     f"({args.gpus} GPUs x H100 bf16 peak x utilisation)",
            **{f"minutes_at_{int(100 * u)}pct_utilisation": per_gpu / (H100_BF16_PEAK * u) / 60
               for u in (0.01, 0.05, 0.40)}},
        "cpu_projection_coco_val_hours_at_batch": COCO_VAL_IMAGES / (len(images) / many) / 3600,
    }, indent=2))


if __name__ == "__main__":
    main()
