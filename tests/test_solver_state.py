"""The resumable training state is only ever resumed by the run (fingerprint) that wrote it."""

from __future__ import annotations

import torch

from pipeline.optim import OptimConfig, build_scheduler
from pipeline.solver.train import load_state, save_state


def _objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, build_scheduler(optimizer, OptimConfig(schedule="linear"), 10), torch.Generator()


def test_state_round_trip_and_foreign_state_is_ignored(tmp_path):
    model, optimizer, scheduler, generator = _objects(0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    save_state(tmp_path, "run-a", 7, model, optimizer, scheduler, generator)

    other, opt2, sched2, gen2 = _objects(1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert load_state(tmp_path, "run-b", other, opt2, sched2, gen2) == 0  # another configuration
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())

    assert load_state(tmp_path, "run-a", other, opt2, sched2, gen2) == 7
    assert all(torch.equal(model.state_dict()[k], v) for k, v in other.state_dict().items())
    assert sched2.last_epoch == scheduler.last_epoch and opt2.state_dict()["state"]
    assert load_state(tmp_path / "missing", "run-a", other, opt2, sched2, gen2) == 0
