"""The task-solver's shared vocabulary layout: the ONLY place `vocab_size` and offsets are derived.

Follows AiT ref §4.3 (`ARTransformer.__init__`, lines 164-169). One global id space, in this order:

    coordinate bins (num_bins+1) | classes | reserved (1) | noise class (1) | mask | depth | spare codes

`build` takes only numbers, so a manifest-reading constructor is a thin wrapper around it. A task that
is absent (`mask_codes=None` / `depth_codes=None`) contributes an empty range; asking for it raises.
The paper configuration always carries both code ranges: V = 2001 + 80 + 2 + 128 + 128 = 2339, and the
instance-segmentation/joint configs add 128 unused "others" slots, V = 2467 (`Vocab.paper`).

Vocabulary of names (STYLE §3.3): `indices` are local to one range (codebook ids, class labels, bins);
`tokens` are global ids in [0, V).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("coord", "class", "reserved", "noise", "mask", "depth", "spare")


@dataclass(frozen=True)
class Vocab:
    """Sizes of each range; every offset and V are derived properties (AiT ref §4.3)."""

    num_bins: int
    num_classes: int
    mask_codes: int | None = None
    depth_codes: int | None = None
    spare_codes: int = 0

    def __post_init__(self) -> None:
        sizes = {"num_bins": self.num_bins, "num_classes": self.num_classes, "spare_codes": self.spare_codes}
        sizes |= {"mask_codes": self.mask_codes or 0, "depth_codes": self.depth_codes or 0}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Vocab.{name} must be a non-negative int, got {value!r}")
        for name in ("mask_codes", "depth_codes"):
            if getattr(self, name) == 0:
                raise ValueError(f"Vocab.{name}=0: pass None for an absent task")

    @classmethod
    def build(
        cls,
        num_bins: int,
        num_classes: int,
        mask_codes: int | None,
        depth_codes: int | None,
        spare_codes: int = 0,
    ) -> Vocab:
        """Layout from plain numbers; `None` marks an absent task codebook."""
        return cls(num_bins, num_classes, mask_codes, depth_codes, spare_codes)

    @classmethod
    def from_manifests(cls, num_bins: int, depth: dict | None = None, insseg: dict | None = None,
                       spare_codes: int = 0) -> Vocab:
        """The layout of a solver trained on these token caches (their `manifest.json` dicts).

        Codebook sizes come from each cache's tokenizer and the class count from the insseg cache's
        categories; a task without a cache has no range. Nothing here is typed by hand.
        """
        return cls.build(
            num_bins,
            len(insseg["categories"]) if insseg else 0,
            insseg["tokenizer"]["num_embeddings"] if insseg else None,
            depth["tokenizer"]["num_embeddings"] if depth else None,
            spare_codes,
        )

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
        # `special_offset` in the official code: no role when pred_eos=False (AiT ref §4.3)
        return self.class_offset + self.num_classes

    @property
    def noise_token(self) -> int:
        # `noise_label`: the "fake/background" class of noise boxes (Pix2Seq sequence augmentation)
        return self.reserved_token + 1

    @property
    def mask_offset(self) -> int:
        return self.noise_token + 1

    @property
    def depth_offset(self) -> int:
        return self.mask_offset + (self.mask_codes or 0)

    @property
    def spare_offset(self) -> int:
        return self.depth_offset + (self.depth_codes or 0)

    @property
    def size(self) -> int:
        """V, the number of rows of the tied token-embedding matrix."""
        return self.spare_offset + self.spare_codes

    # ---------------------------------------------------------------------------------------------
    # ranges and conversions

    def task_range(self, kind: str) -> range:
        """Global token ids of one kind: "coord", "class", "reserved", "noise", "mask", "depth" or "spare"."""
        starts = {
            "coord": (0, self.num_bins + 1),
            "class": (self.class_offset, self.num_classes),
            "reserved": (self.reserved_token, 1),
            "noise": (self.noise_token, 1),
            "mask": (self.mask_offset, self.mask_codes),
            "depth": (self.depth_offset, self.depth_codes),
            "spare": (self.spare_offset, self.spare_codes),
        }
        if kind not in starts:
            raise KeyError(f"unknown token kind {kind!r}; expected one of {KINDS}")
        start, length = starts[kind]
        if length is None:
            raise KeyError(f"token kind {kind!r} is absent from this vocabulary ({kind}_codes=None)")
        return range(start, start + length)

    @property
    def ranges(self) -> dict[str, range]:
        """Every present kind with its global range, in layout order (empty ranges dropped)."""
        absent = {"mask"} if self.mask_codes is None else set()
        absent |= {"depth"} if self.depth_codes is None else set()
        return {k: r for k in KINDS if k not in absent and len(r := self.task_range(k)) > 0}

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
        """Float pixel coords -> int64 coordinate tokens, clamp(round(c / norm * num_bins)) (ref §4.5)."""
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
