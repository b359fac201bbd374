"""The view set cached per image of a dense task (depth, semantic labels): horizontal flip x crop
x-offset (PAPER_NOTES §6.1, §7.1).

The solver's depth augmentation (PAPER_NOTES §6.1) is: flip the full frame with p = 0.5, then take a random
square crop of side `crop_size` = the image height (480 of 480x640), i.e. only a horizontal offset
x in [0, W - crop_size]. Colour jitter and CutDepth never touch the depth, so the target tokens are a
function of (image, flip, x) alone and can be cached exactly (PAPER_NOTES §7.1).

A view (flip, x) is: flip the FULL depth map horizontally if `flip`, then take columns [x, x + crop)
and all rows. The cached offsets are 0, stride, 2·stride, ... plus W − crop if not already there:
- stride 1 caches every offset the solver's random crop can draw, so cached targets are exact
  (paper scale: 161 offsets x 2 flips x 225 tokens per image, ~1.8 GB uint8 for NYUv2 train);
- a coarser stride (the default) is V/161 of that size, and the solver must *snap* its random offset to
  the nearest cached one (`nearest_view`): the crop distribution becomes discrete (stride apart), which
  changes the augmentation, not the correctness of any single target. That is the trade-off.

The depth fed to the encoder is the GT with its zero holes, as at solver time in the official code
(PAPER_NOTES §2: the targets then encode an in-painted depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import CacheError


@dataclass(frozen=True)
class View:
    flip: bool  # the full frame is mirrored before cropping
    x: int  # first column of the crop in the (possibly flipped) frame


def view_offsets(width: int, crop_size: int, stride: int) -> list[int]:
    """Cached x-offsets: 0, stride, 2·stride, ... <= width − crop_size, plus width − crop_size."""
    if stride < 1:
        raise CacheError(f"crop_stride must be >= 1, got {stride}")
    last = width - crop_size
    offsets = list(range(0, last + 1, stride))
    if offsets[-1] != last:
        offsets.append(last)
    return offsets


def dense_views(height: int, width: int, crop_size: int, stride: int, key: str = "crop_size") -> list[View]:
    """The view list for `height x width` frames: for flip in (0, 1), for x in `view_offsets`; `key` names
    the crop size's param in errors."""
    if crop_size != height or crop_size > width:
        raise CacheError(f"{key} {crop_size} must equal the frame height {height} and not "
                         f"exceed its width {width} (the solver crops a full-height square, PAPER_NOTES §6.1)")
    return [View(flip, x) for flip in (False, True) for x in view_offsets(width, crop_size, stride)]


def extract_views(depth: np.ndarray, views: list[View], crop_size: int) -> np.ndarray:
    """`(H, W)` depth -> `(V, H, crop_size)` float32 view crops, in the order of `views`."""
    flipped = depth[:, ::-1]
    out = [(flipped if v.flip else depth)[:, v.x : v.x + crop_size] for v in views]
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def nearest_view(views: list[View], flip: bool, x: int) -> int:
    """Index of the cached view with the same flip whose offset is nearest to `x` (ties: smaller x)."""
    candidates = [(abs(v.x - x), v.x, i) for i, v in enumerate(views) if v.flip == flip]
    if not candidates:
        raise CacheError(f"no cached view with flip={flip}")
    return min(candidates)[2]


def views_to_json(views: list[View]) -> list[dict[str, int]]:
    """JSON form stored in every sample's views.json and in the manifest: [{"flip": 0|1, "x": int}]."""
    return [{"flip": int(v.flip), "x": v.x} for v in views]


def views_from_json(rows: list[dict[str, int]]) -> list[View]:
    """Inverse of `views_to_json`."""
    return [View(bool(r["flip"]), int(r["x"])) for r in rows]
