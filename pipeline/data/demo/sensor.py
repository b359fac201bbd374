"""Kinect-like invalid regions of the sensor depth (0 = no reading), as in NYUv2's raw/sync depth.

A structured-light sensor (Kinect v1, NYUv2's camera) reads depth only where its IR camera sees the
projected dot pattern. Three physical reasons for a missing reading are simulated:

* range   — no return beyond `max_range` (pattern too faint; NYUv2 sync depth rarely exceeds ~10 m);
* shadow  — the surface point is not lit by the projector, which sits `baseline` metres to the camera's
            right (+x): a ray from the projector to the point hits something else first. This gives the
            characteristic bands on the left of foreground objects, widest at large depth jumps;
* material — IR-absorbing ("dark") objects return nothing; specular objects return nothing where the
            view direction is within `SPECULAR_DEG` of the normal (the pattern is mirrored into the lens
            and saturates it); window panes (glass) return nothing at all (counted as "specular").

The complete (hole-free) depth keeps every pixel; the sensor depth is it with these pixels zeroed.
Deliberate deviation from real sync depth: no missing border (NYUv2's registration to the RGB frame
leaves a ~10-40 px invalid frame) and no random speckle dropout.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.demo.camera import Pose
from pipeline.data.demo.raycast import Geometry, occluded

SPECULAR_DEG = 20.0
CAUSES = ("range", "shadow", "dark", "specular")


def projector_position(pose: Pose, baseline: float) -> np.ndarray:
    """World position `(3,)` of the IR projector: `baseline` metres along the camera's +x (right) axis."""
    return pose.position + baseline * pose.rotation[:, 0]


def projector_shadow(geom: Geometry, projector: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`(N,)` True where `points (N, 3)` are hidden from the projector by an object (a shadow ray)."""
    return occluded(geom, projector, points)


def invalid_causes(
    depth: np.ndarray, shadow: np.ndarray, dark: np.ndarray, specular: np.ndarray, cos_view: np.ndarray,
    max_range: float, glass: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-cause `(N,)` bool masks from z-depth (m), projector shadow, material flags, |cos(view, normal)|
    and window glass (counted as specular: it returns nothing at any angle)."""
    mirror = specular & (cos_view > np.cos(np.deg2rad(SPECULAR_DEG)))
    return {
        "range": depth > max_range,
        "shadow": shadow,
        "dark": dark,
        "specular": mirror if glass is None else mirror | glass,
    }


def sensor_depth(complete_mm: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """The sensor depth: `complete_mm` (uint16) with `invalid` pixels set to 0."""
    return np.where(invalid, 0, complete_mm).astype(np.uint16)
