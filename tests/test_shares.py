"""Dealing a step's global batch to DDP ranks and weighting each rank's task losses (solver_training/shares.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import ConfigError
from pipeline.solver_training.shares import rank_batches, rank_loss_weights


def test_the_paper_joint_step_runs_on_eight_ranks():
    """4 NYU + 60 COCO images (the official 64 GPUs at one image each, PAPER_NOTES §4.6) on 8 ranks."""
    batch = {"depth": 4, "insseg": 60}
    ranks = [rank_batches(batch, r, 8) for r in range(8)]
    assert ranks[:4] == [{"depth": 1, "insseg": 7}] * 4
    assert ranks[4:] == [{"depth": 0, "insseg": 8}] * 4
    weights = [rank_loss_weights(batch, {"depth": 0.2, "insseg": 1.0}, r, 8) for r in range(8)]
    assert weights[0] == pytest.approx({"depth": 0.2 * 8 / 64, "insseg": 7 * 8 / 64})
    assert weights[7] == pytest.approx({"insseg": 1.0})  # no depth image, no depth loss on this rank


@pytest.mark.parametrize("seed", range(30))
def test_every_image_is_dealt_once_and_ranks_are_balanced(seed):
    g = np.random.default_rng(seed)
    world = int(g.integers(1, 9))
    batch = {t: int(g.integers(0 if t == "depth" else 1, 40)) for t in ("depth", "insseg")}
    if sum(batch.values()) < world:
        with pytest.raises(ConfigError, match="cannot give each"):
            rank_batches(batch, 0, world)
        return
    ranks = [rank_batches(batch, r, world) for r in range(world)]
    for t, b in batch.items():
        assert sum(r[t] for r in ranks) == b
    totals = {sum(r.values()) for r in ranks}
    assert max(totals) - min(totals) <= 1 and min(totals) >= 1


@pytest.mark.parametrize("seed", range(20))
def test_rank_weights_make_the_ddp_average_the_official_step_loss(seed):
    """DDP averages the ranks' losses: with these weights the average of local means equals
    Σ_t w_t · Σ_{images of t} loss / N, the official step (each GPU's own task loss, averaged)."""
    g = np.random.default_rng(seed)
    world = int(g.integers(1, 9))
    batch = {"depth": int(g.integers(1, 12)), "insseg": int(g.integers(world, 40))}
    w = {"depth": float(g.uniform(0.1, 2)), "insseg": float(g.uniform(0.1, 2))}
    losses = {t: g.random(b) for t, b in batch.items()}  # one loss per image
    official = sum(w[t] * losses[t].sum() for t in batch) / sum(batch.values())
    taken, per_rank = dict.fromkeys(batch, 0), []
    for r in range(world):
        local, weights = rank_batches(batch, r, world), rank_loss_weights(batch, w, r, world)
        mine = {t: losses[t][taken[t] : taken[t] + n] for t, n in local.items()}
        taken = {t: taken[t] + local[t] for t in batch}
        per_rank.append(sum(weights[t] * mine[t].mean() for t in weights))
    assert np.mean(per_rank) == pytest.approx(official, rel=1e-12)


def test_one_task_on_all_ranks_keeps_its_weight():
    for world in (1, 2, 3, 8):
        assert rank_loss_weights({"depth": 24}, {"depth": 0.5}, 0, world) == pytest.approx({"depth": 0.5})
