"""A 2-process gloo DDP step of the task-solver equals one process on the same global batch, also when
the batch does not split evenly (ranks weight their losses by their share, pipeline/solver_training/shares.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pipeline.core import runtime
from pipeline.core.vocab import Vocab
from pipeline.models.ait import build_ait, solver_config
from pipeline.models.backbone import BackboneConfig
from pipeline.models.vqvae import VQVAE, VQVAEConfig
from pipeline.solver_training.shares import rank_batches, rank_loss_weights
from pipeline.solver_training.steps import TrainStep
from pipeline.tasks.depth.augment import draw_depth
from pipeline.tasks.depth.config import DepthAugmentConfig, DepthTaskConfig
from pipeline.tasks.depth.task import DepthLoss

BACKBONE = BackboneConfig(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1),
                          num_heads=(1, 1, 2, 2), drop_path_rate=0.0)


def _step_module(weights: dict[str, float]) -> TrainStep:
    from pipeline.core.config import SolverModelConfig

    runtime.seed_everything(0)
    vocab = Vocab.build(8, 0, None, 16)
    tokenizer = VQVAE(VQVAEConfig(hidden_dim=4, downsample_ratio=16, num_embeddings=16, embedding_dim=8))
    model_cfg = SolverModelConfig(dim=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                                  dropout=0.0, drop_path=0.0)
    model = build_ait(BACKBONE, solver_config(model_cfg, 16), vocab)
    head = DepthLoss(tokenizer, DepthTaskConfig(aux_weight=1.0, tau=1.0))
    return TrainStep(model, {"depth": head}, weights, vocab)


def _global_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)  # the loader's photometric draws, applied by the step on the device
    draws = [draw_depth(DepthAugmentConfig(p_photometric=0.8, cutdepth_p=0.5), 96, i % 2, 16, rng)
             for i in range(n)]
    return {"images": torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8),
            "depth": 0.5 + 3 * torch.rand(n, 1, 64, 64, generator=g),
            "indices": torch.randint(0, 16, (n, 4, 4), generator=g),
            "augment": torch.from_numpy(np.stack(draws))}


def _loss_and_grads(step: TrainStep, net, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    loss, _ = net({"depth": batch}, torch.Generator().manual_seed(0))
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in step.model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str, n: int) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = runtime.init_distributed("cpu")
    step = _step_module(rank_loss_weights({"depth": n}, {}, rank, world)).train()
    net = runtime.wrap_ddp(step, info, torch.device("cpu"))
    sizes = [rank_batches({"depth": n}, r, world)["depth"] for r in range(world)]
    first = sum(sizes[:rank])
    batch = {k: v[first : first + sizes[rank]] for k, v in _global_batch(n).items()}
    loss, grads = _loss_and_grads(step, net, batch)  # DDP averaged the gradients over ranks
    losses = torch.tensor([loss])
    runtime.all_reduce_sum(losses)
    if rank == 0:
        torch.save({"loss": float(losses) / world, "grads": grads}, Path(out) / "ddp.pt")
    runtime.destroy_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n", [4, 3])
def test_two_gloo_ranks_match_one_process(tmp_path, n):
    torch.set_num_threads(1)
    step = _step_module({}).train()
    loss, grads = _loss_and_grads(step, step, _global_batch(n))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), n), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    # Per-rank means weighted by each rank's share (2 + 2 or 2 + 1 images) average to the global mean:
    # loss and gradients agree.
    assert ddp["loss"] == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == ddp["grads"].keys() and len(grads) > 10
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
