"""Category tint: pull each object's colours toward one hue per category, keeping their brightness.

The rooms draw object colours from shared material palettes (wood, fabric, plastic...), as real
furniture does, so colour says little about what an object is. A detector that starts from a
pretrained backbone (the paper's SwinV2-B) has learnt shape and part cues elsewhere; the demo's tiny
SwinV2 trains from scratch for a few CPU minutes on 10 rooms and learns neither: without the tint its
test box AP is about that of an image-blind class prior (README, "Results on the demo data"). A share
`tint` of each object's colour is therefore replaced by its category's hue at the same luminance: a
learnable recognition cue, the instance counterpart of the camera flash that gives depth its cue.
Luminance is kept (up to clipping), so the flash fall-off, the IR-dark objects and every depth map are
unchanged; no random draws are made, so `tint` changes only the RGB images.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

from pipeline.data.demo.scene import CATEGORIES, Material, Scene

_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance of sRGB values
_SATURATION = 0.8
_HUE_STRIDE = 5  # coprime with the 13 categories, so every hue is used once


def category_colours() -> dict[int, np.ndarray]:
    """Category id -> an sRGB colour: `len(CATEGORIES)` hues evenly spaced around the colour wheel, dealt
    with a stride of `_HUE_STRIDE` so that neighbours in `CATEGORIES` (chair, couch; box, bin) differ most."""
    n = len(CATEGORIES)
    return {c["id"]: np.array(colorsys.hsv_to_rgb((k * _HUE_STRIDE % n) / n, _SATURATION, 1.0))
            for k, c in enumerate(CATEGORIES)}


def retint(color: tuple[float, float, float], target: np.ndarray, tint: float) -> tuple[float, float, float]:
    """Blend `color` toward `target` rescaled to `color`'s luminance, by the share `tint`."""
    c = np.asarray(color)
    luma = float(c @ _LUMA)
    toward = target * (luma / float(target @ _LUMA))
    return tuple(np.clip((1 - tint) * c + tint * toward, 0.0, 1.0).tolist())


def tint_scene(scene: Scene, tint: float) -> Scene:
    """`scene` with every object material retinted toward its category's hue (room and decals untouched)."""
    if tint == 0:
        return scene
    colours = category_colours()
    owner = {m: obj.category_id for obj in scene.objects for *_, m in obj.parts}
    materials = tuple(_retint_material(mat, colours[owner[i]], tint) if i in owner else mat
                      for i, mat in enumerate(scene.materials))
    return dataclasses.replace(scene, materials=materials)


def _retint_material(mat: Material, target: np.ndarray, tint: float) -> Material:
    return dataclasses.replace(mat, color=retint(mat.color, target, tint),
                               color2=retint(mat.color2, target, tint))
