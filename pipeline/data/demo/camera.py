"""Pinhole camera with the NYUv2 Kinect intrinsics, scaled to the render size, and seeded camera poses.

Intrinsics: fx=518.8579, fy=519.4696, cx=325.58, cy=253.74 at 640x480 (the values shipped with NYUv2
and used by BTS/AiT, PAPER_NOTES §6.1). They are scaled about pixel *centres* ((c + 0.5) * s - 0.5) so a
downsized frame sees exactly the same field of view. Camera frame is OpenCV's: x right, y down, z
forward; `Pose.rotation` holds those three axes as world-frame columns.

Poses stand 1.2-1.7 m above the floor (hand-held Kinect height), look at a random object or a random
point of the room with some yaw/pitch jitter and a little roll, keep 0.35 m away from every object
footprint and wall, and are rejected if anything is closer than 0.5 m in front of the lens, if the
median depth is under 1.5 m (staring at a wall) or if objects cover less than 5 % of the view.
60 % of the cameras stand 0.35-1 m from a wall, as NYUv2 sequences are mostly filmed from a room's
edge looking across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.demo.raycast import ROOM_FACES, Geometry, cast
from pipeline.data.demo.scene import Scene

NYU_WIDTH, NYU_HEIGHT = 640, 480
NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.8579, 519.4696, 325.58, 253.74


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @staticmethod
    def nyu(width: int = NYU_WIDTH, height: int = NYU_HEIGHT) -> Intrinsics:
        """NYUv2 Kinect intrinsics rescaled to `width` x `height` pixels."""
        sx, sy = width / NYU_WIDTH, height / NYU_HEIGHT
        # (c + 0.5) * s - 0.5, written so that s = 1 returns the NYUv2 numbers bit-exactly
        cx, cy = NYU_CX * sx + 0.5 * (sx - 1), NYU_CY * sy + 0.5 * (sy - 1)
        return Intrinsics(NYU_FX * sx, NYU_FY * sy, cx, cy, width, height)

    def rays(self) -> np.ndarray:
        """`(H*W, 3)` camera-frame directions (x, y, 1) through pixel centres, row-major."""
        v, u = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        x, y = (u - self.cx) / self.fx, (v - self.cy) / self.fy
        return np.stack([x.ravel(), y.ravel(), np.ones(x.size)], -1)


@dataclass(frozen=True)
class Pose:
    position: np.ndarray  # (3,) world metres
    rotation: np.ndarray  # (3, 3) columns = camera x (right), y (down), z (forward) in world

    @staticmethod
    def look(position: np.ndarray, yaw: float, pitch: float, roll: float) -> Pose:
        """Camera at `position` heading `yaw` (from +x towards +y), `pitch` up (>0) or down, `roll`."""
        f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # f x up, normalised (level camera)
        down = np.cross(f, right)
        c, s = np.cos(roll), np.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
        return Pose(np.asarray(position, np.float64), np.stack([right, down, f], 1))

    def world_rays(self, cam_rays: np.ndarray) -> np.ndarray:
        """Camera-frame `(N, 3)` directions -> world frame (still z-depth parametrised)."""
        return np.einsum("nc,wc->nw", cam_rays, self.rotation)  # einsum, not BLAS: bitwise stable


_PROBE = Intrinsics.nyu(16, 12)  # coarse probe with the real field of view


def sample_poses(scene: Scene, geom: Geometry, rng: np.random.Generator, count: int) -> list[Pose]:
    """`count` valid camera poses inside `scene` (see module docstring), drawn from `rng`."""
    w, d, h = scene.size
    targets = [np.mean([p[1] for p in o.parts], 0) for o in scene.objects if not o.iscrowd]
    poses: list[Pose] = []
    for _ in range(count * 200):
        if len(poses) == count:
            break
        pos = np.array([rng.uniform(0.35, w - 0.35), rng.uniform(0.35, d - 0.35), rng.uniform(1.2, 1.7)])
        if rng.random() < 0.6:  # NYUv2 sequences are mostly filmed from the room's edge, looking across it
            wall = int(rng.integers(4))
            gap = rng.uniform(0.35, 1.0)
            pos[wall // 2] = gap if wall % 2 == 0 else (w, d)[wall // 2] - gap
        if rng.random() < 0.75 and targets:
            target = targets[int(rng.integers(len(targets)))]
        else:
            target = np.array([rng.uniform(0, w), rng.uniform(0, d), rng.uniform(0.3, 1.5)])
        dist = float(np.hypot(*(target - pos)[:2]))
        if dist < 1.0 or not scene.is_free(pos[0], pos[1], 0.35):
            continue
        yaw = float(np.arctan2(target[1] - pos[1], target[0] - pos[0]) + rng.normal(0, 0.2))
        pitch = float(np.clip(np.arctan2(target[2] - pos[2], dist) + rng.normal(0, 0.06), -0.6, 0.15))
        pose = Pose.look(pos, yaw, pitch, float(rng.normal(0, 0.03)))
        depth, surf = cast(geom, pose.position, pose.world_rays(_PROBE.rays()))
        # nothing right in front of the lens, not staring at a near wall, some objects in view
        if depth.min() > 0.5 and np.median(depth) > 1.5 and np.mean(surf >= ROOM_FACES) > 0.05:
            poses.append(pose)
    if len(poses) < count:
        raise RuntimeError(f"could only place {len(poses)} of {count} cameras in a {w:.1f}x{d:.1f} m room")
    return poses
