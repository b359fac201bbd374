"""How one step's global batch is dealt out to the ranks, and how each rank weights its task losses.

A step holds `B_t` images of each task t (`solver.runs.<run>.batch_size`), N = Σ B_t in all. Rank r of W
gets n_t(r) = ⌊B_t / W⌋ images of t, plus one of the B_t mod W left over; the left-overs of the tasks
are dealt in turn from where the previous task's stopped, so every rank holds ⌊N / W⌋ or ⌈N / W⌉
images. A task's batch need not divide W: the paper's joint step (60 COCO + 4 NYU) runs on 8 ranks as
ranks 0-3 with 1 NYU + 7 COCO images and ranks 4-7 with 8 COCO images (the official sampler deals the
64 images one per GPU, PAPER_NOTES §4.6 "Joint training arithmetic").

Each rank computes the mean loss of its own images per task; DDP averages gradients over the ranks. The
official loss of a step is therefore Σ_t w_t · (images of t / N) · mean loss of t: a task weighs by its
share of the step's images (the joint recipe's depth 0.2 acts on 4 of 64 images). Rank r reproduces it
exactly with the weight w_t · n_t(r) · W / N on its local mean; one task on all ranks gets weight w_t.
"""

from __future__ import annotations

from pipeline.core.config import ConfigError


def rank_batches(batch_size: dict[str, int], rank: int, world_size: int) -> dict[str, int]:
    """Images of each task on `rank` (0 for a task the rank does not train this step)."""
    total = sum(batch_size.values())
    if total < world_size:
        raise ConfigError(f"a step's batch of {total} images ({batch_size}) cannot give each of "
                          f"{world_size} processes an image; raise solver.runs.*.batch_size or use fewer")
    out, start = {}, 0
    for task in sorted(batch_size):
        extra = batch_size[task] % world_size
        out[task] = batch_size[task] // world_size + int((rank - start) % world_size < extra)
        start = (start + extra) % world_size
    return out


def rank_loss_weights(batch_size: dict[str, int], loss_weights: dict[str, float], rank: int,
                      world_size: int) -> dict[str, float]:
    """Per task on `rank`: w_t · n_t(rank) · W / N (see the module docstring)."""
    total = sum(batch_size.values())
    local = rank_batches(batch_size, rank, world_size)
    return {t: loss_weights.get(t, 1.0) * n * world_size / total for t, n in local.items() if n}
