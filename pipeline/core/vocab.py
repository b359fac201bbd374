"""The task-solver's shared vocabulary layout: the ONLY place `vocab_size` and offsets are derived.

Follows PAPER_NOTES §4.3 (`ARTransformer.__init__`, lines 164-169). One global id space, in this order:

    coordinate bins (num_bins+1) | classes | reserved (1) | noise class (1) | task codes ... | spare codes

The task code ranges come from the token-cache manifests (`tasks.registry.vocab_for`: each task's
codebook size, in the registry's order: mask, depth, semseg); nothing is typed. A task that is absent
has no range; asking for it raises.
The paper configuration always carries both code ranges: V = 2001 + 80 + 2 + 128 + 128 = 2339, and the
instance-segmentation/joint configs add 128 unused "others" slots, V = 2467 (`Vocab.paper`).

Vocabulary of names: `indices` are local to one range (codebook ids, class labels, bins);
`tokens` are global ids in [0, V).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

FIXED_KINDS = ("coord", "class", "reserved", "noise")  # then each task's codes, then "spare"


@dataclass(frozen=True)
class Vocab:
    """Sizes of each range; every offset and V are derived properties (PAPER_NOTES §4.3).

    `codes` holds one (kind, codebook size) per task of the solver, in layout order (the registry's:
    mask codes before depth codes, as the official layout); a task without a cache has no entry.
    """

    num_bins: int
    num_classes: int
    codes: tuple[tuple[str, int], ...] = ()
    spare_codes: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple((str(k), v) for k, v in self.codes))  # from config.json lists
        sizes = {"num_bins": self.num_bins, "num_classes": self.num_classes, "spare_codes": self.spare_codes}
        sizes |= {f"codes[{k}]": v for k, v in self.codes}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Vocab.{name} must be a non-negative int, got {value!r}")
        for kind, value in self.codes:
            if value == 0:
                raise ValueError(f"Vocab.codes[{kind}]=0: leave an absent task out")
            if kind in (*FIXED_KINDS, "spare"):
                raise ValueError(f"Vocab.codes: {kind!r} is not a code kind")
        if len({k for k, _ in self.codes}) != len(self.codes):
            raise ValueError(f"Vocab.codes: kinds repeat in {self.codes}")

    @classmethod
    def build(cls, num_bins: int, num_classes: int, mask_codes: int | None, depth_codes: int | None,
              spare_codes: int = 0) -> Vocab:
        """The two-task layout of the paper from plain numbers; `None` marks an absent task codebook."""
        present = {k: v for k, v in dict(mask=mask_codes, depth=depth_codes).items() if v is not None}
        return cls(num_bins, num_classes, tuple(present.items()), spare_codes)

    @classmethod
    def paper(cls, with_insseg: bool) -> Vocab:
        """The official layout: V=2339 (depth-only / detection) or 2467 (insseg / joint, +128 spare)."""
        return cls.build(2000, 80, 128, 128, spare_codes=128 if with_insseg else 0)

    # ---------------------------------------------------------------------------------------------
    # offsets (names follow the official `class_offset`, `special_offset`, ... attributes)

    @property
    def class_offset(self) -> int:
        return self.num_bins + 1

    @property
    def reserved_token(self) -> int:
        # `special_offset` in the official code: no role when pred_eos=False (PAPER_NOTES §4.3)
        return self.class_offset + self.num_classes

    @property
    def noise_token(self) -> int:
        # `noise_label`: the "fake/background" class of noise boxes (Pix2Seq sequence augmentation)
        return self.reserved_token + 1

    @property
    def codes_offset(self) -> int:
        """First id of the first task's code range."""
        return self.noise_token + 1

    def offset(self, kind: str) -> int:
        """First global id of `kind`'s range."""
        return self.task_range(kind).start

    @property
    def spare_offset(self) -> int:
        return self.codes_offset + sum(v for _, v in self.codes)

    @property
    def size(self) -> int:
        """V, the number of rows of the tied token-embedding matrix."""
        return self.spare_offset + self.spare_codes

    # ---------------------------------------------------------------------------------------------
    # ranges and conversions

    def _starts(self) -> dict[str, tuple[int, int]]:
        starts = {"coord": (0, self.num_bins + 1), "class": (self.class_offset, self.num_classes),
                  "reserved": (self.reserved_token, 1), "noise": (self.noise_token, 1)}
        start = self.codes_offset
        for kind, size in self.codes:
            starts[kind] = (start, size)
            start += size
        return starts | {"spare": (self.spare_offset, self.spare_codes)}

    def task_range(self, kind: str) -> range:
        """Global token ids of one kind: "coord", "class", "reserved", "noise", a task's code kind or
        "spare"."""
        starts = self._starts()
        if kind not in starts:
            raise KeyError(f"token kind {kind!r} is absent from this vocabulary (kinds: {', '.join(starts)})")
        start, length = starts[kind]
        return range(start, start + length)

    @property
    def ranges(self) -> dict[str, range]:
        """Every present kind with its global range, in layout order (empty ranges dropped)."""
        return {k: range(a, a + n) for k, (a, n) in self._starts().items() if n > 0}

    def to_global(self, indices: Tensor, kind: str) -> Tensor:
        """Local ids of `kind` (any shape, int) -> global tokens; raises if an id is out of the range."""
        r = self.task_range(kind)
        _check_within(indices, 0, len(r), kind)
        return indices + r.start

    def to_local(self, tokens: Tensor, kind: str) -> Tensor:
        """Global tokens (any shape, int) -> local ids of `kind`; raises if a token is not of that kind."""
        r = self.task_range(kind)
        _check_within(tokens, r.start, r.stop, kind)
        return tokens - r.start

    def legal_mask(self, kinds: str | Iterable[str], device: torch.device | str | None = None) -> Tensor:
        """(V,) bool: True on the union of the ranges of `kinds` (inference restricts logits to it)."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        mask = torch.zeros(self.size, dtype=torch.bool, device=device)
        for kind in kinds:
            r = self.task_range(kind)
            mask[r.start : r.stop] = True
        return mask

    def coord_to_token(self, coord_px: Tensor, norm: float) -> Tensor:
        """Float pixel coords -> int64 coordinate tokens, clamp(round(c / norm * num_bins)) (PAPER_NOTES §4.5)."""
        bins = torch.round(coord_px / norm * self.num_bins)
        return bins.clamp(0, self.num_bins).long()  # coordinate range starts at global id 0

    def token_to_coord(self, tokens: Tensor, norm: float) -> Tensor:
        """Coordinate tokens -> float32 pixel coords, token * norm / num_bins (inverse up to rounding)."""
        _check_within(tokens, 0, self.num_bins + 1, "coord")
        return tokens.float() * (norm / self.num_bins)


def _check_within(values: Tensor, low: int, high: int, kind: str) -> None:
    """Raise ValueError unless low <= values < high (host sync: keep out of per-step decoding loops)."""
    if values.numel() and (int(values.min()) < low or int(values.max()) >= high):
        raise ValueError(
            f"{kind} ids must lie in [{low}, {high}), got min {int(values.min())}, max {int(values.max())}"
        )
