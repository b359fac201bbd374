"""Per-pixel semantic classes of the demo rooms: room faces by kind, objects by their COCO category.

The class list is fixed by the code, not by what a render happens to show, so every render (any seed,
any size) shares one label space: 0 = unlabelled, then wall, floor, ceiling, then the object categories
of `scene.CATEGORIES` in their order. Decals (door, window, pictures, skirting) are paint on a wall in
the ray cast, so they are wall. A ray that hits nothing (surface -1) is unlabelled.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.demo.raycast import ROOM_FACES
from pipeline.data.demo.scene import CATEGORIES, Scene

STRUCTURE = ("wall", "floor", "ceiling")
CLASSES: tuple[dict, ...] = tuple(
    {"id": i, "name": name}
    for i, name in enumerate([*STRUCTURE, *(c["name"] for c in CATEGORIES)], start=1)
)
_ID = {c["name"]: c["id"] for c in CLASSES}
_FACE_CLASS = tuple(_ID[n] for n in ("floor", "ceiling", "wall", "wall", "wall", "wall"))  # faces 0..5
_CATEGORY_CLASS = {c["id"]: _ID[c["name"]] for c in CATEGORIES}  # COCO category id -> class id
assert len(CLASSES) < 256  # label PNGs are 8-bit


def surface_classes(scene: Scene, surf_object: np.ndarray) -> np.ndarray:
    """Class id per surface id `(6 + P,)` uint8, from the per-surface object index of `scene.pack`."""
    ids = list(_FACE_CLASS) + [_CATEGORY_CLASS[scene.objects[k - 1].category_id]
                               for k in surf_object[ROOM_FACES:]]
    return np.array(ids, np.uint8)


def pixel_classes(surface_class: np.ndarray, surf: np.ndarray) -> np.ndarray:
    """Class ids of cast hits `surf` (any shape; -1 = no hit -> 0) through the per-surface table."""
    return np.where(surf >= 0, surface_class[np.maximum(surf, 0)], 0).astype(np.uint8)
