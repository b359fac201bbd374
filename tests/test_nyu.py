"""NYUv2 list parsing and image/depth decoding (pipeline/data/nyu.py), on hand-made and real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataError
from pipeline.data.nyu import (
    DepthEntry,
    depth_to_metres,
    list_depth_samples,
    read_bts_list,
    read_densedepth_csv,
    read_depth_metres,
    read_depth_png,
    read_rgb,
)

TRAIN_LIST = "nyudepthv2_sample_train_files_with_gt.txt"
TEST_LIST = "nyudepthv2_sample_test_files_with_gt.txt"
CSV_LIST = "densedepth/nyu2_test.csv"


@pytest.fixture(scope="module")
def nyu(shared_data: Path) -> Path:
    return shared_data / "nyuv2_sample"


def _valid_stats(entries: list[DepthEntry]) -> list[tuple[float, float, float]]:
    """(zero fraction, min valid metres, max valid metres) per entry."""
    stats = []
    for e in entries:
        depth = read_depth_metres(e.depth)
        valid = depth[depth > 0]
        stats.append(((depth == 0).mean(), valid.min(), valid.max()))
    return stats


# --------------------------------------------------------------------------------------------------
# real samples


def test_sync_train_list_loads_real_pairs(nyu: Path) -> None:
    entries = list_depth_samples(nyu, TRAIN_LIST, "sync")
    assert len(entries) == 4
    scene = nyu / "sync" / "metric3d_nyu_demo"
    assert entries[0] == DepthEntry(scene / "rgb_00000.jpg", scene / "sync_depth_00000.png", 518.8579)
    assert all(e.rgb.is_file() and e.depth.is_file() for e in entries)


def test_sync_pairs_have_kinect_holes_and_metric_range(nyu: Path) -> None:
    entries = list_depth_samples(nyu, TRAIN_LIST, "sync")
    for zero_frac, lo, hi in _valid_stats(entries):
        assert 0.24 <= zero_frac <= 0.34  # PROVENANCE.md: 0.267 / 0.249 / 0.330 / 0.319
        assert 0.5 <= lo and hi <= 10.0


def test_densedepth_test_list_is_inpainted(nyu: Path) -> None:
    entries = list_depth_samples(nyu, TEST_LIST, "sync")
    assert len(entries) == 28
    assert all(e.rgb.parent == nyu / "densedepth" / "nyu2_test" for e in entries)
    for zero_frac, lo, hi in _valid_stats(entries):
        assert zero_frac == 0.0  # the labeled set's in-painted `depths` field
        assert 0.5 <= lo and hi <= 10.0


def test_densedepth_csv_layout_matches_bts_list(nyu: Path) -> None:
    from_csv = list_depth_samples(nyu, CSV_LIST, "densedepth")
    from_txt = list_depth_samples(nyu, TEST_LIST, "sync")
    assert [(e.rgb, e.depth) for e in from_csv] == [(e.rgb, e.depth) for e in from_txt]
    assert all(e.focal is None for e in from_csv)


def test_read_rgb_real_formats(nyu: Path) -> None:
    for rel in (
        "sync/metric3d_nyu_demo/rgb_00000.jpg",
        "densedepth/nyu2_test/00000_colors.png",
        "extras/open3d_raw_kinect/NYU_color.ppm",
    ):
        rgb = read_rgb(nyu / rel)
        assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
        assert rgb.std() > 10  # a real picture, not a blank decode
    # Reference decode by hand: binary PPM (P6) is a text header, then rows of R, G, B bytes.
    ppm = nyu / "extras/open3d_raw_kinect/NYU_color.ppm"
    data, size = ppm.read_bytes(), 480 * 640 * 3
    assert data[:-size].split() == [b"P6", b"640", b"480", b"255"]
    by_hand = np.frombuffer(data[-size:], np.uint8).reshape(480, 640, 3)
    np.testing.assert_array_equal(read_rgb(ppm), by_hand)  # same pixels, rows and channel order


def test_read_depth_png_real_is_uint16_mm(nyu: Path) -> None:
    path = nyu / "sync/unidepth_demo/depth.png"
    raw = read_depth_png(path)
    assert raw.dtype == np.uint16 and raw.shape == (480, 640)
    assert raw.max() == 10000  # PROVENANCE.md: the 10 m cap is present in this file
    capped = raw == 10000
    assert capped.any()
    # the sensor's cap is outside the one valid range (1 mm, 10 m): a hole for every stage, as evaluation
    # never scored it
    expected = np.where(capped, np.float32(0), raw / np.float32(1000))
    np.testing.assert_array_equal(read_depth_metres(path), expected)


def test_truncated_real_png_names_file(nyu: Path, tmp_path: Path) -> None:
    data = (nyu / "densedepth/nyu2_test/00000_depth.png").read_bytes()
    bad = tmp_path / "truncated_depth.png"
    bad.write_bytes(data[: len(data) // 2])
    for reader in (read_depth_png, read_rgb):
        with pytest.raises(DataError, match="truncated_depth.png") as err:
            reader(bad)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------
# hand-made files


def test_bts_list_columns_slash_and_blank_lines(tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png\n\n  \na/rgb.jpg a/d.png 518.8579\n"
    )
    root = tmp_path / "root"
    assert read_bts_list(lst, root) == [
        DepthEntry(root / "kitchen_0028b/rgb_00045.jpg", root / "kitchen_0028b/sync_depth_00045.png", None),
        DepthEntry(root / "a/rgb.jpg", root / "a/d.png", 518.8579),
    ]


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [("only_one.jpg", "list.txt:3: expected 2 or 3 columns"), ("a b 5 extra", "list.txt:3: expected 2 or 3"),
     ("a b focal", "list.txt:3: focal 'focal'")],
)
def test_bts_list_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, match: str) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(f"a.jpg a.png\n\n{bad_line}\n")
    with pytest.raises(DataError, match=match):
        read_bts_list(lst, tmp_path)


def test_missing_root_and_list(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope: dataset root not found"):
        list_depth_samples(tmp_path / "nope", "x.txt", "sync")
    with pytest.raises(DataError, match="missing.txt: list file not found"):
        list_depth_samples(tmp_path, "missing.txt", "sync")
    with pytest.raises(DataError, match="missing.csv: list file not found"):
        list_depth_samples(tmp_path, "missing.csv", "densedepth")


def test_non_text_list_file(tmp_path: Path) -> None:
    lst = tmp_path / "binary.txt"
    lst.write_bytes(b"\xff\xfe\x00\x81 rgb depth\n")
    with pytest.raises(DataError, match="binary.txt: cannot read list file"):
        read_bts_list(lst, tmp_path)


def test_densedepth_csv_resolution_order(tmp_path: Path) -> None:
    root, csv_dir = tmp_path / "root", tmp_path / "root" / "sub"
    (csv_dir / "nyu2_test").mkdir(parents=True)
    for p in (root / "both.png", csv_dir / "both.png", csv_dir / "here.png", csv_dir / "nyu2_test/deep.png"):
        p.write_bytes(b"")
    csv = csv_dir / "nyu2_test.csv"
    csv.write_text("both.png,here.png\n\n/nyu2_test/deep.png,deep.png\nabsent.png,here.png\n")
    entries = read_densedepth_csv(csv, root)
    assert [(e.rgb, e.depth) for e in entries] == [
        (root / "both.png", csv_dir / "here.png"),  # root beats csv dir; csv dir when only there
        (csv_dir / "nyu2_test" / "deep.png", csv_dir / "nyu2_test" / "deep.png"),  # csv dir; then <csv stem>/
        (root / "absent.png", csv_dir / "here.png"),  # nowhere → root-joined, fails when read
    ]
    csv.write_text("a.png,b.png\na.png b.png\n")
    with pytest.raises(DataError, match="nyu2_test.csv:2: expected 2 comma-separated columns"):
        read_densedepth_csv(csv, root)


def test_depth_to_metres_hand_values() -> None:
    raw = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    out = depth_to_metres(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0], [2.5, 0.0]], rtol=1e-7)  # 65535: a marker, not 65 m
    np.testing.assert_allclose(depth_to_metres(raw, scale=256.0)[1, 0], 2500 / 256.0)


def test_depth_outside_the_one_valid_range_reads_as_a_hole_everywhere() -> None:
    """Every stage reads depth through depth_to_metres, so a value outside (MIN_DEPTH, MAX_DEPTH) is a
    hole for the tokenizer, the caches, the solver's targets and evaluation alike (it used to be trained
    on and then never scored)."""
    from pipeline.data.nyu import MAX_DEPTH, MIN_DEPTH
    from pipeline.tasks.depth.metrics import eval_mask

    raw = np.array([[0, 1, 2, 9999, 10000, 12000, 65535]], dtype=np.uint16)
    metres = depth_to_metres(raw)
    np.testing.assert_allclose(metres, [[0, 0, 0.002, 9.999, 0, 0, 0]], rtol=1e-6)
    assert (MIN_DEPTH, MAX_DEPTH) == (1e-3, 10.0)
    inside = metres > 0
    np.testing.assert_array_equal(inside, (metres > MIN_DEPTH) & (metres < MAX_DEPTH))
    full = depth_to_metres(np.full((480, 640), 12000, np.uint16))
    assert not full.any() and not eval_mask(full).any()


def test_list_with_a_byte_order_mark_reads_its_first_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_bytes("\ufeffa/rgb_1.jpg a/sync_depth_1.png 518.8\n".encode())
    [entry] = read_bts_list(tmp_path / "list.txt", tmp_path)
    assert entry.rgb == tmp_path / "a/rgb_1.jpg" and entry.focal == pytest.approx(518.8)


def test_a_palette_label_png_says_how_to_convert_it(tmp_path: Path) -> None:
    from pipeline.data.nyu import read_label_png

    Image.fromarray(np.zeros((4, 5), np.uint8)).convert("P").save(tmp_path / "label.png")
    with pytest.raises(DataError, match="label.png: a palette .mode P. PNG.*save them as a greyscale PNG"):
        read_label_png(tmp_path / "label.png")


def test_read_depth_metres_dispatches_on_dtype(tmp_path: Path) -> None:
    mm = np.array([[0, 713], [9961, 10000]], dtype=np.uint16)
    Image.fromarray(mm).save(tmp_path / "d16.png")
    assert read_depth_png(tmp_path / "d16.png").dtype == np.uint16
    expected = [[0, 0.713], [9.961, 0.0]]  # 10 m is outside the valid range (MIN_DEPTH, MAX_DEPTH)
    np.testing.assert_allclose(read_depth_metres(tmp_path / "d16.png"), expected, rtol=1e-6)
    # DenseDepth train encoding: 8-bit, 255 ↔ 10 m (so 255 is a hole as well).
    Image.fromarray(np.array([[0, 255], [51, 128]], dtype=np.uint8)).save(tmp_path / "d8.png")
    assert read_depth_png(tmp_path / "d8.png").dtype == np.uint8
    expected = [[0, 0.0], [2.0, 1280 / 255]]
    np.testing.assert_allclose(read_depth_metres(tmp_path / "d8.png"), expected, rtol=1e-6)


def test_bad_image_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="notes.png: cannot decode image"):
        read_rgb(tmp_path / "notes.png")
    with pytest.raises(DataError, match="gone.jpg: image file not found"):
        read_rgb(tmp_path / "gone.jpg")
    with pytest.raises(DataError, match="colour.png: expected a single-channel"):
        read_depth_png(tmp_path / "colour.png")


def test_read_rgb_converts_greyscale(tmp_path: Path) -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = read_rgb(tmp_path / "g.png")
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
