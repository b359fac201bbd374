"""The task-solver can memorise 4 demo images: depth tokens generated auto-regressively from the
image (KV cache, soft inputs) match the teacher-forcing targets (≥ 0.9) — a capacity and plumbing
check of the whole depth path on CPU in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.config import SolverModelConfig
from pipeline.core.io import read_jsonl
from pipeline.core.runtime import seed_everything
from pipeline.core.vocab import Vocab
from pipeline.data.nyu import read_depth_metres, read_rgb
from pipeline.models.ait import build_ait, solver_config
from pipeline.models.backbone import BackboneConfig
from pipeline.models.vqvae import VQVAE, VQVAEConfig
from pipeline.tasks.depth import task as depth_task

pytestmark = pytest.mark.slow

BACKBONE = BackboneConfig(img_size=64, window_size=4, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                          patch_size=2, drop_path_rate=0.0)
MODEL = SolverModelConfig(dim=96, num_heads=4, ffn_dim=192, num_encoder_layers=2, num_decoder_layers=2,
                          dropout=0.0, drop_path=0.0)


def _adamw(model, lr=1e-3):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)


def test_depth_tokens_are_memorised(tiny_project):
    torch.set_num_threads(1)
    seed_everything(0)
    records = read_jsonl(tiny_project / "data/prepared/depth/train.jsonl")[:4]
    tokenizer = VQVAE(VQVAEConfig(hidden_dim=8, downsample_ratio=8, num_embeddings=32, embedding_dim=16)).eval()
    depth = torch.from_numpy(np.stack([read_depth_metres(r["depth"])[:, :48] for r in records]))[:, None]
    rgb = torch.from_numpy(np.stack([read_rgb(r["rgb"])[:, :48] for r in records])).permute(0, 3, 1, 2) / 255.0
    indices = tokenizer.encode(depth)  # (4, 6, 6)
    vocab = Vocab.build(64, 0, None, 32)
    model = build_ait(BACKBONE, solver_config(MODEL, 36), vocab)
    opt = _adamw(model)
    tokens_in, targets = depth_task.depth_sequence(indices, vocab)
    for _ in range(150):
        loss, _ = depth_task.depth_loss(model(rgb, depth_task.TASK_ID, tokens_in), targets, vocab=vocab)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tokens, _ = model.solver.generate(model.encode(rgb), depth_task.TASK_ID, 36, depth_task.generation_kinds(),
                                      vocab=vocab, soft_kinds=depth_task.SOFT_KINDS)
    accuracy = float((tokens == targets).float().mean())
    assert accuracy >= 0.9, f"auto-regressive depth token accuracy {accuracy:.3f}"
