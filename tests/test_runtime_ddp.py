"""runtime: single-process defaults, and a real 2-process gloo run where codebooks must stay identical."""

from __future__ import annotations

import os
import random
import socket
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pipeline.core import runtime
from pipeline.core.constraints import ConfigError


def test_single_process_defaults(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "AIT_DEVICE"):
        monkeypatch.delenv(key, raising=False)

    info = runtime.init_distributed("cpu")

    assert info == runtime.DistInfo(is_dist=False, rank=0, local_rank=0, world_size=1)
    t = torch.tensor([1.0, 2.0])
    assert runtime.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert runtime.broadcast_from_rank0(t) is t
    assert isinstance(runtime.autocast_ctx(torch.device("cpu")), nullcontext)
    assert runtime.pick_device("cpu") == torch.device("cpu")


def test_pick_device_env_override(monkeypatch):
    monkeypatch.setenv("AIT_DEVICE", "cpu")
    assert runtime.pick_device(None) == torch.device("cpu")
    monkeypatch.setenv("AIT_DEVICE", "cuda:99")  # read, and checked: no machine here has 100 GPUs
    with pytest.raises(ConfigError, match="AIT_DEVICE: 'cuda:99' asked for, but"):
        runtime.pick_device(None)
    assert runtime.pick_device("cpu") == torch.device("cpu")  # an explicit argument wins
    with pytest.raises(ConfigError, match="--device: 'gpu' is not a device this project runs on"):
        runtime.pick_device("gpu")


@pytest.mark.parametrize(("env", "match"), [
    ({"RANK": "1"}, "RANK=1 WORLD_SIZE=.unset.: not a process of a torchrun world"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 WORLD_SIZE=2: not a process of a torchrun world"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE: '0' is not a whole number ≥ 1"),
    ({"RANK": "²", "WORLD_SIZE": "2"}, "RANK: '²' is not a whole number ≥ 0"),
])
def test_torchrun_variables_left_in_a_shell_are_refused(monkeypatch, env, match):
    """A RANK left over in a shell would make every stage a silent non-zero rank that writes nothing."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=match):
        runtime.dist_info()


@pytest.mark.parametrize("value", ["0", "-1", "²", "two", ""])
def test_ait_nproc_must_be_a_positive_ascii_number(monkeypatch, value):
    monkeypatch.setenv("AIT_NPROC", value)
    with pytest.raises(ConfigError, match=f"AIT_NPROC: '{value}' is not a positive number of processes"):
        runtime.requested_workers()


def _global_draws() -> tuple:
    """One draw from each global generator seed_everything promises to seed: Python, NumPy, torch."""
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_seed_everything_seeds_python_numpy_and_torch(monkeypatch):
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        runtime.seed_everything(3)
        first = _global_draws()
        # Scramble every generator, as the code between two seedings would.
        random.seed(99)
        np.random.seed(99)
        torch.manual_seed(99)
        runtime.seed_everything(3)
        assert _global_draws() == first  # each of the three streams restarts, not just torch's
        runtime.seed_everything(4)
        assert all(a != b for a, b in zip(_global_draws(), first, strict=True))  # the seed reaches each one
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        runtime.seed_everything(3)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # a user's own setting is kept
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pipeline.models.vqvae import VQVAE, VQVAEConfig
    from pipeline.tasks.depth.losses import mse_ignore_zero

    info = runtime.init_distributed("cpu")
    assert info.is_dist and info.rank == rank
    cfg = VQVAEConfig(hidden_dim=4, downsample_ratio=4, num_embeddings=16, embedding_dim=4, num_res_blocks=1)
    codebooks = {}
    # "synced" uses the runtime all-reduce; "local" injects a no-op, as the official code behaves.
    for name, all_reduce in (("synced", None), ("local", lambda t: t)):
        runtime.seed_everything(0)  # same initial weights and codebook on both ranks
        model = VQVAE(cfg, all_reduce=all_reduce)
        # As the official script: DDP without buffer broadcasting, so only our all-reduce can sync them.
        ddp = DDP(model, broadcast_buffers=False)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        for _ in range(3):
            x = 1.0 + 3.0 * torch.rand(4, 1, 16, 16, generator=g)
            recon, _, commit = ddp(x)
            loss = mse_ignore_zero(recon, x) + commit
            opt.zero_grad()
            loss.backward()
            opt.step()
        codebooks[name] = model.quantizer.codebook.clone()
        codebooks[name + "_counts"] = model.quantizer.ema_cluster_size.clone()
    torch.save(codebooks, Path(out_dir) / f"rank{rank}.pt")
    runtime.destroy_distributed()


def test_two_gloo_ranks_keep_identical_codebooks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["synced"], r1["synced"])
    assert torch.equal(r0["synced_counts"], r1["synced_counts"])
    # Negative control: without the all-reduce the ranks drift apart (the official behaviour).
    assert not torch.equal(r0["local"], r1["local"])
