"""Vectorised pure-NumPy ray casting of an indoor scene: a room interior plus boxes, cylinders, spheres.

Every ray of a cast shares one origin (the camera, the IR projector or the ceiling light), so a cast
is a handful of NumPy expressions over `(P, N)` arrays: no per-pixel Python. Primitives are grouped
by object, a two-level "BVH": each group's bounding sphere is tested for all rays at once (as a cone
of directions from the shared origin), its primitives only for the rays inside that cone whose
current nearest hit lies beyond the sphere.

Conventions (world frame, metres): z is up; the room is the box [0, W] x [0, D] x [0, H] seen from
the inside. Boxes may be rotated about the vertical axis (`yaw`); cylinders are vertical; `half` is
the box half extents, `(r, r, half height)` for a cylinder and `(r, r, r)` for a sphere. A ray is
`origin + t * dir` with an unnormalised `dir`: the camera uses `dir = R @ (x, y, 1)` so that `t` is
the z-depth, shadow rays use `dir = target - origin` so that `t = 1` is the target.

Surface ids: 0..5 are the room faces (floor, ceiling, wall x=0, wall x=W, wall y=0, wall y=D), 6 + i
is primitive i; -1 is "no hit" (only possible when the room is left out of a cast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, SPHERE = 0, 1, 2
ROOM_FACES = 6
ROOM_NORMALS = np.array(
    [[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64
)  # inward normals of floor, ceiling, x=0, x=W, y=0, y=D
_EPS = 1e-9  # smallest accepted ray parameter (rays never start on a surface they may hit)
_CHUNK = 1 << 15  # rays per block: bounds the (K, N) temporaries at 640x480
# Products use einsum's own loops, never BLAS: multithreaded BLAS was ~10x slower on a loaded 2-core box
# for these thin (K, 3) x (3, N) shapes, and its kernels differ by CPU (bitwise determinism).


@dataclass(frozen=True)
class Geometry:
    """Packed primitives of one scene; build it with `Geometry.build`."""

    room: np.ndarray  # (3,) W, D, H
    kind: np.ndarray  # (P,) BOX | CYLINDER | SPHERE
    center: np.ndarray  # (P, 3)
    half: np.ndarray  # (P, 3)
    yaw: np.ndarray  # (P,) radians about +z
    groups: tuple[tuple[tuple[int, np.ndarray], ...], ...]  # per group: (kind, primitive indices)
    lo: np.ndarray  # (K, 3) group bounds (axis-aligned)
    hi: np.ndarray  # (K, 3)

    @staticmethod
    def build(
        room: Sequence[float],
        prims: Sequence[tuple[int, Sequence[float], Sequence[float], float, int]],
    ) -> Geometry:
        """Pack `(kind, center, half, yaw, group)` tuples; groups are numbered 0..K-1."""
        kind = np.array([p[0] for p in prims], dtype=np.int64)
        center = np.array([p[1] for p in prims], dtype=np.float64).reshape(-1, 3)
        half = np.array([p[2] for p in prims], dtype=np.float64).reshape(-1, 3)
        yaw = np.array([p[3] for p in prims], dtype=np.float64)
        group = np.array([p[4] for p in prims], dtype=np.int64)
        # A yawed box's horizontal extent is |cos|*hx + |sin|*hy (its rotated corners).
        c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
        ext = half.copy()
        is_box = kind == BOX
        ext[is_box, 0] = c[is_box] * half[is_box, 0] + s[is_box] * half[is_box, 1]
        ext[is_box, 1] = s[is_box] * half[is_box, 0] + c[is_box] * half[is_box, 1]
        n_groups = int(group.max()) + 1 if len(group) else 0
        groups, lo, hi = [], np.zeros((n_groups, 3)), np.zeros((n_groups, 3))
        for g in range(n_groups):
            idx = np.flatnonzero(group == g)
            groups.append(tuple((k, idx[kind[idx] == k]) for k in (BOX, CYLINDER, SPHERE)
                                if np.any(kind[idx] == k)))
            lo[g] = (center[idx] - ext[idx]).min(0) - 1e-6
            hi[g] = (center[idx] + ext[idx]).max(0) + 1e-6
        return Geometry(np.asarray(room, np.float64), kind, center, half, yaw, tuple(groups), lo, hi)


def cast(
    geom: Geometry, origin: np.ndarray, dirs: np.ndarray, *, with_room: bool = True,
    t_max: float = np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hits of rays `origin (3,) + t * dirs (N, 3)`: `t (N,)` (t_max if none), surface ids `(N,)`."""
    n = len(dirs)
    t = np.empty(n, np.float64)
    surf = np.empty(n, np.int64)
    for s in range(0, n, _CHUNK):
        t[s:s + _CHUNK], surf[s:s + _CHUNK] = _cast_block(geom, origin, dirs[s:s + _CHUNK], with_room, t_max)
    return t, surf


def occluded(geom: Geometry, origin: np.ndarray, targets: np.ndarray, rel_eps: float = 1e-3) -> np.ndarray:
    """True where an object lies strictly between `origin (3,)` and `targets (N, 3)` (room walls ignored).

    The segment is parametrised so that t = 1 is the target; hits within `rel_eps` of it are the target's
    own surface. The room is convex and contains every origin we use, so walls never occlude.
    """
    t, _ = cast(geom, origin, targets - origin, with_room=False, t_max=1.0 - rel_eps)
    return t < 1.0 - rel_eps


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    # Axis-parallel rays: a tiny component instead of 0 keeps the slab arithmetic free of 0 * inf.
    d = np.where(np.abs(d) < 1e-12, np.copysign(1e-12, d), d)
    return 1.0 / d


def _cast_block(geom, origin, d, with_room, t_max):
    n = len(d)
    if with_room:
        t, surf = _room_hit(geom.room, origin, d)
    else:
        t, surf = np.full(n, t_max), np.full(n, -1, np.int64)
    if not geom.groups:
        return t, surf
    # Cull with each group's bounding sphere seen from the shared origin: a ray can only hit the group
    # if its direction lies in the cone around the sphere (one (K, 3) @ (3, N) product for all groups).
    center = 0.5 * (geom.lo + geom.hi)
    radius = 0.5 * np.linalg.norm(geom.hi - geom.lo, axis=-1)
    to_c = center - origin
    dist = np.linalg.norm(to_c, axis=-1)
    inside = dist <= radius
    cos_half = np.where(inside, -2.0, np.sqrt(np.clip(1 - (radius / np.maximum(dist, 1e-12)) ** 2, 0, 1)))
    length = np.linalg.norm(d, axis=-1)
    axis = to_c / np.maximum(dist, 1e-12)[:, None]
    cand = np.einsum("kc,nc->kn", axis, d / length[:, None]) >= cos_half[:, None]  # (K, N)
    entry = np.where(inside, 0.0, dist - radius)  # distance to the sphere: no hit can come earlier
    for g, parts in enumerate(geom.groups):
        sel = np.flatnonzero(cand[g])
        sel = sel[entry[g] < t[sel] * length[sel]]  # rays whose current hit is nearer skip the group
        if sel.size == 0:
            continue
        ds = d[sel]
        for kind, idx in parts:
            tk = _INTERSECT[kind](geom, idx, origin, ds)  # (Pk, M)
            j = tk.argmin(0)
            tmin = tk[j, np.arange(len(sel))]
            better = tmin < t[sel]
            t[sel[better]] = tmin[better]
            surf[sel[better]] = ROOM_FACES + idx[j[better]]
    return t, surf


def _room_hit(room, origin, d):
    # From inside a box every ray leaves through exactly one face: the smallest exit parameter.
    inv = _safe_inverse(d)
    t_axis = np.where(d > 0, (room - origin) * inv, -origin * inv)  # (N, 3)
    axis = t_axis.argmin(-1)
    t = t_axis[np.arange(len(d)), axis]
    positive = d[np.arange(len(d)), axis] > 0
    face = np.array([2, 4, 0])[axis] + positive  # x -> walls 2/3, y -> walls 4/5, z -> floor 0 / ceiling 1
    return t, face.astype(np.int64)


def _to_local(geom, idx, v):
    """Ray directions `v (M, 3)` rotated by -yaw of each primitive in `idx`: three (Pk, M) arrays."""
    c, s = np.cos(geom.yaw[idx])[:, None], np.sin(geom.yaw[idx])[:, None]
    x, y = v[:, 0], v[:, 1]
    return c * x + s * y, -s * x + c * y, np.broadcast_to(v[:, 2], (len(idx), len(v)))


def _boxes(geom, idx, origin, d):
    rel = origin[None, :] - geom.center[idx]  # (Pk, 3) origin relative to each box, then rotated by -yaw
    c, s = np.cos(geom.yaw[idx]), np.sin(geom.yaw[idx])
    o = (c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2])
    t_near, t_far = -np.inf, np.inf
    for axis, da in enumerate(_to_local(geom, idx, d)):  # slab test, one local axis at a time: (Pk, M)
        inv = _safe_inverse(da)
        h, oa = geom.half[idx, axis][:, None], o[axis][:, None]
        a, b = (-h - oa) * inv, (h - oa) * inv
        t_near = np.maximum(t_near, np.minimum(a, b))
        t_far = np.minimum(t_far, np.maximum(a, b))
    return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)


def _cylinders(geom, idx, origin, d):
    e = origin[None, :] - geom.center[idx]  # (Pk, 3)
    r, hh = geom.half[idx, 0][:, None], geom.half[idx, 2][:, None]
    ex, ey, ez = e[:, 0:1], e[:, 1:2], e[:, 2:3]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = np.maximum(dx * dx + dy * dy, 1e-18)
    b = 2.0 * (dx * ex + dy * ey)
    c = ex * ex + ey * ey - r * r
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2.0 * a)
    z = ez + t_side * dz
    t_side = np.where((disc >= 0) & (t_side > _EPS) & (np.abs(z) <= hh), t_side, np.inf)
    inv_dz = _safe_inverse(dz)
    t_caps = np.full_like(t_side, np.inf)
    for cap in (hh, -hh):  # top and bottom discs
        tc = (cap - ez) * inv_dz
        x, y = ex + tc * dx, ey + tc * dy
        ok = (tc > _EPS) & (x * x + y * y <= r * r)
        t_caps = np.minimum(t_caps, np.where(ok, tc, np.inf))
    return np.minimum(t_side, t_caps)


def _spheres(geom, idx, origin, d):
    e = origin[None, :] - geom.center[idx]  # (Pk, 3)
    r = geom.half[idx, 0][:, None]
    a = (d * d).sum(-1)  # (M,)
    b = 2.0 * np.einsum("pc,mc->pm", e, d)  # (Pk, M)
    c = (e * e).sum(-1)[:, None] - r * r
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2.0 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


_INTERSECT = {BOX: _boxes, CYLINDER: _cylinders, SPHERE: _spheres}


def surface_frame(
    geom: Geometry, surf: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For hits `surf (N,)` at `points (N, 3)`: primitive-local points, local normals, world normals.

    Local frame = the primitive's centre and yaw (room: the world frame); textures live there so that
    they move and rotate with their object. Normals face outwards (room: into the room).
    """
    local = points.copy()
    n_local = np.zeros_like(points)
    room = surf < ROOM_FACES
    n_local[room] = ROOM_NORMALS[surf[room]]
    n_world = n_local.copy()
    for kind, fn in ((BOX, _box_normal), (CYLINDER, _cylinder_normal), (SPHERE, _sphere_normal)):
        m = ~room & (geom.kind[np.maximum(surf - ROOM_FACES, 0)] == kind)
        if not m.any():
            continue
        idx = surf[m] - ROOM_FACES
        rel = points[m] - geom.center[idx]
        c, s = np.cos(geom.yaw[idx]), np.sin(geom.yaw[idx])
        lp = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)
        ln = fn(lp, geom.half[idx])
        local[m], n_local[m] = lp, ln
        n_world[m] = np.stack([c * ln[:, 0] - s * ln[:, 1], s * ln[:, 0] + c * ln[:, 1], ln[:, 2]], -1)
    return local, n_local, n_world


def _box_normal(lp, half):
    q = lp / half
    axis = np.abs(q).argmax(-1)  # the face the point lies on is the one it is (relatively) closest to
    n = np.zeros_like(lp)
    n[np.arange(len(lp)), axis] = np.sign(q[np.arange(len(lp)), axis])
    return n


def _cylinder_normal(lp, half):
    rad = np.hypot(lp[:, 0], lp[:, 1])
    cap = (half[:, 2] - np.abs(lp[:, 2])) < (half[:, 0] - rad)  # nearer a cap plane than the mantle
    safe = np.maximum(rad, 1e-12)
    side = np.stack([lp[:, 0] / safe, lp[:, 1] / safe, np.zeros_like(rad)], -1)
    top = np.stack([np.zeros_like(rad), np.zeros_like(rad), np.sign(lp[:, 2])], -1)
    return np.where(cap[:, None], top, side)


def _sphere_normal(lp, half):
    return lp / half[:, :1]
