"""Convert the official labeled NYU Depth V2 `.mat` into the BTS "sync" layout (`ait data import-nyu-mat`).

Follows BTS's `utils/extract_official_train_test_set_from_mat.py`, which builds the official 654-image
test set used by AiT (PAPER_NOTES §5.1, §6.1):

* `nyu_depth_v2_labeled.mat` is MATLAB v7.3 (HDF5). MATLAB is column-major, so h5py sees every array
  transposed: `images` (N, 3, W, H) uint8, `depths`/`rawDepths` (N, W, H) float32 metres, and the cell
  arrays `scenes` / `sceneTypes` as (1, N) HDF5 object references to uint16 char arrays.
* `splits.mat` holds `trainNdxs` / `testNdxs`, 1-based indices into the N frames (the official file is
  MATLAB v5 → scipy; a v7.3 copy is read with h5py). Every frame must be in exactly one split.
* Frame i (0-based) is written as `rgb_%05d.jpg` + `sync_depth_%05d.png` (uint16 mm, 0 = invalid),
  the RGB with BTS's black border outside rows 7:H-6 and columns 7:W-8 (7:474, 7:632 at 480x640).
* Semantic labels (when the .mat has `labels` (N, W, H) and `names`, as the official file does):
  `label_%05d.png` next to the frame plus `semseg_classes.json` (`[{"id", "name"}]`) at the root.
  Without a mapping they are the raw NYU label ids (1..894, 0 = unlabelled; uint16 PNG since the ids
  exceed 255) named by the .mat's `names`. With `nyu40_mapping` they are the 40 classes of Gupta et al.
  (NYU-40; 0 stays 0; uint8 PNG), the label set of most NYUv2 segmentation results.
* Lists `train_files_with_gt.txt` / `test_files_with_gt.txt` in BTS's 3-column format (focal 518.8579),
  sorted by path as BTS's `nyudepthv2_test_files_with_gt.txt` is.

Where the NYU-40 mapping comes from: `classMapping40.mat` of Gupta et al., "Perceptual Organization
and Recognition of Indoor Scenes from RGB-D Images" (CVPR 2013), distributed with their code and
mirrored at https://github.com/ankurhanda/nyuv2-meta-data . It does NOT ship with this project (its
licence is unclear). Accepted forms: that file (MATLAB v5, `mapClass`: entry k-1 is the NYU-40 id of
raw id k; `className`: the 40 names), or a CSV of `raw_id,nyu40_id` lines (optional header; the names
are then the standard `NYU40_NAMES`). The mapping must cover every raw id of the .mat's `names`.

Deliberate deviations from BTS:
* Train frames go under `<scene>/` (e.g. `kitchen_0004/`, as the BTS sync training set names its
  folders); test frames under `<sceneType>/` (e.g. `kitchen/`, as BTS's official test set). BTS puts
  both under `<sceneType>/` in separate `train/` and `test/` trees; here both lists share one root.
* Depth is `round(m * 1000)` where BTS truncates (`astype(np.uint16)`): at most 1 mm apart.
* JPEGs are written by Pillow at quality 95 (cv2's default, which BTS uses), not by cv2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from PIL import Image

from pipeline.core.errors import DataError
from pipeline.core.io import write_json

NYU_FOCAL = 518.8579  # px; the constant of the BTS/AiT list files (PAPER_NOTES §6.1)
JPEG_QUALITY = 95  # cv2.imwrite's default, used by BTS's converter
TRAIN_LIST = "train_files_with_gt.txt"
TEST_LIST = "test_files_with_gt.txt"
CLASSES_FILE = "semseg_classes.json"
# The 40 classes of Gupta et al. (CVPR 2013) in NYU-40 id order (id = position + 1), spelled as in
# their classMapping40.mat (including "refridgerator").
NYU40_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
    "bag", "otherstructure", "otherfurniture", "otherprop",
)


# --------------------------------------------------------------------------------------------------
# pure array helpers


def metres_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """float metres `(H, W)` → uint16 mm `round(m * 1000)`; 0, NaN and negatives → 0 (invalid)."""
    mm = np.rint(np.nan_to_num(depth.astype(np.float64), nan=0.0) * 1000.0)
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def black_border(rgb: np.ndarray) -> np.ndarray:
    """`(H, W, 3)` uint8 with everything outside rows 7:H-6, columns 7:W-8 set to 0 (BTS; PAPER_NOTES §5.1)."""
    h, w = rgb.shape[:2]
    out = np.zeros_like(rgb)
    out[7 : h - 6, 7 : w - 8] = rgb[7 : h - 6, 7 : w - 8]
    return out


# --------------------------------------------------------------------------------------------------
# reading the .mat files


def read_splits(splits_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Official split file → (train, test) sorted 0-based int64 frame indices (the file is 1-based)."""
    splits_path = Path(splits_path)
    if not splits_path.is_file():
        raise DataError(f"{splits_path}: splits file not found")
    if h5py.is_hdf5(splits_path):  # MATLAB v7.3
        with _open_h5(splits_path) as f:
            raw = {k: np.asarray(f[k]) for k in ("trainNdxs", "testNdxs") if k in f}
    else:  # MATLAB v5: the official file
        raw = _loadmat_v5(splits_path, ["trainNdxs", "testNdxs"])
    out = []
    for key in ("trainNdxs", "testNdxs"):
        if key not in raw:
            raise DataError(f"{splits_path}: missing key '{key}'")
        ndx = np.asarray(raw[key]).ravel()
        if ndx.size == 0 or not np.all(ndx == np.round(ndx)) or ndx.min() < 1:
            raise DataError(f"{splits_path}: '{key}' must hold positive 1-based integer indices")
        ndx = np.sort(ndx.astype(np.int64) - 1)
        if np.any(np.diff(ndx) == 0):
            raise DataError(f"{splits_path}: '{key}' has duplicate indices")
        out.append(ndx)
    if np.intersect1d(out[0], out[1]).size:
        raise DataError(f"{splits_path}: trainNdxs and testNdxs overlap")
    return out[0], out[1]


def _loadmat_v5(path: Path, names: list[str]) -> dict[str, Any]:
    """The variables `names` (those present) of a MATLAB v5 file; an unreadable file raises DataError."""
    import scipy.io

    try:
        return scipy.io.loadmat(path, variable_names=names)
    except Exception as e:  # scipy fails on junk with IndexError, ValueError, MatReadError, ... alike
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read MATLAB file ({reason})") from None


def _open_h5(path: Path) -> h5py.File:
    """Open an HDF5 (MATLAB v7.3) file read-only; a corrupt file raises `DataError`."""
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open HDF5 file ({str(e).splitlines()[0]})") from None


def _dataset(f: h5py.File, key: str, mat_path: Path) -> h5py.Dataset:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise DataError(f"{mat_path}: missing dataset '{key}'")
    return f[key]


def _read_cellstr(f: h5py.File, key: str, mat_path: Path) -> list[str]:
    """A MATLAB cell array of char rows: object references, each to a uint16 code-point array."""
    refs = _dataset(f, key, mat_path)
    if h5py.check_ref_dtype(refs.dtype) is None:
        raise DataError(f"{mat_path}: '{key}' is not a cell array of object references")
    names = []
    for ref in np.asarray(refs).ravel():  # (1, N) in HDF5 = MATLAB's (N, 1) cell
        chars = np.asarray(f[ref]).ravel()
        names.append("".join(chr(int(c)) for c in chars))
    return names


def _check_shapes(f: h5py.File, field: str, mat_path: Path) -> tuple[int, int, int]:
    """(N, H, W) after checking `images` (N,3,W,H) against `field` (N,W,H); mismatch → `DataError`."""
    images, depth = _dataset(f, "images", mat_path), _dataset(f, field, mat_path)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{mat_path}: 'images' has shape {images.shape} {images.dtype}, expected (N, 3, W, H) uint8"
        )
    n, _, w, h = images.shape
    if depth.shape != (n, w, h):
        raise DataError(
            f"{mat_path}: '{field}' has shape {depth.shape}, expected {(n, w, h)} to match 'images'"
        )
    return n, h, w


# --------------------------------------------------------------------------------------------------
# semantic labels


@dataclass(frozen=True)
class LabelMap:
    """Raw NYU label id -> written label id, and the names of the written ids (id k is names[k - 1])."""

    lut: np.ndarray  # (K + 1,) written id per raw id 0..K; lut[0] = 0 (unlabelled stays unlabelled)
    names: tuple[str, ...]
    dtype: type  # of the label PNG: uint16 for raw ids (up to 894), uint8 for NYU-40

    def classes(self) -> list[dict]:
        return [{"id": k, "name": name} for k, name in enumerate(self.names, start=1)]

    def apply(self, raw: np.ndarray, where: str) -> np.ndarray:
        """Map a raw `(H, W)` label array; an id outside 0..K raises DataError naming `where`."""
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if lo < 0 or hi >= len(self.lut):
            bad = lo if lo < 0 else hi
            raise DataError(f"{where}: label id {bad} is not 0 or one of the {len(self.lut) - 1} 'names'")
        return self.lut[raw].astype(self.dtype)


def raw_label_map(names: list[str]) -> LabelMap:
    """Keep the raw NYU ids (1..len(names)), named by the .mat's `names`."""
    return LabelMap(np.arange(len(names) + 1), tuple(names), np.uint16)


def read_nyu40_mapping(path: Path, num_raw: int) -> LabelMap:
    """The NYU-40 `LabelMap` of a classMapping40.mat or `raw_id,nyu40_id` CSV (module docstring); it must
    map every raw id 1..`num_raw`. Any defect raises a one-line DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NYU-40 mapping file not found")
    with open(path, "rb") as fh:
        is_mat = fh.read(6) == b"MATLAB"  # the text header of every MAT-file; a CSV never starts so
    table, names = _mapping_from_mat(path) if is_mat else _mapping_from_csv(path)
    if len(names) != len(NYU40_NAMES) or not all(names):
        raise DataError(f"{path}: expected {len(NYU40_NAMES)} non-empty NYU-40 class names, got {len(names)}")
    if table.max(initial=0) > len(NYU40_NAMES):
        raise DataError(f"{path}: NYU-40 ids must be in 0..{len(NYU40_NAMES)}, got {int(table.max())}")
    covered = np.full(num_raw, -1, np.int64)
    covered[: min(num_raw, len(table))] = table[:num_raw]
    if (covered < 0).any():
        missing = int(np.flatnonzero(covered < 0)[0]) + 1
        raise DataError(f"{path}: no NYU-40 id for raw label id {missing} (the .mat names {num_raw} labels)")
    return LabelMap(np.concatenate([[0], covered]).astype(np.uint8), tuple(names), np.uint8)


def _mapping_from_mat(path: Path) -> tuple[np.ndarray, list[str]]:
    """(NYU-40 id per raw id - 1, class names) of a classMapping40.mat (MATLAB v5)."""
    raw = _loadmat_v5(path, ["mapClass", "className"])
    if "mapClass" not in raw:
        raise DataError(f"{path}: missing variable 'mapClass'")
    table = np.asarray(raw["mapClass"]).ravel()
    if (table.dtype.kind not in "iuf" or not np.isfinite(table).all() or (table != np.round(table)).any()
            or (table < 0).any()):
        raise DataError(f"{path}: 'mapClass' must hold non-negative integer NYU-40 ids")
    if "className" not in raw:
        return table.astype(np.int64), list(NYU40_NAMES)
    cells = np.asarray(raw["className"]).ravel()  # a cell of char arrays: one string per class
    names = ["".join(str(c) for c in np.asarray(cell).ravel()) for cell in cells]
    return table.astype(np.int64), names


def _mapping_from_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    """(NYU-40 id per raw id - 1, -1 where unlisted; the standard names) of a `raw_id,nyu40_id` CSV."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the mapping as CSV text ({type(e).__name__})") from None
    pairs: dict[int, int] = {}
    for lineno, line in enumerate(lines, start=1):
        cols = [c.strip() for c in line.split(",")]
        if not line.strip() or (lineno == 1 and not _is_count(cols[0])):
            continue  # blank lines and an optional header
        if len(cols) != 2 or not all(map(_is_count, cols)):
            raise DataError(f"{path}:{lineno}: expected 'raw_id,nyu40_id' (two non-negative integers), "
                            f"got {line.strip()[:80]!r}")
        raw_id, nyu40_id = int(cols[0]), int(cols[1])
        if raw_id == 0 or raw_id in pairs:
            raise DataError(f"{path}:{lineno}: raw id {raw_id} is 0 or listed twice")
        pairs[raw_id] = nyu40_id
    if not pairs:
        raise DataError(f"{path}: no 'raw_id,nyu40_id' rows")
    table = np.full(max(pairs), -1, np.int64)
    table[np.array(list(pairs)) - 1] = list(pairs.values())
    return table, list(NYU40_NAMES)


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _label_map(f: h5py.File, mat_path: Path, shape: tuple[int, int, int],
               mapping: Path | None) -> LabelMap | None:
    """How the .mat's `labels` are written (raw ids, or NYU-40 through `mapping`); None if it has none."""
    if "labels" not in f:
        if mapping is not None:
            raise DataError(f"{mat_path}: no 'labels' dataset for the NYU-40 mapping {mapping} to map")
        return None
    labels = _dataset(f, "labels", mat_path)
    if labels.shape != shape or labels.dtype.kind not in "iu":
        raise DataError(f"{mat_path}: 'labels' has shape {labels.shape} {labels.dtype}, expected {shape} "
                        f"integers to match 'images'")
    names = _read_cellstr(f, "names", mat_path)
    return raw_label_map(names) if mapping is None else read_nyu40_mapping(mapping, len(names))


# --------------------------------------------------------------------------------------------------
# conversion


def _split_of(train: np.ndarray, test: np.ndarray, n: int, splits_path: Path) -> np.ndarray:
    """Per-frame bool array, True = train; every frame must be in exactly one split (as BTS asserts)."""
    top = max(int(train.max()), int(test.max())) + 1
    if top > n:
        raise DataError(f"{splits_path}: index {top} exceeds the {n} frames of the .mat")
    is_train = np.zeros(n, dtype=bool)
    is_train[train] = True
    covered = is_train.copy()
    covered[test] = True
    if not covered.all():
        missing = int(np.flatnonzero(~covered)[0]) + 1
        raise DataError(f"{splits_path}: frame {missing} (1-based) is in neither trainNdxs nor testNdxs")
    return is_train


def _write_frame(folder: Path, i: int, rgb: np.ndarray, depth_m: np.ndarray) -> tuple[str, str]:
    """Write frame i as `rgb_%05d.jpg` + `sync_depth_%05d.png` in `folder`; returns the two file names."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb_name, depth_name = f"rgb_{i:05d}.jpg", f"sync_depth_{i:05d}.png"
    Image.fromarray(black_border(rgb)).save(folder / rgb_name, quality=JPEG_QUALITY)
    Image.fromarray(metres_to_millimetres(depth_m)).save(folder / depth_name)
    return rgb_name, depth_name


def _write_list(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in sorted(lines)))


def _check_folder_names(mat_path: Path, key: str, names: list[str], n: int) -> None:
    if len(names) != n:
        raise DataError(f"{mat_path}: '{key}' has {len(names)} entries, expected {n}")
    bad = [s for s in names if s in ("", ".", "..") or "/" in s or "\\" in s]
    if bad:  # names become folders under out_dir: never let one escape it
        raise DataError(f"{mat_path}: '{key}' holds an unusable folder name {bad[0]!r}")


def import_labeled_mat(
    mat_path: Path,
    splits_path: Path,
    out_dir: Path,
    field: Literal["depths", "rawDepths"] = "rawDepths",
    progress: Callable[[int, int], None] | None = None,
    nyu40_mapping: Path | None = None,
) -> dict[str, Any]:
    """Write the labeled .mat as BTS sync layout + lists under `out_dir`; returns a summary dict.

    `field` picks the depth: "rawDepths" (Kinect, holes = 0; the official test GT, PAPER_NOTES §5.1) or
    "depths" (in-painted). Labels are written as raw NYU ids, or as NYU-40 ids through the
    `nyu40_mapping` file (module docstring). `progress(done, total)` is called after each frame.
    """
    mat_path, splits_path, out_dir = Path(mat_path), Path(splits_path), Path(out_dir)
    if field not in ("depths", "rawDepths"):
        raise DataError(f"{mat_path}: field must be 'depths' or 'rawDepths', got {field!r}")
    if not mat_path.is_file():
        raise DataError(f"{mat_path}: labeled .mat file not found")
    train, test = read_splits(splits_path)
    if not h5py.is_hdf5(mat_path):
        raise DataError(f"{mat_path}: not a MATLAB v7.3 (HDF5) file")
    lines: dict[str, list[str]] = {"train": [], "test": []}
    with _open_h5(mat_path) as f:
        n, h, w = _check_shapes(f, field, mat_path)
        scenes, scene_types = _read_cellstr(f, "scenes", mat_path), _read_cellstr(f, "sceneTypes", mat_path)
        _check_folder_names(mat_path, "scenes", scenes, n)
        _check_folder_names(mat_path, "sceneTypes", scene_types, n)
        label_map = _label_map(f, mat_path, (n, w, h), nyu40_mapping)
        is_train = _split_of(train, test, n, splits_path)
        images, depths = f["images"], f[field]
        for i in range(n):  # one frame at a time: the real file is 2.8 GB
            split = "train" if is_train[i] else "test"
            folder = scenes[i] if is_train[i] else scene_types[i]
            rgb = np.asarray(images[i]).transpose(2, 1, 0)  # (3, W, H) → (H, W, 3)
            depth_m = np.asarray(depths[i]).T  # (W, H) → (H, W)
            rgb_name, depth_name = _write_frame(out_dir / folder, i, rgb, depth_m)
            if label_map is not None:
                raw = np.asarray(f["labels"][i]).T  # (W, H) → (H, W), like the depths
                label = label_map.apply(raw, f"{mat_path}: frame {i + 1} (1-based)")
                Image.fromarray(label).save(out_dir / folder / f"label_{i:05d}.png")
            lines[split].append(f"{folder}/{rgb_name} {folder}/{depth_name} {NYU_FOCAL}")
            if progress is not None:
                progress(i + 1, n)
    _write_list(out_dir / TRAIN_LIST, lines["train"])
    _write_list(out_dir / TEST_LIST, lines["test"])
    if label_map is not None:
        write_json(out_dir / CLASSES_FILE, label_map.classes())
    return {
        "frames": n,
        "height": h,
        "width": w,
        "field": field,
        "train": len(lines["train"]),
        "test": len(lines["test"]),
        "train_list": str(out_dir / TRAIN_LIST),
        "test_list": str(out_dir / TEST_LIST),
        "labels": None if label_map is None else "nyu40" if nyu40_mapping else "raw",
        "classes": 0 if label_map is None else len(label_map.names),
    }
