"""Process runtime: device, precision, seeding and the 1-vs-N-process switch, chosen once.

This is the only module under `pipeline/` that reads (or sets) environment variables:
- `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (set by torchrun) decide whether we are distributed;
- `AIT_DEVICE` overrides the automatic device choice (like nanochat's `NANOCHAT_DTYPE`);
- `AIT_NPROC` asks a stage command to start that many worker processes itself (`launch_workers`);
- `CUBLAS_WORKSPACE_CONFIG` is given a default by `seed_everything` (deterministic cuBLAS).

Following nanochat `common.py` / lucidrains' `all_reduce_fn = ... if use_ddp else noop`, collectives are
chosen once in `init_distributed` and exposed as stable functions (`all_reduce_sum`,
`broadcast_from_rank0`) that are no-ops with one process. Library math calls them unconditionally,
so there is no `if ddp:` anywhere else.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pipeline.core.constraints import ConfigError


@dataclass(frozen=True)
class DistInfo:
    is_dist: bool  # True only when more than one process takes part
    rank: int
    local_rank: int
    world_size: int


def dist_info() -> DistInfo:
    """The torchrun view of this process; (False, 0, 0, 1) when not launched by torchrun.

    The variables are checked: a `RANK` left over in a shell (without torchrun's `WORLD_SIZE`) would make
    every stage a silent non-zero rank that writes nothing."""
    world_size, rank = _env_int("WORLD_SIZE", 1, 1), _env_int("RANK", 0, 0)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    if ("RANK" in os.environ) != ("WORLD_SIZE" in os.environ) or rank >= world_size:
        raise ConfigError(f"RANK={os.environ.get('RANK', '(unset)')} WORLD_SIZE="
                          f"{os.environ.get('WORLD_SIZE', '(unset)')}: not a process of a torchrun world; "
                          f"unset both, or start the command with torchrun (or AIT_NPROC)")
    return DistInfo(is_dist=world_size > 1, rank=rank, local_rank=local_rank, world_size=world_size)


def _env_int(name: str, default: int, low: int) -> int:
    value = os.environ.get(name, str(default))
    if not (value.isascii() and value.isdigit()) or int(value) < low:
        raise ConfigError(f"{name}: {value!r} is not a whole number ≥ {low}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# collectives: no-ops until init_distributed finds more than one process


def _noop(t: torch.Tensor) -> torch.Tensor:
    return t


def _dist_all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _dist_broadcast_from_rank0(t: torch.Tensor) -> torch.Tensor:
    dist.broadcast(t, src=0)
    return t


_all_reduce_fn: Callable[[torch.Tensor], torch.Tensor] = _noop
_broadcast_fn: Callable[[torch.Tensor], torch.Tensor] = _noop


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all processes, in place, and return it; the identity with one process."""
    return _all_reduce_fn(t)


def broadcast_from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Overwrite `t` in place with rank 0's copy and return it; the identity with one process."""
    return _broadcast_fn(t)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA) and pick collectives."""
    global _all_reduce_fn, _broadcast_fn
    info = dist_info()
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if info.is_dist:
        if not dist.is_initialized():
            # env:// reads MASTER_ADDR / MASTER_PORT, which torchrun sets.
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        _all_reduce_fn, _broadcast_fn = _dist_all_reduce_sum, _dist_broadcast_from_rank0
    return info


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP wrapper with several processes, the model itself with one (same call sites either way).

    broadcast_buffers=False: the only buffers that must agree (VQ codebooks) are kept identical by
    the quantizer's own all-reduce, and frozen tokenizers are identical by construction.
    """
    if not info.is_dist:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def gather_to_rank0(items: list) -> list | None:
    """Every process's `items` (picklable), concatenated in rank order, on rank 0; None on the others.
    With one process: `items` itself."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return items
    parts: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(items, parts, dst=0)
    return None if parts is None else [item for part in parts for item in part]


def destroy_distributed() -> None:
    """Leave the process group (if any) and fall back to the no-op collectives."""
    global _all_reduce_fn, _broadcast_fn
    if dist.is_initialized():
        dist.destroy_process_group()
    _all_reduce_fn, _broadcast_fn = _noop, _noop


# --------------------------------------------------------------------------------------------------
# device, precision, seeding, printing


def pick_device(override: str | None = None) -> torch.device:
    """`override`, else env AIT_DEVICE, else cuda (this process's local rank) if available, else cpu."""
    where = "--device" if override else "AIT_DEVICE"
    name = override or os.environ.get("AIT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", name):
        raise ConfigError(f"{where}: {name!r} is not a device this project runs on: cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}: {name!r} asked for, but torch sees no CUDA GPU here; use cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{where}: {name!r} asked for, but this machine has {torch.cuda.device_count()} "
                          f"CUDA GPU(s), numbered from 0")
    if device.type == "cuda" and device.index is None:
        # One GPU per process under torchrun: "cuda" means this rank's GPU.
        device = torch.device("cuda", dist_info().local_rank)
    return device


def autocast_ctx(device: torch.device, enabled: bool = True) -> AbstractContextManager:
    """bf16 autocast on CUDA; a null context on CPU (or when `enabled` is False)."""
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch CPU threads, then restore the previous count.

    oneDNN splits a convolution's work by the thread count (not by the physical cores), so the same
    inputs give last-bit different activations under different counts, and near-tied codes flip (5 of
    518,400 demo tokens between 1 and 2 threads). Stages whose bytes must not depend on the machine
    (token caches) fix the count. CUDA kernels ignore it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) global generators and ask for deterministic kernels.

    Byte-identical outputs for identical inputs keep DVC from cascading. Seeds are not enough: on CPU
    with several threads the backward of an embedding lookup (`index_put_` with accumulate) adds in
    a racy order, so a solver trained twice differed in its last bits. Deterministic mode picks the
    ordered kernels on CPU and CUDA (cuBLAS needs the workspace setting before its first call) and
    only warns where an op has none.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # The flag `torch.use_deterministic_algorithms` sets, without the compiler setting it also writes:
    # that import (torch._inductor) costs every stage process about 1.7 s, and nothing here compiles.
    torch._C._set_deterministic_algorithms(True, warn_only=True)


def print0(*args, **kwargs) -> None:
    """`print` on rank 0 only."""
    if dist_info().rank == 0:
        print(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# N workers for one stage command: torch's own elastic launcher, asked for by the environment


class WorkersFailed(ConfigError):
    """A worker of `launch_workers` ended with an error; its own message was printed above."""


def requested_workers() -> int:
    """`AIT_NPROC` (default 1): worker processes a stage command starts on this node."""
    value = os.environ.get("AIT_NPROC", "1")
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ConfigError(f"AIT_NPROC: {value!r} is not a positive number of processes")
    return int(value)


def launch_workers(argv: list[str]) -> bool:
    """With `AIT_NPROC` > 1 in a process that is not a worker yet, run `ait <argv>` as that many workers
    through torchrun's own launcher (`torch.distributed.run`) and return True once all have finished;
    otherwise return False at once (the caller does the work itself).

    `dvc repro` runs a stage's command with the environment it was started with, so `AIT_NPROC=8 dvc repro`
    trains, caches and evaluates on 8 GPUs without a change to dvc.yaml. One node is `--standalone`;
    several nodes take torchrun's own variables (`PET_NNODES`, `PET_NODE_RANK`, `PET_RDZV_ENDPOINT`, ...).
    """
    n = requested_workers()
    if n == 1 or "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ:
        return False
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    options = ["--nproc-per-node", str(n)]
    if not any(k in os.environ for k in ("PET_NNODES", "PET_RDZV_ENDPOINT")):
        options.append("--standalone")
    try:
        run(get_args_parser().parse_args([*options, "-m", "stages.cli", *argv]))
    except ChildFailedError as e:
        rank, failure = min(e.failures.items())
        raise WorkersFailed(f"{len(e.failures)} of {n} workers failed (first: rank {rank}, exit code "
                            f"{failure.exitcode}); their messages are above") from None
    return True
