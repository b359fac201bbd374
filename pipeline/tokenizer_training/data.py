"""The task-blind half of the tokenizers' training data: the seeded sampling of crops.

Each task's crops live in its folder (`pipeline/tasks/<task>/tokenizer.py`). Randomness is a pure
function of (seed, epoch, index): `EpochSampler` yields `(index, epoch)` pairs and a crop draws from
`sample_rng`, so crops are identical whatever the number of DataLoader workers or ranks (one code path).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample random stream: independent of worker count and process layout."""
    return np.random.default_rng([seed, epoch, index])


class EpochSampler(Sampler):
    """Yields `(index, epoch)` for `num_draws` draws of this rank's share of seeded permutations.

    Each epoch is a permutation of range(n) seeded by (seed, epoch); rank r takes positions
    r, r + world, ... of its first `n // world * world` entries, so every rank sees the same number
    of samples (DDP needs equal step counts) and no sample twice within an epoch.
    """

    def __init__(self, n: int, num_draws: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n < world_size:
            raise ValueError(f"{n} samples cannot be split over {world_size} ranks")
        self.n, self.num_draws, self.seed, self.rank, self.world = n, num_draws, seed, rank, world_size

    def __len__(self) -> int:
        return self.num_draws

    def __iter__(self) -> Iterator[tuple[int, int]]:
        drawn, epoch = 0, 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            usable = perm[: self.n // self.world * self.world][self.rank :: self.world]
            for i in usable:
                if drawn == self.num_draws:
                    return
                yield int(i), epoch
                drawn += 1
            epoch += 1


