"""Seeded random rooms: size, wall decor, furniture layout, materials and the ceiling light.

A room is NYUv2-like (3-8 m wide and deep, 2.4-3.2 m high). Furniture goes against the walls
(shelves with books, cabinets, couches), a table with chairs stands in the open, clutter (boxes, bins,
balls, plants, loose chairs) fills the floor, and small things (vases, bottles, balls, boxes, a TV)
stand on tables and low cabinets. A coarse floor occupancy grid keeps footprints apart and later keeps
cameras out of objects. Everything is drawn from the one generator passed in, in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.data.demo import furniture as fur
from pipeline.data.demo.raycast import ROOM_FACES, Geometry

# COCO-style categories. Real COCO ids/names/supercategories where the object exists in COCO
# (instances_val2017), ids > 100 for indoor classes COCO lacks (NYUv2 has cabinet, shelves, box, bin).
CATEGORIES: tuple[dict, ...] = (
    {"id": 37, "name": "sports ball", "supercategory": "sports"},
    {"id": 44, "name": "bottle", "supercategory": "kitchen"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
    {"id": 63, "name": "couch", "supercategory": "furniture"},
    {"id": 64, "name": "potted plant", "supercategory": "furniture"},
    {"id": 67, "name": "dining table", "supercategory": "furniture"},
    {"id": 72, "name": "tv", "supercategory": "electronic"},
    {"id": 84, "name": "book", "supercategory": "indoor"},
    {"id": 86, "name": "vase", "supercategory": "indoor"},
    {"id": 101, "name": "cabinet", "supercategory": "furniture"},
    {"id": 102, "name": "shelf", "supercategory": "furniture"},
    {"id": 103, "name": "box", "supercategory": "indoor"},
    {"id": 104, "name": "bin", "supercategory": "indoor"},
)
_CAT = {c["name"]: c["id"] for c in CATEGORIES}

# palette: (textures to choose from, base colours, colour-2 factor, texture scale range in metres)
_WOOD = [(0.55, 0.38, 0.22), (0.68, 0.5, 0.32), (0.4, 0.26, 0.15), (0.78, 0.64, 0.45)]
_PALETTES: dict[str, tuple[tuple[str, ...], list, float, tuple[float, float]]] = {
    "wood": (("wood",), _WOOD, 0.72, (0.08, 0.2)),
    "fabric": (("noise",), [(0.35, 0.4, 0.55), (0.6, 0.3, 0.3), (0.45, 0.5, 0.4), (0.7, 0.65, 0.55),
                            (0.3, 0.3, 0.33)], 0.8, (0.02, 0.05)),
    "plastic": (("plain",), [(0.85, 0.2, 0.2), (0.2, 0.45, 0.8), (0.95, 0.8, 0.2), (0.9, 0.9, 0.88),
                             (0.2, 0.6, 0.35)], 0.95, (0.1, 0.2)),
    "metal": (("noise",), [(0.62, 0.62, 0.64), (0.45, 0.45, 0.47), (0.75, 0.73, 0.7)], 0.85, (0.03, 0.06)),
    "painted": (("plain",), [(0.9, 0.9, 0.87), (0.75, 0.78, 0.8), (0.55, 0.6, 0.65), (0.85, 0.8, 0.7),
                             (0.6, 0.45, 0.35)], 0.95, (0.2, 0.4)),
    "ceramic": (("stripes", "plain"), [(0.3, 0.5, 0.7), (0.8, 0.75, 0.6), (0.6, 0.2, 0.25),
                                       (0.25, 0.25, 0.3)], 0.7, (0.03, 0.06)),
    "cardboard": (("noise",), [(0.7, 0.55, 0.35), (0.62, 0.48, 0.3)], 0.85, (0.02, 0.04)),
    "foliage": (("noise",), [(0.22, 0.45, 0.15), (0.3, 0.5, 0.2), (0.15, 0.35, 0.12)], 0.45, (0.02, 0.04)),
    "terracotta": (("plain",), [(0.7, 0.38, 0.25), (0.6, 0.32, 0.22)], 0.9, (0.1, 0.2)),
    "screen": (("plain",), [(0.06, 0.06, 0.08), (0.1, 0.1, 0.11)], 0.9, (0.1, 0.2)),
    "books": (("spines",), [(0.6, 0.2, 0.2), (0.2, 0.3, 0.6), (0.8, 0.7, 0.3), (0.3, 0.5, 0.3)], 0.6,
              (0.02, 0.04)),
    "ball": (("stripes",), [(0.9, 0.3, 0.1), (0.2, 0.4, 0.9), (0.95, 0.85, 0.2), (0.9, 0.9, 0.9)], 0.35,
             (0.05, 0.09)),
    "planks": (("planks",), _WOOD, 0.75, (0.1, 0.18)),
    "tiles": (("checker",), [(0.85, 0.83, 0.78), (0.6, 0.6, 0.62), (0.75, 0.7, 0.6)], 0.7, (0.3, 0.6)),
    "carpet": (("noise",), [(0.5, 0.42, 0.35), (0.35, 0.4, 0.45), (0.55, 0.5, 0.45)], 0.8, (0.03, 0.08)),
    "wall": (("plain", "stripes"), [(0.88, 0.85, 0.78), (0.8, 0.84, 0.86), (0.82, 0.86, 0.78),
                                    (0.9, 0.88, 0.86), (0.86, 0.78, 0.72)], 0.92, (0.08, 0.3)),
    "ceiling": (("plain",), [(0.93, 0.93, 0.9)], 0.97, (0.3, 0.5)),
    "window": (("window",), [(0.8, 0.88, 0.97), (0.9, 0.93, 0.95)], 1.1, (0.4, 0.7)),
    "picture": (("noise", "stripes", "checker"), [(0.7, 0.3, 0.2), (0.2, 0.4, 0.6), (0.5, 0.6, 0.3),
                                                  (0.8, 0.7, 0.4)], 0.45, (0.04, 0.15)),
}
_DARK_ALBEDO = 0.18  # IR-absorbing finishes (black plastic, leather, dark fabric) are dark in RGB too
_GRID = 0.05  # floor occupancy cell, metres


@dataclass(frozen=True)
class Material:
    texture: str  # plain | checker | stripes | noise | wood | planks | spines | window
    color: tuple[float, float, float]  # sRGB albedo in [0, 1]
    color2: tuple[float, float, float]
    scale: float  # texture period, metres
    seed: int


@dataclass(frozen=True)
class Decal:
    """A flat rectangle painted on a wall (door, window, picture, skirting): (u, v) = (along wall, z)."""

    face: int  # room face 2..5
    u0: float
    u1: float
    v0: float
    v1: float
    material: int
    glass: bool = False  # window pane: the IR pattern passes through, no depth reading


@dataclass(frozen=True)
class SceneObject:
    name: str  # builder name, e.g. "table"
    category_id: int
    parts: tuple[fur.LocalPart, ...]  # world coordinates
    iscrowd: bool = False
    dark: bool = False  # no IR return anywhere on it
    specular: bool = False  # no IR return where seen head-on; glossy highlight in RGB


@dataclass(frozen=True)
class Scene:
    size: tuple[float, float, float]  # W (x), D (y), H (z), metres
    objects: tuple[SceneObject, ...]
    materials: tuple[Material, ...]
    room_materials: tuple[int, int, int]  # floor, ceiling, walls
    decals: tuple[Decal, ...]
    light: tuple[float, float, float]  # ceiling point light, world metres
    occupied: np.ndarray = field(repr=False, compare=False)  # (GY, GX) bool floor grid, cell _GRID

    def is_free(self, x: float, y: float, radius: float) -> bool:
        """True when the floor disc (x, y, radius) lies in the room and touches no object footprint."""
        return _Floor.from_grid(self.size, self.occupied).fits_disc(x, y, radius)


def pack(scene: Scene) -> tuple[Geometry, np.ndarray, np.ndarray]:
    """Geometry for ray casting + per-surface object index (0 = room, k = objects[k-1]) and material."""
    prims, surf_obj, surf_mat = [], [0] * ROOM_FACES, [scene.room_materials[0], scene.room_materials[1]]
    surf_mat += [scene.room_materials[2]] * 4
    for k, obj in enumerate(scene.objects):
        for kind, center, half, yaw, mat in obj.parts:
            prims.append((kind, center, half, yaw, k))
            surf_obj.append(k + 1)
            surf_mat.append(mat)
    return Geometry.build(scene.size, prims), np.array(surf_obj), np.array(surf_mat)


class _Floor:
    """Boolean occupancy of the floor on a `_GRID` lattice (cell centres), plus room bounds."""

    def __init__(self, size, occupied=None):
        self.w, self.d = size[0], size[1]
        nx, ny = int(np.ceil(self.w / _GRID)), int(np.ceil(self.d / _GRID))
        self.occ = np.zeros((ny, nx), bool) if occupied is None else occupied
        self.x = (np.arange(nx) + 0.5) * _GRID
        self.y = (np.arange(ny) + 0.5) * _GRID

    @staticmethod
    def from_grid(size, occupied):
        return _Floor(size, occupied)

    def _rect(self, x, y, yaw, hx, hy):
        c, s = np.cos(yaw), np.sin(yaw)
        dx, dy = self.x[None, :] - x, self.y[:, None] - y
        return (np.abs(c * dx + s * dy) <= hx) & (np.abs(-s * dx + c * dy) <= hy)

    def fits_rect(self, x, y, yaw, hx, hy, margin=0.0):
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        ex, ey = c * hx + s * hy, s * hx + c * hy  # axis-aligned half extents of the rotated rectangle
        if x - ex < 0.01 or y - ey < 0.01 or x + ex > self.w - 0.01 or y + ey > self.d - 0.01:
            return False
        return not (self.occ & self._rect(x, y, yaw, hx + margin, hy + margin)).any()

    def fits_disc(self, x, y, r):
        if x - r < 0 or y - r < 0 or x + r > self.w or y + r > self.d:
            return False
        near = (self.x[None, :] - x) ** 2 + (self.y[:, None] - y) ** 2 <= r * r
        return not (self.occ & near).any()

    def add_rect(self, x, y, yaw, hx, hy):
        self.occ |= self._rect(x, y, yaw, hx, hy)


def _material(rng: np.random.Generator, palette: str, dark: bool) -> Material:
    textures, colors, factor, (s0, s1) = _PALETTES[palette]
    texture = str(textures[int(rng.integers(len(textures)))])
    tint = rng.uniform(0.85, 1.1) * rng.uniform(0.96, 1.04, 3)  # brightness, then a slight hue shift
    base = np.clip(np.asarray(colors[int(rng.integers(len(colors)))]) * tint, 0, 1)
    base = base * (_DARK_ALBEDO if dark else 1.0)
    return Material(texture, tuple(base.tolist()), tuple((base * factor).tolist()),
                    float(rng.uniform(s0, s1)), int(rng.integers(0, 2**20)))


class _Layout:
    """Mutable state while a room is being furnished (objects, materials, floor grid)."""

    def __init__(self, rng, size, dark_fraction, specular_fraction):
        self.rng, self.size = rng, size
        self.dark_fraction, self.specular_fraction = dark_fraction, specular_fraction
        self.materials: list[Material] = []
        self.objects: list[SceneObject] = []
        self.floor = _Floor(size)

    def mat_fn(self, dark: bool):
        def mat(palette: str) -> int:
            self.materials.append(_material(self.rng, palette, dark))
            return len(self.materials) - 1
        return mat

    def flags(self) -> tuple[bool, bool]:
        r = self.rng.random()
        dark = r < self.dark_fraction
        return bool(dark), bool(not dark and r < self.dark_fraction + self.specular_fraction)

    def add(self, category: str, built: fur.Built, at: tuple[float, float, float, float], dark=False,
            specular=False, iscrowd=False, claim_floor=True):
        """Place `built` with its local origin at `at` = (x, y, z0) turned by yaw, optionally claiming floor."""
        x, y, z0, yaw = at
        c, s = np.cos(yaw), np.sin(yaw)
        parts = tuple((kind, (float(x + c * px - s * py), float(y + s * px + c * py), float(z0 + pz)), half,
                       float(yaw + pyaw), m) for kind, (px, py, pz), half, pyaw, m in built.parts)
        self.objects.append(SceneObject(category, _CAT[category], parts, iscrowd, dark, specular))
        if claim_floor:
            self.floor.add_rect(x, y, yaw, *built.half_xy)

    def place_free(self, built: fur.Built, margin: float, tries: int = 30):
        """A random floor pose (x, y, yaw) where `built` fits with `margin`, or None."""
        w, d = self.size[0], self.size[1]
        for _ in range(tries):
            x, y = self.rng.uniform(0.3, w - 0.3), self.rng.uniform(0.3, d - 0.3)
            yaw = float(self.rng.uniform(-np.pi, np.pi))
            if self.floor.fits_rect(x, y, yaw, *built.half_xy, margin):
                return x, y, yaw
        return None

    def place_wall(self, built: fur.Built, tries: int = 20):
        """A pose with the object's back against a random wall, facing into the room, or None."""
        w, d = self.size[0], self.size[1]
        hx, hy = built.half_xy
        for _ in range(tries):
            wall = int(self.rng.integers(4))
            nx, ny = ((0, 1), (0, -1), (1, 0), (-1, 0))[wall]  # inward normal of walls y=0, y=D, x=0, x=W
            length = w if wall < 2 else d
            if length < 2 * hx + 0.2:
                continue
            u, gap = self.rng.uniform(hx + 0.05, length - hx - 0.05), hy + 0.015
            x, y = ((u, gap), (u, d - gap), (gap, u), (w - gap, u))[wall]
            yaw = float(np.arctan2(nx, -ny))  # local front (-y) turned onto the inward normal
            if self.floor.fits_rect(x, y, yaw, hx, hy, 0.05):
                return x, y, yaw
        return None


def make_scene(rng: np.random.Generator, dark_fraction: float, specular_fraction: float) -> Scene:
    """One furnished room drawn from `rng` (module docstring); `*_fraction` of objects get that material."""
    size = (float(rng.uniform(3.0, 8.0)), float(rng.uniform(3.0, 8.0)), float(rng.uniform(2.4, 3.2)))
    lay = _Layout(rng, size, dark_fraction, specular_fraction)
    room = lay.mat_fn(False)
    room_materials = (room(str(rng.choice(["planks", "tiles", "carpet"]))), room("ceiling"), room("wall"))
    _furnish_walls(lay)
    _furnish_table(lay)
    _furnish_clutter(lay)
    _furnish_tops(lay)
    decals = _decorate(lay)
    lx, ly = rng.uniform(0.35, 0.65, 2) * size[:2]
    light = (float(lx), float(ly), size[2] - 0.05)
    return Scene(size, tuple(lay.objects), tuple(lay.materials), room_materials, tuple(decals), light,
                 lay.floor.occ)


def _clutter_count(lay: _Layout, base: int, per_m2: float) -> int:
    # NYUv2 rooms are cluttered: item counts grow with the floor area
    return int(lay.rng.integers(base, base + 1 + int(per_m2 * lay.size[0] * lay.size[1])))


def _furnish_walls(lay: _Layout) -> None:
    for _ in range(_clutter_count(lay, 2, 1 / 12)):
        name = str(lay.rng.choice(["shelf", "cabinet", "couch"]))
        dark, spec = lay.flags()
        if name == "shelf":
            built, books = fur.shelf(lay.rng, lay.mat_fn(dark), lay.mat_fn(False))
        else:
            built, books = getattr(fur, name)(lay.rng, lay.mat_fn(dark)), None
        pose = lay.place_wall(built)
        if pose is None:
            continue
        lay.add(name, built, (*pose[:2], 0.0, pose[2]), dark, spec)
        if books is not None and books.parts:  # books: one crowd annotation, as COCO does for groups
            lay.add("book", books, (*pose[:2], 0.0, pose[2]), iscrowd=True, claim_floor=False)


def _furnish_table(lay: _Layout) -> None:
    if lay.rng.random() > 0.85:
        return
    dark, spec = lay.flags()
    built = fur.table(lay.rng, lay.mat_fn(dark))
    pose = lay.place_free(built, margin=0.6)
    if pose is None:
        return
    x, y, yaw = pose
    lay.add("dining table", built, (x, y, 0.0, yaw), dark, spec)
    hx, hy = built.half_xy
    c, s = np.cos(yaw), np.sin(yaw)
    for side in lay.rng.permutation(4)[: int(lay.rng.integers(0, 5))]:
        dark, spec = lay.flags()
        ch = fur.chair(lay.rng, lay.mat_fn(dark))
        off = (hx, hy)[side // 2] + ch.half_xy[0] + lay.rng.uniform(-0.05, 0.15)
        lx, ly = ((off, 0.0), (-off, 0.0), (0.0, off), (0.0, -off))[side]
        lx, ly = lx + lay.rng.uniform(-0.15, 0.15) * (side >= 2), ly + lay.rng.uniform(-0.1, 0.1) * (side < 2)
        cx, cy = x + c * lx - s * ly, y + s * lx + c * ly
        cyaw = float(np.arctan2(x - cx, -(y - cy)) + lay.rng.normal(0, 0.15))  # front (-y) faces the table
        if lay.floor.fits_rect(cx, cy, cyaw, *ch.half_xy, 0.02):
            lay.add("chair", ch, (cx, cy, 0.0, cyaw), dark, spec)


def _furnish_clutter(lay: _Layout) -> None:
    kinds = ["box", "box", "bin", "sports ball", "potted plant", "chair"]
    for _ in range(_clutter_count(lay, 3, 1 / 5)):
        name = kinds[int(lay.rng.integers(len(kinds)))]
        dark, spec = lay.flags()
        mat = lay.mat_fn(dark)
        built = {"box": lambda: fur.storage_box(lay.rng, mat), "bin": lambda: fur.bin_(lay.rng, mat),
                 "sports ball": lambda: fur.ball(lay.rng, mat),
                 "potted plant": lambda: fur.plant(lay.rng, mat),
                 "chair": lambda: fur.chair(lay.rng, mat)}[name]()
        pose = lay.place_free(built, margin=0.1)
        if pose is not None:
            lay.add(name, built, (*pose[:2], 0.0, pose[2]), dark, spec)


def _furnish_tops(lay: _Layout) -> None:
    """Small things on tables and low cabinets, kept apart from each other on the top."""
    supports = [(o, s) for o, s in zip(list(lay.objects), _tops(lay)) if s is not None]
    for obj, (height, hx, hy, x, y, yaw) in supports:
        taken: list[tuple[float, float, float]] = []
        for _ in range(int(lay.rng.integers(0, 4))):
            name = str(lay.rng.choice(["vase", "bottle", "sports ball", "box", "tv"]))
            name = "vase" if name == "tv" and obj.name != "cabinet" else name  # TVs stand on cabinets
            dark, spec = lay.flags()
            mat = lay.mat_fn(dark)
            built = {"vase": lambda: fur.vase(lay.rng, mat), "bottle": lambda: fur.bottle(lay.rng, mat),
                     "sports ball": lambda: fur.ball(lay.rng, mat, small=True),
                     "box": lambda: fur.storage_box(lay.rng, mat, small=True),
                     "tv": lambda: fur.tv(lay.rng, mat)}[name]()
            # a TV keeps its support's orientation and centre line; other things turn freely
            r = built.half_xy[0] if name == "tv" else float(np.hypot(*built.half_xy))
            ry = built.half_xy[1] if name == "tv" else r
            if hx < r or hy < ry:
                continue
            lx = lay.rng.uniform(-hx + r, hx - r)
            ly = 0.0 if name == "tv" else lay.rng.uniform(-hy + r, hy - r)
            if any(np.hypot(lx - tx, ly - ty) < r + tr + 0.02 for tx, ty, tr in taken):
                continue
            taken.append((lx, ly, r))
            c, s = np.cos(yaw), np.sin(yaw)
            iyaw = yaw if name == "tv" else float(lay.rng.uniform(-np.pi, np.pi))
            lay.add(name, built, (x + c * lx - s * ly, y + s * lx + c * ly, height, iyaw), dark, spec,
                    claim_floor=False)


def _tops(lay: _Layout):
    """(height, half x, half y, x, y, yaw) of each object's usable top surface, or None."""
    out = []
    for obj in lay.objects:
        if obj.name not in ("dining table", "cabinet"):
            out.append(None)
            continue
        kind, center, half, yaw, _ = obj.parts[0]  # table top / cabinet body is the first part
        height = center[2] + half[2]
        low = height < 1.2  # tall cabinets are out of reach
        out.append((height, half[0] - 0.03, half[1] - 0.03, center[0], center[1], yaw) if low else None)
    return out


def _decorate(lay: _Layout) -> list[Decal]:
    """Door, window, pictures and skirting boards painted on the walls."""
    w, d, h = lay.size
    rng, mat = lay.rng, lay.mat_fn(False)
    lengths = {2: d, 3: d, 4: w, 5: w}
    decals = []
    door_face, window_face = (int(f) for f in rng.permutation([2, 3, 4, 5])[:2])
    u = rng.uniform(0.2, lengths[door_face] - 1.1)
    decals.append(Decal(door_face, u, u + 0.9, 0.0, 2.05, mat("wood")))
    ww = rng.uniform(0.8, 1.6)
    u = rng.uniform(0.3, max(0.31, lengths[window_face] - ww - 0.3))
    decals.append(Decal(window_face, u, u + ww, 0.9, min(2.1, h - 0.2), mat("window"), glass=True))
    for _ in range(int(rng.integers(0, 3))):
        f = int(rng.integers(2, 6))
        pw, ph = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.6)
        u, v = rng.uniform(0.2, lengths[f] - pw - 0.2), rng.uniform(1.2, 1.7)
        decals.append(Decal(f, u, u + pw, v, v + ph, mat("picture")))
    skirting = mat(str(rng.choice(["painted", "wood"])))
    decals += [Decal(f, 0.0, lengths[f], 0.0, 0.08, skirting) for f in (2, 3, 4, 5)]
    return decals
