"""Pictures a person can check: colour-mapped values and classes, instance overlays, panels (PNG).

PIL + numpy only (no matplotlib). Used by `ait inspect sample` (image | GT | hard-decoded tokens) and
meant for the evaluation stage's image | GT | prediction | error panels:
- `colorize` maps any scalar map to RGB with a fixed colour ramp over a caller-given [vmin, vmax], so
  several panels can share one scale (`shared_range`); invalid pixels (`valid` False, e.g. a depth hole,
  or NaN) are drawn black;
- `colorize_labels` paints a class-id map with the PASCAL VOC bit-interleaved palette (0 = black,
  distinct colours for every id, the same colour for an id in every panel and every run);
- `overlay_instances` blends one colour per instance over an image and writes its class name at the
  top-left of its box;
- `panel` puts images of any sizes in one row under title bars, `GAP` pixels apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GAP = 4  # pixels between panels
TITLE_HEIGHT = 14  # pixels of the title bar above each panel
BACKGROUND = (255, 255, 255)

# A perceptually ordered ramp (dark blue -> cyan -> green -> yellow -> red), "turbo"-like anchors.
_RAMP = np.array([[48, 18, 59], [70, 107, 227], [40, 187, 236], [49, 242, 153], [162, 252, 60],
                  [237, 208, 58], [251, 128, 34], [208, 47, 5], [122, 4, 3]], dtype=np.float64)
# Distinct instance colours (Tableau-10), cycled.
_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
                    dtype=np.uint8)


def shared_range(*maps: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) over the valid (finite, > 0) pixels of all `maps`; (0, 1) if none is valid."""
    valid = [m[np.isfinite(m) & (m > 0)] for m in maps]
    values = np.concatenate([v.ravel() for v in valid]) if valid else np.zeros(0)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return lo, hi if hi > lo else lo + 1.0


def colorize(values: np.ndarray, vmin: float, vmax: float, valid: np.ndarray | None = None) -> np.ndarray:
    """`(H, W)` scalars -> `(H, W, 3)` uint8 on the colour ramp over [vmin, vmax]; ~valid is black."""
    t = np.clip((np.nan_to_num(values.astype(np.float64)) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    pos = t * (len(_RAMP) - 1)
    i = np.minimum(pos.astype(int), len(_RAMP) - 2)
    frac = (pos - i)[..., None]
    rgb = _RAMP[i] * (1.0 - frac) + _RAMP[i + 1] * frac
    if valid is not None:
        rgb[~valid] = 0.0
    return np.round(rgb).astype(np.uint8)


def instance_colors(n: int) -> np.ndarray:
    """`(n, 3)` uint8 colours, one per instance (a fixed palette, cycled)."""
    return _PALETTE[np.arange(n) % len(_PALETTE)]


def label_palette(num_classes: int) -> np.ndarray:
    """`(N+1, 3)` uint8 colours for class ids 0..N: the PASCAL VOC palette, id 0 black.

    The bits of the id are dealt round-robin to R, G, B from the most significant colour bit down, so
    ids 1..7 are the half-intensity corners of the RGB cube (1 = (128, 0, 0), 2 = (0, 128, 0), ...)
    and every id below 2^24 gets a distinct colour.
    """
    ids = np.arange(num_classes + 1)
    rgb = np.zeros((num_classes + 1, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return rgb.astype(np.uint8)


def colorize_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`(H, W)` class ids 0..N -> `(H, W, 3)` uint8 with `label_palette` (0 = unlabelled = black)."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"class ids must be in 0..{num_classes}, got {labels.min()}..{labels.max()}")
    return label_palette(num_classes)[labels]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def overlay_instances(image: np.ndarray, masks: np.ndarray, labels: list[str],
                      boxes: list[tuple[float, float, float, float]] | None = None,
                      alpha: float = 0.5) -> np.ndarray:
    """`(H, W, 3)` uint8 image + `(N, H, W)` masks -> blended overlay with labels at box corners.

    `boxes` are COCO xywh; without them each label sits at the top-left of its mask's extent.
    """
    out = image.astype(np.float64).copy()
    colors = instance_colors(len(masks))
    for mask, color in zip(masks, colors):
        m = mask.astype(bool)
        out[m] = (1.0 - alpha) * out[m] + alpha * color
    im = Image.fromarray(np.round(out).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for k, (mask, label) in enumerate(zip(masks, labels)):
        if boxes is not None:
            x, y = boxes[k][0], boxes[k][1]
        else:
            ys, xs = np.nonzero(mask)
            if not len(xs):
                continue
            x, y = xs.min(), ys.min()
        # A dark outline keeps the label readable over its own instance colour.
        draw.text((int(x) + 1, int(y)), label, fill=tuple(int(c) for c in colors[k]), font=_font(),
                  stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image[..., :3]


def panel(images: list[np.ndarray], titles: list[str]) -> np.ndarray:
    """Images (`(H, W)` or `(H, W, 3)`, uint8 or in [0, 255]) in one row under titles -> `(H', W', 3)`.

    W' = sum of widths + GAP·(n − 1); H' = TITLE_HEIGHT + the tallest image (shorter ones top-aligned).
    """
    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    tiles = [_rgb(im) for im in images]
    width = sum(t.shape[1] for t in tiles) + GAP * (len(tiles) - 1)
    height = TITLE_HEIGHT + max(t.shape[0] for t in tiles)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, title in zip(tiles, titles):
        canvas.paste(Image.fromarray(tile), (x, TITLE_HEIGHT))
        draw.text((x + 1, 1), title, fill=(0, 0, 0), font=_font())
        x += tile.shape[1] + GAP
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an `(H, W, 3)` uint8 image as PNG (creating the parent directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(image)).save(path, format="PNG")
