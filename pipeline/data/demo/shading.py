"""Procedural textures and simple shading of ray-cast hits into an sRGB image.

Textures are evaluated in each primitive's local frame (raycast.surface_frame), on the two local axes
orthogonal to the dominant local normal axis ("box mapping"), so they stick to their object. Kinds:
plain (slight mottling), checker (floor tiles), stripes (wallpaper, balls, ceramics), noise (fabric,
carpet, cardboard, foliage; fractal value noise), wood (stretched noise rings), planks (wood floor
boards with seams), spines (rows of differently coloured book backs) and window (bright panes in
white frame bars; drawn unlit, as daylight).

Lighting: ambient (brighter on upward-facing surfaces) + Lambert from one ceiling point light with a
soft 1 / (1 + (d / 2.5 m)^2) fall-off and ray-traced cast shadows, + a Blinn-Phong highlight on the
objects flagged specular; a share `flash` of it comes instead from a light at the camera (an on-camera
flash or the sensor's own illuminator), with an inverse-square fall-off. That fall-off is the demo's
strongest monocular depth cue: the demo solver trains from scratch for a few CPU minutes, where the
paper's starts from a pretrained backbone, and 12 rooms alone teach it little (see the README).
Shading multiplies sRGB albedo directly; the result is an indoor-looking picture, not a radiometric
simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.demo.scene import Decal, Material

_AMBIENT = 0.32
_LIGHT_POWER = 1.05
_FALLOFF = 2.5  # metres
_SHININESS = 40.0
_FLASH_REF = 2.0  # metres; a surface facing the camera at this distance gets camera irradiance 1


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic lattice hash -> [0, 1) (integer mixing, identical on every platform)."""
    x = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + seed * 2246822519) & 0xFFFFFFFF
    x = ((x ^ (x >> 13)) * 1274126177) & 0xFFFFFFFF
    return (x ^ (x >> 16)).astype(np.float64) / 4294967296.0


def value_noise(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in [0, 1) at `(u, v)` (lattice period 1 for the first octave)."""
    total, amp, norm = np.zeros_like(u), 1.0, 0.0
    for o in range(octaves):
        f = 2.0 ** o
        x, y = u * f, v * f
        ix, iy = np.floor(x), np.floor(y)
        fx, fy = x - ix, y - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep between lattice values
        s = seed + 7919 * o
        a, b = _hash(ix, iy, s), _hash(ix + 1, iy, s)
        c, d = _hash(ix, iy + 1, s), _hash(ix + 1, iy + 1, s)
        total += amp * ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy)
        norm += amp
        amp *= 0.5
    return total / norm


def _mix(c1, c2, t):
    return np.asarray(c1)[None, :] * (1 - t[:, None]) + np.asarray(c2)[None, :] * t[:, None]


def texture(m: Material, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`(N, 3)` albedo of material `m` at surface coordinates `(u, v)` in metres."""
    s, kind = m.scale, m.texture
    if kind == "checker":
        t = ((np.floor(u / s) + np.floor(v / s)) % 2) * (0.9 + 0.1 * value_noise(u * 8, v * 8, m.seed))
    elif kind == "stripes":
        t = ((u / s) % 1.0 < 0.5).astype(np.float64)
    elif kind == "noise":
        t = value_noise(u / s, v / s, m.seed)
    elif kind == "wood":  # rings: noise stretched along the grain (u), wrapped to [0, 1)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * 5 * value_noise(u / (6 * s), v / s, m.seed, 2))
    elif kind == "planks":  # boards of width s along u, random tone per board, dark seams
        board = np.floor(u / s)
        grain = value_noise(v / (8 * s) + 13.7 * board, u / s, m.seed, 2)
        t = 0.6 * _hash(board, board * 0, m.seed) + 0.4 * grain
        butt = (v + 1.3 * _hash(board, board, m.seed)) / (1.2 + 5 * s)  # staggered board ends
        seam = ((u / s) % 1.0 < 0.04) | (butt % 1.0 < 0.01)
        return _mix(m.color, m.color2, t) * np.where(seam, 0.55, 1.0)[:, None]
    elif kind == "window":  # daylight panes (brighter towards the top) between white frame bars
        fu, fv = u % s, v % (1.5 * s)
        frame = (fu < 0.05) | (fu > s - 0.05) | (fv < 0.05) | (fv > 1.5 * s - 0.05)
        sky = _mix(m.color2, m.color, np.clip(v / (1.5 * s), 0, 1) % 1.0)
        return np.where(frame[:, None], 0.93, sky)
    elif kind == "spines":  # variable-width book backs, each with its own colour
        k = np.floor(u / s + 0.7 * value_noise(u / s, np.zeros_like(u), m.seed, 1))
        hue = np.stack([_hash(k, k * 0 + i, m.seed) for i in range(3)], -1)
        return (0.25 + 0.6 * hue) * (0.75 + 0.25 * np.asarray(m.color)[None, :] / max(m.color))
    else:  # plain: a faint mottling keeps flat paint from looking synthetic
        t = 0.35 * value_noise(u * 3, v * 3, m.seed, 2)
    return _mix(m.color, m.color2, t)


def surface_uv(local: np.ndarray, n_local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box-mapped texture coordinates `(N,)`, `(N,)`: the two local axes orthogonal to the dominant normal.

    Room walls get (along the wall, height), the floor and ceiling (x, y): the decal convention.
    """
    axis = np.abs(n_local).argmax(-1)
    u = np.where(axis == 0, local[:, 1], local[:, 0])
    v = np.where(axis == 2, local[:, 1], local[:, 2])
    return u, v


def decal_index(decals: tuple[Decal, ...], surf: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`(N,)` index of the decal painted at each hit (the last one listed wins), -1 where none."""
    out = np.full(len(surf), -1)
    for i, dec in enumerate(decals):
        out[(surf == dec.face) & (u >= dec.u0) & (u <= dec.u1) & (v >= dec.v0) & (v <= dec.v1)] = i
    return out


def albedo(
    materials: tuple[Material, ...], mat_ids: np.ndarray, u: np.ndarray, v: np.ndarray,
    decals: tuple[Decal, ...], decal: np.ndarray,
) -> np.ndarray:
    """`(N, 3)` albedo for material ids `(N,)` at texture coordinates `(N,)`; decals `(N,)` paint over."""
    out = np.zeros((len(mat_ids), 3))
    for mid in np.unique(mat_ids):
        m = mat_ids == mid
        out[m] = texture(materials[mid], u[m], v[m])
    for i in np.unique(decal[decal >= 0]):
        m, dec = decal == i, decals[i]
        out[m] = texture(materials[dec.material], u[m] - dec.u0, v[m] - dec.v0)
    return out


@dataclass(frozen=True)
class Hits:
    """What the camera rays hit: `(N, 3)` points, unit normals and unit view rays (camera -> point), and
    `(N,)` bool flags: the light is visible, glossy, emissive (shown as albedo)."""

    points: np.ndarray
    normals: np.ndarray
    view: np.ndarray
    lit: np.ndarray
    glossy: np.ndarray
    emissive: np.ndarray


def shade(albedo_rgb: np.ndarray, hits: Hits, light: np.ndarray, eye: np.ndarray, flash: float) -> np.ndarray:
    """`(N, 3)` colour in [0, 1] from albedo and the hits, the light position `(3,)`, the camera position
    `eye` `(3,)` and the share `flash` of the light that comes from the camera."""
    points, normals, view = hits.points, hits.normals, hits.view
    lit, glossy, emissive = hits.lit, hits.glossy, hits.emissive
    to_light = light[None, :] - points
    dist = np.linalg.norm(to_light, axis=-1)
    l_dir = to_light / dist[:, None]
    ndl = np.clip((normals * l_dir).sum(-1), 0, None) * lit
    direct = _LIGHT_POWER * ndl / (1 + (dist / _FALLOFF) ** 2)
    ambient = _AMBIENT * (0.8 + 0.2 * normals[:, 2])  # the bright ceiling and walls bounce light down
    half = l_dir - view
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = 0.6 * np.clip((normals * half).sum(-1), 0, None) ** _SHININESS * lit * glossy
    # a light at the eye is never shadowed; its inverse-square fall-off makes brightness a depth cue
    d_eye = np.linalg.norm(points - eye[None, :], axis=-1)
    at_eye = np.clip(-(normals * view).sum(-1), 0, None) * (_FLASH_REF / d_eye) ** 2
    irradiance = (1 - flash) * (ambient + direct) + flash * at_eye
    rgb = albedo_rgb * irradiance[:, None] ** 0.7 + spec[:, None]
    return np.clip(np.where(emissive[:, None], albedo_rgb, rgb), 0, 1)


def finish(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`(H, W, 3)` float image -> uint8 with optical blur (1-2-1 kernel) and sensor noise (sigma 2/255)."""
    p = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    rgb = 0.25 * p[:-2, 1:-1] + 0.5 * p[1:-1, 1:-1] + 0.25 * p[2:, 1:-1]
    p = np.pad(rgb, ((0, 0), (1, 1), (0, 0)), mode="edge")
    rgb = 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]
    noisy = rgb * 255.0 + rng.normal(0.0, 2.0, rgb.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
