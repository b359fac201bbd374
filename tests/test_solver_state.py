"""The resumable training state is only ever resumed by the run (fingerprint) that wrote it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pipeline.core.errors import DataError
from pipeline.core.optim import OptimConfig, build_scheduler
from pipeline.solver_training.train import clear_state, load_state, save_state


def _objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, build_scheduler(optimizer, OptimConfig(schedule="linear"), 10), torch.Generator()


def _draws(generator: torch.Generator) -> tuple:
    """The next value of the run's generator and of the three global streams a resumed run continues."""
    return (torch.rand(1, generator=generator).item(), torch.rand(1).item(), float(np.random.rand()),
            random.random())


def test_state_round_trip_and_foreign_state_is_ignored(tmp_path):
    model, optimizer, scheduler, generator = _objects(0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    generator.manual_seed(5)  # a state that a fresh torch.Generator() does not have
    torch.manual_seed(6)
    np.random.seed(7)
    random.seed(8)
    save_state(tmp_path, "run-a", 7, model, optimizer, scheduler, generator)
    expected = _draws(generator)  # what the crashed run would have drawn next

    other, opt2, sched2, gen2 = _objects(1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert load_state(tmp_path, "run-b", other, opt2, sched2, gen2) == 0  # another configuration
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert not opt2.state_dict()["state"] and sched2.last_epoch == 0
    assert torch.equal(gen2.get_state(), torch.Generator().get_state())  # nothing restored

    assert load_state(tmp_path, "run-a", other, opt2, sched2, gen2) == 7
    assert all(torch.equal(model.state_dict()[k], v) for k, v in other.state_dict().items())
    assert sched2.last_epoch == scheduler.last_epoch == 1
    assert opt2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    saved, loaded = optimizer.state_dict()["state"], opt2.state_dict()["state"]
    assert saved.keys() == loaded.keys() and len(saved) == 2  # weight and bias moments
    for k in saved:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(loaded[k][name], saved[k][name]), (k, name)
    assert _draws(gen2) == expected  # every random stream continues where the saved run stopped
    assert load_state(tmp_path / "missing", "run-a", other, opt2, sched2, gen2) == 0


def test_an_unreadable_state_is_one_line_and_is_kept(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="state.pt: not a resumable state this command can read .* delete it"):
        load_state(tmp_path, "run-a", *_objects(0))
    assert (tmp_path / "state.pt").read_bytes() == b"\x00" * 64  # the user decides; nothing is deleted


def test_a_finished_run_deletes_only_what_it_wrote_in_its_state_dir(tmp_path):
    """`--state-dir` may name a folder that holds other files: clear_state removes the state, its
    DVCLive copy and stale scratch files, keeps the rest, and the folder itself when it is left empty."""
    model, optimizer, scheduler, generator = _objects(0)
    shared, own = tmp_path / "shared", tmp_path / "own"
    for folder in (shared, own):
        save_state(folder, "run-a", 3, model, optimizer, scheduler, generator)
        (folder / "live").mkdir()
        (folder / "live" / "metrics.json").write_text("{}")
        (folder / ".state.pt.tmp-99999").write_bytes(b"half")
    (shared / "notes.txt").write_text("mine")
    clear_state(shared)
    clear_state(own)
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"]
    assert not own.exists()
