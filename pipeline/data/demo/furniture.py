"""Object builders for the demo rooms: furniture-like composites of boxes, cylinders and spheres.

Each builder returns parts in the object's own frame: origin on the floor (or on the supporting top)
below the footprint centre, z up, local x = width, local y = depth, the object's front facing -y.
Sizes are ordinary metric furniture sizes so that depth statistics resemble NYUv2 rooms.
A part is `(kind, center, half, yaw, material)`; see raycast.py for `half` per kind.
Materials come from a `mat(palette)` callback so the caller can darken IR-absorbing objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.data.demo.raycast import BOX, CYLINDER, SPHERE

LocalPart = tuple[int, tuple[float, float, float], tuple[float, float, float], float, int]
MatFn = Callable[[str], int]


@dataclass(frozen=True)
class Built:
    """One object in local coordinates with its footprint half extents (for the floor occupancy grid)."""

    parts: tuple[LocalPart, ...]
    half_xy: tuple[float, float]


def _box(cx, cy, cz, hx, hy, hz, m) -> LocalPart:
    return (BOX, (cx, cy, cz), (hx, hy, hz), 0.0, m)


def table(rng: np.random.Generator, mat: MatFn) -> Built:
    """Top + 4 legs (dining table, AiT/COCO 'dining table')."""
    hx, hy = rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.5)
    height, th, leg = rng.uniform(0.7, 0.78), 0.035, rng.uniform(0.02, 0.035)
    top_m, leg_m = mat("wood"), mat(rng.choice(["wood", "metal"]))
    parts = [_box(0, 0, height - th / 2, hx, hy, th / 2, top_m)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box(sx * (hx - 0.06), sy * (hy - 0.06), (height - th) / 2, leg, leg,
                              (height - th) / 2, leg_m))
    return Built(tuple(parts), (hx, hy))


def chair(rng: np.random.Generator, mat: MatFn) -> Built:
    """Seat + backrest (at +y, behind the sitter) + 4 legs."""
    hs, seat_z, th = rng.uniform(0.2, 0.25), rng.uniform(0.43, 0.48), 0.03
    back_h, leg = rng.uniform(0.35, 0.5), 0.018
    seat_m, frame_m = mat(rng.choice(["wood", "fabric", "plastic"])), mat(rng.choice(["wood", "metal"]))
    parts = [_box(0, 0, seat_z, hs, hs, th / 2, seat_m),
             _box(0, hs - 0.015, seat_z + th / 2 + back_h / 2, hs, 0.015, back_h / 2, seat_m)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box(sx * (hs - 0.03), sy * (hs - 0.03), (seat_z - th / 2) / 2, leg, leg,
                              (seat_z - th / 2) / 2, frame_m))
    return Built(tuple(parts), (hs, hs))


def cabinet(rng: np.random.Generator, mat: MatFn) -> Built:
    """Closed cabinet body with two door panels and handles on its front; low ones carry things."""
    hx, hy = rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.3)
    height = rng.uniform(0.6, 1.0) if rng.random() < 0.6 else rng.uniform(1.6, 2.0)
    body_m, door_m, knob_m = mat(rng.choice(["painted", "wood"])), mat("painted"), mat("metal")
    parts = [_box(0, 0, height / 2, hx, hy, height / 2, body_m)]
    for sx in (-1, 1):
        door = _box(sx * hx / 2, -hy - 0.008, height / 2, hx / 2 - 0.012, 0.008, height / 2 - 0.03, door_m)
        parts.append(door)
        parts.append(_box(sx * 0.06, -hy - 0.025, height * 0.55, 0.008, 0.01, 0.05, knob_m))
    return Built(tuple(parts), (hx, hy + 0.03))


def shelf(rng: np.random.Generator, mat: MatFn, book_mat: MatFn) -> tuple[Built, Built]:
    """Open bookcase (sides, boards, back) and, separately, the books on its boards (a crowd instance)."""
    hx, hy = rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.2)
    height, t = rng.uniform(1.2, 2.0), 0.018
    wood = mat(rng.choice(["wood", "painted"]))
    parts = [_box(sx * (hx - t / 2), 0, height / 2, t / 2, hy, height / 2, wood) for sx in (-1, 1)]
    parts.append(_box(0, hy - 0.005, height / 2, hx, 0.005, height / 2, wood))  # back panel
    levels = int(rng.integers(3, 6))
    board_z = np.linspace(0.05, height - t / 2, levels + 1)
    parts += [_box(0, 0, z, hx - t, hy, t / 2, wood) for z in board_z]
    books = []
    for z0, z1 in zip(board_z[:-1], board_z[1:]):
        x = -hx + t + rng.uniform(0.0, 0.1)
        while x < hx - t - 0.08 and rng.random() < 0.85:  # blocks of books with gaps between them
            w = min(rng.uniform(0.08, 0.3), hx - t - x)
            bh = min(rng.uniform(0.15, 0.3), z1 - z0 - t - 0.02)
            bd = rng.uniform(0.6, 0.9) * hy
            m = book_mat("books")
            books.append(_box(x + w / 2, hy - 0.01 - bd, z0 + t / 2 + bh / 2, w / 2, bd, bh / 2, m))
            x += w + rng.uniform(0.03, 0.2)
    return Built(tuple(parts), (hx, hy)), Built(tuple(books), (hx, hy))


def couch(rng: np.random.Generator, mat: MatFn) -> Built:
    """Seat block, backrest and two armrests, all upholstered."""
    hx, hy = rng.uniform(0.7, 1.1), rng.uniform(0.4, 0.48)
    seat_h, arm, back_t = rng.uniform(0.4, 0.48), 0.1, 0.12
    fab = mat("fabric")
    parts = [_box(0, -back_t / 2, seat_h / 2, hx - arm, hy - back_t / 2, seat_h / 2, fab),
             _box(0, hy - back_t / 2, 0.4, hx, back_t / 2, 0.4, fab)]
    parts += [_box(sx * (hx - arm / 2), -back_t / 2, 0.3, arm / 2, hy - back_t / 2, 0.3, fab)
              for sx in (-1, 1)]
    return Built(tuple(parts), (hx, hy))


def storage_box(rng: np.random.Generator, mat: MatFn, small: bool = False) -> Built:
    """A closed box (cardboard or plastic); small ones stand on tables."""
    lo, hi = (0.06, 0.15) if small else (0.15, 0.35)
    hx, hy, hz = rng.uniform(lo, hi, 3)
    return Built((_box(0, 0, hz, hx, hy, hz, mat(rng.choice(["cardboard", "plastic"]))),), (hx, hy))


def bin_(rng: np.random.Generator, mat: MatFn) -> Built:
    """A vertical cylinder standing on the floor (bin / floor vase)."""
    r, hh = rng.uniform(0.12, 0.22), rng.uniform(0.18, 0.35)
    return Built(((CYLINDER, (0, 0, hh), (r, r, hh), 0.0, mat(rng.choice(["plastic", "metal", "ceramic"]))),),
                 (r, r))


def vase(rng: np.random.Generator, mat: MatFn) -> Built:
    """Small table-top cylinder."""
    r, hh = rng.uniform(0.04, 0.08), rng.uniform(0.07, 0.15)
    return Built(((CYLINDER, (0, 0, hh), (r, r, hh), 0.0, mat("ceramic")),), (r, r))


def bottle(rng: np.random.Generator, mat: MatFn) -> Built:
    """Body cylinder + neck cylinder."""
    r, hh = rng.uniform(0.03, 0.045), rng.uniform(0.07, 0.11)
    m = mat(rng.choice(["plastic", "ceramic"]))
    return Built(((CYLINDER, (0, 0, hh), (r, r, hh), 0.0, m),
                  (CYLINDER, (0, 0, 2 * hh + 0.03), (r * 0.4, r * 0.4, 0.03), 0.0, m)), (r, r))


def ball(rng: np.random.Generator, mat: MatFn, small: bool = False) -> Built:
    """A sphere resting on its support."""
    r = rng.uniform(0.05, 0.08) if small else rng.uniform(0.1, 0.16)
    return Built(((SPHERE, (0, 0, r), (r, r, r), float(rng.uniform(0, np.pi)), mat("ball")),), (r, r))


def plant(rng: np.random.Generator, mat: MatFn) -> Built:
    """Terracotta pot (cylinder) with a foliage ball (1-2 spheres) on top."""
    r, hh = rng.uniform(0.1, 0.16), rng.uniform(0.1, 0.18)
    leaf = mat("foliage")
    rf = r * rng.uniform(1.4, 2.0)
    parts = [(CYLINDER, (0, 0, hh), (r, r, hh), 0.0, mat("terracotta")),
             (SPHERE, (0, 0, 2 * hh + rf * 0.8), (rf, rf, rf), 0.0, leaf)]
    if rng.random() < 0.5:
        parts.append((SPHERE, (rf * 0.4, 0, 2 * hh + rf * 1.5), (rf * 0.7,) * 3, 1.0, leaf))
    return Built(tuple(parts), (r, r))


def tv(rng: np.random.Generator, mat: MatFn) -> Built:
    """Flat screen on a small stand (stands on a low cabinet or a table)."""
    hx = rng.uniform(0.25, 0.45)
    hz = hx * 0.58  # 16:9 panel
    frame, screen = mat("screen"), mat("screen")
    return Built((_box(0, 0, 0.01, 0.1, 0.07, 0.01, frame),
                  _box(0, 0, 0.06, 0.02, 0.015, 0.05, frame),
                  _box(0, 0, 0.11 + hz, hx, 0.02, hz, screen)), (hx, 0.07))
