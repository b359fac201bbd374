"""On-disk formats of the demo dataset, byte-deterministic: NYUv2 sync files, BTS lists, COCO json.

* RGB: baseline JPEG, 4:2:0 chroma subsampling (as NYUv2's `rgb_*.jpg`), fixed quality, no EXIF;
* depth: 16-bit greyscale PNG in millimetres, 0 = invalid (NYUv2 sync / BTS convention, PAPER_NOTES §6.1),
  fixed zlib level, no text chunks;
* semantic labels: 8-bit greyscale PNG of class ids, 0 = unlabelled, written like the depth PNGs;
* json: sorted keys, compact separators, trailing newline; lists: one line per pair, '\n' endings.
Nothing written depends on the clock, the user or the file system order.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def reset_dir(path: Path) -> None:
    """Make `path` an existing, empty directory (its previous contents are deleted)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def save_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """`(H, W, 3)` uint8 RGB -> baseline JPEG at `quality`."""
    Image.fromarray(rgb, "RGB").save(path, format="JPEG", quality=quality, subsampling=2, optimize=False,
                                     progressive=False)


def save_depth_png(path: Path, depth_mm: np.ndarray) -> None:
    """`(H, W)` uint16 millimetres -> 16-bit greyscale PNG."""
    if depth_mm.dtype != np.uint16:
        raise TypeError(f"depth must be uint16 millimetres, got {depth_mm.dtype}")
    _save_png(path, depth_mm)


def save_label_png(path: Path, labels: np.ndarray) -> None:
    """`(H, W)` uint8 class ids -> 8-bit greyscale PNG."""
    if labels.dtype != np.uint8:
        raise TypeError(f"labels must be uint8 class ids, got {labels.dtype}")
    _save_png(path, labels)


def _save_png(path: Path, image: np.ndarray) -> None:
    # One fixed encoder setting for every PNG: same array -> same bytes.
    Image.fromarray(image).save(path, format="PNG", compress_level=6, optimize=False)


def save_json(path: Path, obj: Any) -> None:
    """Deterministic json: sorted keys, compact separators, ASCII, trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n",
                    encoding="ascii")


def save_bts_list(path: Path, rows: Sequence[tuple[str, str, float]]) -> None:
    """BTS filename list: `rgb depth focal` per line, focal in pixels with 4 decimals."""
    path.write_text("".join(f"{rgb} {depth} {focal:.4f}\n" for rgb, depth, focal in rows), encoding="ascii")
