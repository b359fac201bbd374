"""Binary instance mask -> COCO segmentation (polygons traced along pixel borders, or compressed RLE).

COCO instances json (PAPER_NOTES §6.2) stores ordinary objects as polygons and crowd regions as RLE. Our
polygons follow the *cracks* between pixels: pixel (r, c) is the unit square [c, c+1] x [r, r+1],
so every vertex is an integer pixel corner and pycocotools' `frPyObjects` rasterises the polygon back
to exactly the traced pixels (checked in tests/test_demo.py). Pixels touching only diagonally are
separate (4-connected) parts.

Masks with holes (a table seen between its legs, a shelf's open back) cannot be a union of simple
polygons, and COCO unions the polygons of one annotation. pycocotools fills each single polygon with
the even-odd rule, so such a mask becomes ONE "keyhole" polygon: every ring is visited from a common
anchor vertex and the bridge to it is walked there and back, which cancels under even-odd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

_DIR_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # right, down, left, up in (x, y)


def mask_area_bbox(mask: np.ndarray) -> tuple[int, list[float]]:
    """`(H, W)` bool mask -> (pixel count, tight COCO bbox [x, y, w, h] in pixel-corner units)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return 0, [0.0, 0.0, 0.0, 0.0]
    x0, y0 = float(cols[0]), float(rows[0])
    return int(mask.sum()), [x0, y0, float(cols[-1] + 1) - x0, float(rows[-1] + 1) - y0]


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """`(H, W)` bool mask -> compressed COCO RLE `{"size": [H, W], "counts": str}` (pycocotools)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """`(H, W)` bool mask -> COCO polygons `[[x0, y0, x1, y1, ...], ...]` that rasterise to it exactly."""
    rings = _trace_rings(mask)
    if not rings:
        return []
    if all(_signed_area(r) > 0 for r in rings):  # no holes: one polygon per 4-connected part
        return [r.astype(np.float64).ravel().tolist() for r in rings]
    anchor = rings[0][:1]
    pieces = [rings[0], anchor]
    for ring in rings[1:]:  # bridge anchor -> ring -> back to its start -> anchor
        pieces += [ring, ring[:1], anchor]
    return [np.concatenate(pieces).astype(np.float64).ravel().tolist()]


def _signed_area(ring: np.ndarray) -> float:
    # Shoelace in (x right, y down): our outer rings run clockwise on screen and come out positive.
    x, y = ring[:, 0].astype(np.int64), ring[:, 1].astype(np.int64)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _trace_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary rings as (V, 2) int (x, y) corner arrays; collinear vertices removed."""
    h, w = mask.shape
    p = np.pad(mask.astype(bool), 1)  # padded pixel (i, j) spans [j-1, j] x [i-1, i] in mask coords
    inner = p[1:-1, 1:-1]
    # One directed edge per exposed pixel side, oriented so the mask is on the right of travel
    # (screen-clockwise): top sides run right, right sides down, bottom sides left, left sides up.
    starts, dirs = [], []
    for d, (di, dj), (oi, oj) in (
        (0, (-1, 0), (0, 0)),  # top side: starts at the pixel's top-left corner
        (1, (0, 1), (0, 1)),  # right side: top-right corner
        (2, (1, 0), (1, 1)),  # bottom side: bottom-right corner
        (3, (0, -1), (1, 0)),  # left side: bottom-left corner
    ):
        exposed = inner & ~p[1 + di:h + 1 + di, 1 + dj:w + 1 + dj]
        r, c = np.nonzero(exposed)
        starts.append(np.stack([c + oj, r + oi], -1))
        dirs.append(np.full(len(r), d))
    start = np.concatenate(starts)
    direction = np.concatenate(dirs)
    if len(start) == 0:
        return []
    end = start + _DIR_STEP[direction]
    key = lambda xy: xy[:, 1] * (w + 1) + xy[:, 0]  # noqa: E731 - vertex id on the (H+1) x (W+1) grid
    k_start, k_end = key(start), key(end)
    order = np.argsort(k_start, kind="stable")
    sorted_start = k_start[order]
    first = np.searchsorted(sorted_start, k_end)
    second = np.minimum(first + 1, len(order) - 1)
    c0, c1 = order[first], order[second]
    # Only "saddle" corners (two diagonal pixels) have two outgoing edges: take the right turn, which
    # keeps walking around the same pixel, so diagonal neighbours become separate rings.
    saddle = (sorted_start[second] == k_end) & (second != first)
    nxt = np.where(saddle & (direction[c1] == (direction + 1) % 4), c1, c0).tolist()
    seen = bytearray(len(nxt))
    rings = []
    for e0 in range(len(nxt)):
        if seen[e0]:
            continue
        loop, e = [], e0
        while not seen[e]:
            seen[e] = 1
            loop.append(e)
            e = nxt[e]
        loop = np.asarray(loop)
        turn = direction[loop] != direction[np.roll(loop, 1)]  # keep corners only
        rings.append(start[loop[turn]])
    return rings
