"""NYU Depth V2 on disk: filename lists (BTS/AiT and DenseDepth formats) and image/depth decoding.

Follows PAPER_NOTES §6.1 (GLPDepth/BTS layout: `<scene>/rgb_XXXXX.jpg` + `<scene>/sync_depth_XXXXX.png`,
uint16 millimetres, 0 = invalid) and §5.1 (GT = PNG / 1000 m). Two list formats are read:

* BTS/AiT lists, whitespace-separated `rgb depth [focal]`; AiT's own copies have two columns and a
  leading slash, BTS's have a third (focal) column. Paths are relative to the dataset root.
* DenseDepth `nyu_data.zip` csv files, `rgb,depth` per line (see `read_densedepth_csv` for how the
  relative paths are resolved).

Depth PNG encodings (`read_depth_metres` dispatches on dtype):
* uint16, millimetres (value / 1000 m): BTS sync train, BTS official test, DenseDepth *test* pairs,
  and everything written by `pipeline.data.nyu_mat`.
* uint8, 0..255 ↔ 0..10 m (value / 255 * 10): DenseDepth *train* pairs in the original nyu_data.zip.

Semantic label PNGs (`label_XXXXX.png` next to the depth, written by the demo and by
`pipeline.data.nyu_mat`) are single-channel uint8 or uint16 class ids, 0 = unlabelled.

Every bad-input condition raises `DataError` with a one-line message naming the file (and line).
Entries are not checked for existence here: a missing image surfaces when it is read, so that the
caller can count bad samples (`data.max_bad_fraction`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from pipeline.core.errors import DataError

# DenseDepth train depths are 8-bit PNGs where 255 means 10 m (DenseDepth `data.py`: `/255*maxDepth`).
DENSEDEPTH_UINT8_MAX_METRES = 10.0
# The one valid depth range, in metres (open at both ends, as the NYU evaluation protocol scores it,
# PAPER_NOTES §5.1). `depth_to_metres` turns every pixel outside it into 0 (= invalid), so preparation,
# tokenizer training, caches, the solver's targets and evaluation all read the same pixels as targets:
# a sensor's cap (≥ 10 m) or a 65535 marker is a hole everywhere, never trained on and then not scored.
MIN_DEPTH = 1e-3
MAX_DEPTH = 10.0


@dataclass(frozen=True)
class DepthEntry:
    """One RGB/depth pair; `focal` in pixels when the list gives it (BTS 3rd column), else None."""

    rgb: Path
    depth: Path
    focal: float | None


# --------------------------------------------------------------------------------------------------
# list files


def _read_lines(list_file: Path) -> list[str]:
    """All lines of a text list file; missing/unreadable/non-text files raise `DataError`."""
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found")
    try:
        # utf-8-sig: a list saved by an editor that writes a byte-order mark reads like any other
        return list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{list_file}: cannot read list file ({type(e).__name__})") from None


def _relative(path: str) -> str:
    # AiT's lists write `/kitchen_0028b/rgb_00045.jpg`: the leading slash means "root", not "/".
    return path.lstrip("/")


def read_bts_list(list_file: Path, root: Path) -> list[DepthEntry]:
    """Parse a BTS/AiT list (`rgb depth [focal]` per line, paths relative to `root`) in file order."""
    entries = []
    for lineno, line in enumerate(_read_lines(list_file), start=1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) not in (2, 3):
            raise DataError(
                f"{list_file}:{lineno}: expected 2 or 3 columns (rgb depth [focal]), got {len(cols)}"
            )
        focal = None
        if len(cols) == 3:
            try:
                focal = float(cols[2])
            except ValueError:
                focal = math.nan
            if not math.isfinite(focal) or focal <= 0:
                raise DataError(f"{list_file}:{lineno}: focal {cols[2]!r} is not a positive number of pixels")
        entries.append(DepthEntry(root / _relative(cols[0]), root / _relative(cols[1]), focal))
    return entries


def _resolve_densedepth(rel: str, candidates: tuple[Path, ...]) -> Path:
    # First existing candidate wins; if none exists, keep the root-joined path so that the miss is
    # reported (and counted as a bad sample) when the file is read.
    for base in candidates:
        if (base / rel).exists():
            return base / rel
    return candidates[0] / rel


def read_densedepth_csv(csv_file: Path, root: Path) -> list[DepthEntry]:
    """Parse a DenseDepth csv (`rgb,depth` per line) into entries with `focal=None`, in file order.

    Each relative path is resolved against, in order: (1) `root` (the original zip's csv lists
    `data/nyu2_test/00000_colors.png`, relative to the zip root); (2) the csv's own directory;
    (3) `<csv dir>/<csv stem>/` (a csv listing bare names of files kept in a sibling folder of the
    same name, as the shared sample's `densedepth/nyu2_test.csv`). The first existing file wins.
    """
    candidates = (root, csv_file.parent, csv_file.parent / csv_file.stem)
    entries = []
    for lineno, line in enumerate(_read_lines(csv_file), start=1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != 2 or not all(cols):
            raise DataError(f"{csv_file}:{lineno}: expected 2 comma-separated columns (rgb,depth)")
        rgb, depth = (_resolve_densedepth(_relative(c), candidates) for c in cols)
        entries.append(DepthEntry(rgb, depth, None))
    return entries


def list_depth_samples(
    root: Path, list_file: str, layout: Literal["sync", "densedepth"], split_dir: str = "."
) -> list[DepthEntry]:
    """The entries of `root/list_file`: a BTS list for layout "sync", a DenseDepth csv for "densedepth".
    Their paths are relative to `root/split_dir`: BTS and AiT keep the training frames under `sync/` and
    the official test frames under `official_splits/test/`, each list relative to its own folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    base = root / split_dir
    if not base.is_dir():
        raise DataError(f"{base}: split folder not found (the list's paths are relative to it)")
    if layout == "sync":
        return read_bts_list(root / list_file, base)
    if layout == "densedepth":
        return read_densedepth_csv(root / list_file, base)
    raise DataError(f"{root}: unknown NYUv2 layout {layout!r} (expected 'sync' or 'densedepth')")


# --------------------------------------------------------------------------------------------------
# decoding


def _open_decoded(path: Path) -> Image.Image:
    """A fully decoded PIL image; missing, truncated or non-image files raise `DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: Image.open only parses the header, truncation shows up here
            return im.copy()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot decode image ({reason})") from None


def read_rgb(path: Path) -> np.ndarray:
    """An image file (JPEG/PNG/PPM/...) as `(H, W, 3)` uint8 RGB."""
    im = _open_decoded(Path(path))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_depth_png(path: Path) -> np.ndarray:
    """The raw stored single-channel depth array `(H, W)`: uint16 (mm) or uint8 (DenseDepth train)."""
    return _read_single_channel(Path(path), "depth")


def read_label_png(path: Path) -> np.ndarray:
    """A semantic label PNG as its stored `(H, W)` uint8 or uint16 class ids (0 = unlabelled)."""
    return _read_single_channel(Path(path), "label")


def _read_single_channel(path: Path, what: str) -> np.ndarray:
    im = _open_decoded(path)
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16)
    if im.mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if im.mode == "I":
        # Some decoders hand 16-bit greyscale back as int32 "I"; accept it when it fits uint16.
        raw = np.asarray(im)
        if raw.size and (raw.min() < 0 or raw.max() > np.iinfo(np.uint16).max):
            raise DataError(f"{path}: {what} values outside the uint16 range")
        return raw.astype(np.uint16)
    if im.mode == "P":
        raise DataError(f"{path}: a palette (mode P) PNG, whose pixels are colour-table indices; if the "
                        f"indices are the {what} values, save them as a greyscale PNG "
                        f"(Image.fromarray(numpy.asarray(image)).save(...))")
    raise DataError(f"{path}: expected a single-channel 8/16-bit {what} image, got PIL mode {im.mode}")


def depth_to_metres(raw: np.ndarray, scale: float = 1000.0) -> np.ndarray:
    """Stored depth `(H, W)` → float32 metres (`raw / scale`); 0 stays 0 (= invalid, PAPER_NOTES §6.1), and
    so does every value outside (MIN_DEPTH, MAX_DEPTH)."""
    metres = (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)
    return np.where((metres > MIN_DEPTH) & (metres < MAX_DEPTH), metres, np.float32(0.0))


def read_depth_metres(path: Path, scale: float = 1000.0) -> np.ndarray:
    """A depth PNG as `(H, W)` float32 metres: uint16 → value / `scale`; uint8 → value / 255 * 10.

    uint16 is the BTS/AiT and DenseDepth-test encoding (mm); uint8 is the DenseDepth-train encoding of
    nyu_data.zip, where `scale` does not apply.
    """
    return stored_depth_to_metres(read_depth_png(path), scale)


def stored_depth_to_metres(raw: np.ndarray, scale: float = 1000.0) -> np.ndarray:
    """A stored depth array -> float32 metres; its dtype picks the encoding (see `read_depth_metres`)."""
    if raw.dtype == np.uint8:
        return depth_to_metres(raw, 255.0 / DENSEDEPTH_UINT8_MAX_METRES)
    return depth_to_metres(raw.astype(np.uint16, copy=False), scale)


def depth_png_metres(data: bytes) -> np.ndarray:
    """Stored depth PNG bytes -> (H, W) float32 metres (0 = invalid), as `stored_depth_to_metres`."""
    return stored_depth_to_metres(np.asarray(Image.open(io.BytesIO(data))))
