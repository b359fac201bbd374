"""The task-solver's training loop and its resumable state (one code path: CPU, CUDA, torchrun DDP).

Per step: one batch per task → `TrainStep` (one forward, weighted task losses) → backward → global
grad-norm clipping → AdamW with layer-wise lr decay → LambdaLR schedule (warm-up, step or linear decay;
PAPER_NOTES §4.6). bf16 autocast on CUDA only; the VQ math and the losses run in fp32 inside the heads.

Resume: every `checkpoint_every` steps rank 0 writes `state.pt` atomically (model, optimizer,
scheduler, step, RNG states, and a fingerprint of the run's configuration and inputs) into the state
dir; a restarted run with the same fingerprint continues from it, any other run ignores it. The data
order after a resume restarts at a fresh, seeded epoch (the WebDataset stream position itself is not
saved).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir
from pipeline.core.optim import clip_gradients
from pipeline.core.runtime import autocast_ctx

LIVE_COPY = "live"  # the DVCLive history up to the saved step
STATE = "state.pt"
LogFn = Callable[[int, dict[str, float]], None]


class Batches:
    """Endless batches of one task: a fresh (seed + epoch) pipeline each time one is exhausted."""

    def __init__(self, make: Callable[[int], Iterable]) -> None:
        self.make, self.epoch = make, 0
        self._it: Iterator = iter(make(0))

    def __next__(self):
        while True:
            try:
                return next(self._it)
            except StopIteration:
                self.epoch += 1
                self._it = iter(self.make(self.epoch))


def save_state(directory: Path, fingerprint: str, step: int, model: torch.nn.Module, optimizer, scheduler,
               generator: torch.Generator) -> None:
    """Atomically write the resumable state (rank 0 calls this)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {"fingerprint": fingerprint, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    tmp = directory / f".{STATE}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    tmp.replace(directory / STATE)


def clear_state(directory: Path) -> None:
    """Delete what `save_state` and `snapshot_live` wrote in `directory` once the run has finished, and
    the folder if that empties it; anything else a user keeps there stays."""
    for path in [directory / STATE, *directory.glob(f".{STATE}.tmp-*")]:
        path.unlink(missing_ok=True)
    shutil.rmtree(directory / LIVE_COPY, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        directory.rmdir()


def snapshot_live(live_dir: Path, directory: Path) -> None:
    """Copy the DVCLive folder beside the resumable state, consistent with the step just saved.

    DVC deletes a stage's outs (the DVCLive folder among them) before it re-runs the stage, so a resumed
    run would otherwise restart its metrics history at the resume step.
    """
    if live_dir.is_dir():
        with atomic_dir(directory / LIVE_COPY) as tmp:
            shutil.copytree(live_dir, tmp, dirs_exist_ok=True)


def restore_live(directory: Path, live_dir: Path) -> None:
    """Put the history saved with the state back into `live_dir` (replacing it) before DVCLive resumes."""
    copy = directory / LIVE_COPY
    if copy.is_dir():
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(copy, live_dir)


def load_state(directory: Path, fingerprint: str, model: torch.nn.Module, optimizer, scheduler,
               generator: torch.Generator) -> int:
    """Restore a saved state into the given objects; returns the step to continue from.

    0 when there is no state or it belongs to another configuration (another `fingerprint`): a state
    is only ever resumed by the exact run that wrote it.
    """
    path = directory / STATE
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: torch names pickle's or zipfile's internals
        raise DataError(f"{path}: not a resumable state this command can read ({type(e).__name__}); delete "
                        f"it to start this run from step 0") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    return int(state["step"])


@dataclass
class Trainer:
    """What a training run steps: the (maybe DDP-wrapped) TrainStep, the model whose parameters it
    clips, the optimizer and schedule, the generator of the steps' randomness and the device."""

    step_module: torch.nn.Module
    trainable: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device


@dataclass(frozen=True)
class Cadence:
    """Which steps run and when: steps [start, steps), gradient clipping, logging and checkpoints."""

    start: int
    steps: int
    grad_clip: float
    log_every: int
    checkpoint_every: int


def fit(trainer: Trainer, batches: dict[str, Batches], cadence: Cadence, log: LogFn,
        save: Callable[[int], None]) -> dict[str, float]:
    """Run steps [cadence.start, cadence.steps); `save(step)` at every checkpoint and at the end."""
    t, c = trainer, cadence
    t.step_module.train()
    last: dict[str, float] = {}
    for step in range(c.start, c.steps):
        batch = {task: next(it) for task, it in batches.items()}
        with autocast_ctx(t.device):
            loss, logs = t.step_module(batch, t.generator)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(t.trainable.parameters(), c.grad_clip)
        t.optimizer.step()
        t.scheduler.step()
        if step % c.log_every == 0 or step == c.steps - 1:
            last = {"loss": float(loss.detach()), "lr": t.optimizer.param_groups[-1]["lr"],
                    "grad_norm": grad_norm, **logs}
            log(step, last)
        if (step + 1) % c.checkpoint_every == 0 or step == c.steps - 1:
            save(step + 1)
    return last
