"""Labeled-.mat → BTS sync layout converter (pipeline/data/nyu_mat.py) on a hand-written tiny .mat."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from pipeline.core.errors import DataError
from pipeline.data.nyu import list_depth_samples, read_depth_png, read_label_png, read_rgb
from pipeline.data.nyu_mat import (
    NYU40_NAMES,
    black_border,
    import_labeled_mat,
    metres_to_millimetres,
    read_splits,
)
from stages.data import app as data_app

N, H, W = 3, 48, 64
SCENES = ["kitchen_0004", "office_0012", "kitchen_0004"]
SCENE_TYPES = ["kitchen", "office", "kitchen"]
TRAIN_1B, TEST_1B = [1, 3], [2]  # MATLAB 1-based, as in splits.mat
NAMES = ["wall", "floor", "chair", "table", "books", "lamp"]  # raw NYU ids 1..6 (the real file has 894)
TO_NYU40 = [1, 2, 5, 7, 23, 35]  # their NYU-40 ids: wall, floor, chair, table, books, lamp
# The 128-byte text header MATLAB writes into the HDF5 user block of a v7.3 file.
MATLAB_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, "
    + b"Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(76)
    + b"\x00" * 8
    + b"\x00\x02IM"
)


def _frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,H,W,3) uint8 smooth RGB (JPEG-friendly), (N,H,W) in-painted and raw (holes = 0) metres."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ramps = [(40 + 2 * xx + 10 * i, 30 + 3 * yy, np.full_like(xx, 60 + 50 * i)) for i in range(N)]
    rgb = np.stack([np.stack(r, axis=-1) for r in ramps]).astype(np.uint8)
    depths = rng.uniform(0.7, 9.5, size=(N, H, W)).astype(np.float32)
    raw = depths.copy()
    raw[rng.uniform(size=raw.shape) < 0.3] = 0.0  # Kinect holes
    return rgb, depths, raw


def _write_cellstr(f: h5py.File, key: str, names: list[str]) -> None:
    # MATLAB v7.3 cell array of strings: (1, N) object references into '#refs#', each a (len, 1) uint16.
    refs = f.require_group("#refs#")
    ds = f.create_dataset(key, shape=(1, len(names)), dtype=h5py.ref_dtype)
    for i, name in enumerate(names):
        item = refs.create_dataset(f"{key}_{i}", data=np.array([[ord(c)] for c in name], dtype=np.uint16))
        item.attrs["MATLAB_class"] = np.bytes_("char")
        ds[0, i] = item.ref
    ds.attrs["MATLAB_class"] = np.bytes_("cell")


def _labels(seed: int = 0) -> np.ndarray:
    """(N, H, W) uint16 raw NYU label ids 0..len(NAMES) (0 = unlabelled), no two frames alike."""
    return np.random.default_rng(seed).integers(0, len(NAMES) + 1, size=(N, H, W)).astype(np.uint16)


def _write_mat(path: Path, rgb: np.ndarray, depths: np.ndarray, raw: np.ndarray, drop: str = "",
               raw_width: int = W, scenes: list[str] = SCENES, labels: np.ndarray | None = None) -> Path:
    """A tiny `nyu_depth_v2_labeled.mat` with the real file's layout (column-major, transposed)."""
    labels = _labels() if labels is None else labels
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=rgb.transpose(0, 3, 2, 1))  # (N,H,W,3) → (N,3,W,H)
        f.create_dataset("depths", data=depths.transpose(0, 2, 1))  # (N,H,W) → (N,W,H)
        f.create_dataset("rawDepths", data=raw[:, :, :raw_width].transpose(0, 2, 1))
        f.create_dataset("labels", data=labels.transpose(0, 2, 1))  # (N,H,W) → (N,W,H)
        _write_cellstr(f, "scenes", scenes)
        _write_cellstr(f, "sceneTypes", SCENE_TYPES)
        _write_cellstr(f, "names", NAMES)
        if drop:
            del f[drop]
    with open(path, "r+b") as fh:  # MATLAB's text header lives in the HDF5 user block
        fh.write(MATLAB_HEADER)
    return path


def _write_splits(path: Path, train: list[int] = TRAIN_1B, test: list[int] = TEST_1B) -> Path:
    # MATLAB v5 (scipy's default), (k, 1) uint16 columns like the real file.
    columns = {"trainNdxs": train, "testNdxs": test}
    scipy.io.savemat(path, {k: np.array(v, dtype=np.uint16).reshape(-1, 1) for k, v in columns.items()})
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    frames = _frames()
    return _write_mat(tmp_path / "labeled.mat", *frames), _write_splits(tmp_path / "splits.mat"), frames


# --------------------------------------------------------------------------------------------------
# pure helpers


def test_metres_to_millimetres_hand_values() -> None:
    m = np.array([0.0, 0.0004, 1.2346, 9.9999, np.nan, -1.0, 70.0], dtype=np.float32)
    np.testing.assert_array_equal(metres_to_millimetres(m), [0, 0, 1235, 10000, 0, 0, 65535])
    assert metres_to_millimetres(m).dtype == np.uint16


def test_black_border_matches_bts_window() -> None:
    out = black_border(np.ones((480, 640, 3), dtype=np.uint8))
    assert out.sum() == (474 - 7) * (632 - 7) * 3  # BTS keeps [7:474, 7:632]
    assert out[7, 7, 0] == 1 and out[473, 631, 2] == 1
    assert out[6, 7, 0] == 0 and out[7, 6, 0] == 0 and out[474, 631, 0] == 0 and out[473, 632, 0] == 0


# --------------------------------------------------------------------------------------------------
# conversion


def test_import_raw_depths_layout_and_values(tiny, tmp_path: Path) -> None:
    mat, splits, (rgb, _, raw) = tiny
    calls: list[tuple[int, int]] = []
    out = tmp_path / "out"
    summary = import_labeled_mat(mat, splits, out, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert summary["train"] == 2 and summary["test"] == 1 and summary["field"] == "rawDepths"
    assert (out / "train_files_with_gt.txt").read_text() == (
        "kitchen_0004/rgb_00000.jpg kitchen_0004/sync_depth_00000.png 518.8579\n"
        "kitchen_0004/rgb_00002.jpg kitchen_0004/sync_depth_00002.png 518.8579\n"
    )
    test_list = (out / "test_files_with_gt.txt").read_text()
    assert test_list == "office/rgb_00001.jpg office/sync_depth_00001.png 518.8579\n"
    entries = list_depth_samples(out, "train_files_with_gt.txt", "sync") + list_depth_samples(
        out, "test_files_with_gt.txt", "sync"
    )
    for entry, i in zip(entries, [0, 2, 1]):
        stored = read_depth_png(entry.depth)
        assert stored.dtype == np.uint16 and stored.shape == (H, W)
        np.testing.assert_array_equal(stored, np.rint(raw[i].astype(np.float64) * 1000).astype(np.uint16))
        assert (stored == 0).sum() == (raw[i] == 0).sum() > 0  # holes stay holes
        img = read_rgb(entry.rgb).astype(np.int32)
        inner = (slice(7, H - 6), slice(7, W - 8))
        assert np.abs(img[inner] - rgb[i][inner]).mean() < 3.0  # JPEG q95 on a smooth ramp
        assert img[:5].mean() < 3.0 and img[:, -6:].mean() < 3.0  # BTS black border


def test_import_inpainted_depths_field(tiny, tmp_path: Path) -> None:
    mat, splits, (_, depths, _) = tiny
    import_labeled_mat(mat, splits, tmp_path / "out", field="depths")
    stored = read_depth_png(tmp_path / "out" / "office" / "sync_depth_00001.png")
    np.testing.assert_array_equal(stored, np.rint(depths[1].astype(np.float64) * 1000).astype(np.uint16))
    assert (stored > 0).all()


def test_import_is_deterministic(tiny, tmp_path: Path) -> None:
    mat, splits, _ = tiny
    for name in ("a", "b"):
        import_labeled_mat(mat, splits, tmp_path / name)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * N + 3  # rgb, depth, label; 2 lists, classes
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in files_a)


@pytest.mark.parametrize("key", ["images", "rawDepths", "scenes", "sceneTypes", "names"])
def test_missing_dataset_key_is_named(tmp_path: Path, key: str) -> None:
    mat = _write_mat(tmp_path / "labeled.mat", *_frames(), drop=key)
    with pytest.raises(DataError, match=f"labeled.mat: missing dataset '{key}'"):
        import_labeled_mat(mat, _write_splits(tmp_path / "splits.mat"), tmp_path / "out")


def test_bad_inputs(tiny, tmp_path: Path) -> None:
    mat, splits, frames = tiny
    with pytest.raises(DataError, match="absent.mat: labeled .mat file not found"):
        import_labeled_mat(tmp_path / "absent.mat", splits, tmp_path / "out")
    with pytest.raises(DataError, match="absent_splits.mat: splits file not found"):
        import_labeled_mat(mat, tmp_path / "absent_splits.mat", tmp_path / "out")
    narrow = _write_mat(tmp_path / "narrow.mat", *frames, raw_width=W - 1)
    with pytest.raises(DataError, match=r"narrow.mat: 'rawDepths' has shape \(3, 63, 48\)"):
        import_labeled_mat(narrow, splits, tmp_path / "out")
    with pytest.raises(DataError, match="in neither trainNdxs nor testNdxs"):
        import_labeled_mat(mat, _write_splits(tmp_path / "s2.mat", [1], [2]), tmp_path / "out")
    with pytest.raises(DataError, match="index 4 exceeds the 3 frames"):
        import_labeled_mat(mat, _write_splits(tmp_path / "s3.mat", [1, 3], [2, 4]), tmp_path / "out")
    with pytest.raises(DataError, match="overlap"):
        read_splits(_write_splits(tmp_path / "s4.mat", [1, 2], [2]))
    escaping = _write_mat(tmp_path / "escaping.mat", *frames, scenes=["a", "../up", "b"])
    with pytest.raises(DataError, match="escaping.mat: 'scenes' holds an unusable folder name '../up'"):
        import_labeled_mat(escaping, splits, tmp_path / "out")
    (tmp_path / "text.mat").write_text("hello")
    with pytest.raises(DataError, match="text.mat: not a MATLAB v7.3"):
        import_labeled_mat(tmp_path / "text.mat", splits, tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# semantic labels


def _frame_labels(out: Path) -> dict[int, np.ndarray]:
    """The written label PNG of each frame index, read through the prepare-side decoder."""
    return {int(p.stem.split("_")[-1]): read_label_png(p) for p in out.rglob("label_*.png")}


def _write_mapping_mat(path: Path, map_class: list[int], names: tuple[str, ...] = NYU40_NAMES) -> Path:
    # classMapping40.mat's layout: mapClass a (1, K) double row, className a (1, 40) cell of strings.
    cells = np.empty((1, len(names)), dtype=object)
    cells[0, :] = list(names)
    scipy.io.savemat(path, {"mapClass": np.array([map_class], dtype=np.float64), "className": cells})
    return path


def test_import_writes_raw_label_ids_and_names(tiny, tmp_path: Path) -> None:
    mat, splits, _ = tiny
    summary = import_labeled_mat(mat, splits, tmp_path / "out")
    assert summary["labels"] == "raw" and summary["classes"] == len(NAMES)
    written = _frame_labels(tmp_path / "out")
    assert sorted(written) == list(range(N))
    assert (tmp_path / "out" / "office" / "label_00001.png").is_file()  # next to its test frame
    for i, label in written.items():
        assert label.dtype == np.uint16  # raw ids reach 894
        np.testing.assert_array_equal(label, _labels()[i])  # transposed back to (H, W)
    classes = json.loads((tmp_path / "out" / "semseg_classes.json").read_text())
    assert classes == [{"id": k, "name": name} for k, name in enumerate(NAMES, start=1)]


def test_nyu40_mapping_from_csv_and_from_mat_agree(tiny, tmp_path: Path) -> None:
    mat, splits, _ = tiny
    table = tmp_path / "map.csv"
    table.write_text("raw_id,nyu40_id\n" + "".join(f"{k},{c}\n" for k, c in enumerate(TO_NYU40, start=1)))
    renamed = tuple(n.upper() for n in NYU40_NAMES)  # the .mat's own className wins over the built-in list
    mapping_mat = _write_mapping_mat(tmp_path / "classMapping40.mat", TO_NYU40, renamed)
    lut = np.array([0, *TO_NYU40])
    for name, mapping, names in (("csv", table, NYU40_NAMES), ("mat", mapping_mat, renamed)):
        out = tmp_path / name
        assert import_labeled_mat(mat, splits, out, nyu40_mapping=mapping)["labels"] == "nyu40"
        for i, label in _frame_labels(out).items():
            assert label.dtype == np.uint8
            np.testing.assert_array_equal(label, lut[_labels()[i]])  # 0 stays 0
        classes = json.loads((out / "semseg_classes.json").read_text())
        assert classes == [{"id": k, "name": n} for k, n in enumerate(names, start=1)]
    assert len(NYU40_NAMES) == 40 and NYU40_NAMES[22] == "books" and NYU40_NAMES[34] == "lamp"


def _bad_csv(text: str):
    def write(folder: Path) -> Path:
        (folder / "map.csv").write_text(text)
        return folder / "map.csv"
    return write


def _not_a_mapping_mat(folder: Path) -> Path:
    scipy.io.savemat(folder / "m.mat", {"other": np.zeros(3)})
    return folder / "m.mat"


def _truncated_mat(folder: Path) -> Path:
    (folder / "m.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    return folder / "m.mat"


@pytest.mark.parametrize("write, reason", [
    (_bad_csv("1,1\n2,2\n3,x\n"), r"map.csv:3: expected 'raw_id,nyu40_id'"),
    (_bad_csv("1,1\n2,2\n3,5\n5,1\n6,1\n"), "map.csv: no NYU-40 id for raw label id 4"),
    (_bad_csv("".join(f"{k},41\n" for k in range(1, 7))), r"map.csv: NYU-40 ids must be in 0\.\.40, got 41"),
    (_bad_csv("1,1\n1,2\n"), "map.csv:2: raw id 1 is 0 or listed twice"),
    (_bad_csv("raw_id,nyu40_id\n"), "map.csv: no 'raw_id,nyu40_id' rows"),
    (lambda p: _write_mapping_mat(p / "m.mat", TO_NYU40, NYU40_NAMES[:39]), "m.mat: expected 40 non-empty"),
    (lambda p: _write_mapping_mat(p / "m.mat", TO_NYU40[:5]), "m.mat: no NYU-40 id for raw label id 6"),
    (_not_a_mapping_mat, "m.mat: missing variable 'mapClass'"),
    (_truncated_mat, "m.mat: cannot read MATLAB file"),
    (lambda p: p / "absent.csv", "absent.csv: NYU-40 mapping file not found"),
])
def test_malformed_mapping_is_one_line_naming_the_file(tiny, tmp_path: Path, write, reason) -> None:
    mat, splits, _ = tiny
    with pytest.raises(DataError, match=reason) as err:
        import_labeled_mat(mat, splits, tmp_path / "out", nyu40_mapping=write(tmp_path))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # checked before any frame is written


def test_label_id_beyond_names_and_mapping_without_labels(tmp_path: Path) -> None:
    splits = _write_splits(tmp_path / "splits.mat")
    labels = _labels()
    labels[1, 5, 7] = len(NAMES) + 1
    mat = _write_mat(tmp_path / "beyond.mat", *_frames(), labels=labels)
    with pytest.raises(DataError, match=r"beyond.mat: frame 2 \(1-based\): label id 7 is not 0 or one of"):
        import_labeled_mat(mat, splits, tmp_path / "out")
    plain = _write_mat(tmp_path / "plain.mat", *_frames(), drop="labels")
    summary = import_labeled_mat(plain, splits, tmp_path / "plain")  # depth-only files still convert
    assert summary["labels"] is None and not list((tmp_path / "plain").rglob("label_*"))
    assert not (tmp_path / "plain" / "semseg_classes.json").exists()
    with pytest.raises(DataError, match="plain.mat: no 'labels' dataset for the NYU-40 mapping"):
        import_labeled_mat(plain, splits, tmp_path / "out", nyu40_mapping=tmp_path / "splits.mat")


def test_cli_takes_the_mapping_option(tiny, tmp_path: Path) -> None:
    mat, splits, _ = tiny
    table = tmp_path / "map.csv"
    table.write_text("".join(f"{k},{c}\n" for k, c in enumerate(TO_NYU40, start=1)))
    out = tmp_path / "out"
    result = CliRunner().invoke(data_app, ["import-nyu-mat", str(mat), str(splits), "--out", str(out),
                                      "--nyu40-mapping", str(table)])
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "semseg_classes.json").read_text())) == 40
    assert read_label_png(out / "kitchen_0004" / "label_00000.png").dtype == np.uint8


def test_splits_v73_equals_v5(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s73.mat", "w", userblock_size=512) as f:
        f.create_dataset("trainNdxs", data=np.array([TRAIN_1B], dtype=np.float64))  # (1, k): transposed
        f.create_dataset("testNdxs", data=np.array([TEST_1B], dtype=np.float64))
    v73, v5 = read_splits(tmp_path / "s73.mat"), read_splits(_write_splits(tmp_path / "s5.mat"))
    for a, b, expected in zip(v73, v5, ([0, 2], [1])):
        np.testing.assert_array_equal(a, expected)
        np.testing.assert_array_equal(b, expected)


# --------------------------------------------------------------------------------------------------
# the real official split file


def test_real_splits_mat(shared_data: Path) -> None:
    nyu = shared_data / "nyuv2_sample"
    train, test = read_splits(nyu / "splits" / "splits.mat")
    assert len(train) == 795 and len(test) == 654
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1449))
    np.testing.assert_array_equal(test[:3], [0, 1, 8])  # testNdxs starts 1, 2, 9 (1-based)
    # BTS names official test frames by the 0-based .mat index: its 654-line list must be exactly `test`.
    lines = (nyu / "splits" / "nyudepthv2_test_files_with_gt.txt").read_text().split("\n")
    bts = sorted(int(line.split()[0].split("_")[-1].removesuffix(".jpg")) for line in lines if line.strip())
    np.testing.assert_array_equal(bts, test)
    with open(nyu / "densedepth" / "densedepth_to_bts_official_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(int(r["labeled_index_0based"]) in set(test.tolist()) for r in rows)
    for r in rows:
        assert r["bts_official_test_rgb"].endswith(f"rgb_{int(r['labeled_index_0based']):05d}.jpg")
