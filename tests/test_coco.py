"""COCO instances via pycocotools (pipeline/data/coco.py), on the real sample and a hand-made json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataError
from pipeline.data.coco import CocoIndex, load_coco


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> CocoIndex:
    root = shared_data / "coco_sample"
    return load_coco(root / "annotations" / "instances_sample.json", root / "images")


def test_real_sample_counts_and_order(sample: CocoIndex) -> None:
    ids = sample.image_ids
    assert len(ids) == 40 and ids == sorted(ids)
    cats = sample.categories
    assert len(cats) == 80 and [c["id"] for c in cats] == sorted(c["id"] for c in cats)
    assert (cats[0]["id"], cats[0]["name"]) == (1, "person")
    assert (cats[-1]["id"], cats[-1]["name"]) == (90, "toothbrush")
    anns = {i: sample.annotations(i) for i in ids}
    assert sum(len(a) for a in anns.values()) == 524
    assert all([a["id"] for a in per] == sorted(a["id"] for a in per) for per in anns.values())
    assert all(a["image_id"] == i for i, per in anns.items() for a in per)
    # PROVENANCE.md: the 11 images with an iscrowd annotation were kept on purpose.
    assert sum(any(a["iscrowd"] for a in per) for per in anns.values()) == 11


def test_real_image_paths_match_records(sample: CocoIndex) -> None:
    for image_id in sample.image_ids:
        rec = sample.image_record(image_id)
        path = sample.image_path(image_id)
        assert path.name == rec["file_name"]
        with Image.open(path) as im:  # header only: size check without a full decode
            assert im.size == (rec["width"], rec["height"])


def _tight_box(mask: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 (exclusive) of the set pixels."""
    rows, cols = np.flatnonzero(mask.max(1)), np.flatnonzero(mask.max(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])


def test_real_masks_match_area_and_box(sample: CocoIndex) -> None:
    # Area alone cannot see a flipped, shifted or transposed mask; the json's bbox (COCO computed it
    # from the polygons, independently of any rasteriser) pins where the pixels are.
    rel_err, box_err = [], []
    for image_id in sample.image_ids:
        rec = sample.image_record(image_id)
        for ann in sample.annotations(image_id):
            mask = sample.ann_to_mask(ann)
            assert mask.shape == (rec["height"], rec["width"]) and mask.dtype == np.uint8
            rel_err.append(abs(np.count_nonzero(mask) - ann["area"]) / ann["area"])
            x, y, w, h = ann["bbox"]
            box_err.append(np.abs(_tight_box(mask) - [x, y, x + w, y + h]).max())
    assert len(rel_err) == 524
    assert np.median(rel_err) < 0.02  # PROVENANCE.md: 0.002
    assert np.median(box_err) < 1 and max(box_err) < 4  # polygon vertices round to pixel borders


def _tiny_json(tmp_path: Path) -> Path:
    # Uncompressed RLE is column-major (Fortran) run lengths starting with a 0-run.
    data = {
        "images": [{"id": 5, "file_name": "b.jpg", "height": 4, "width": 5},
                   {"id": 2, "file_name": "a.jpg", "height": 4, "width": 5}],
        "annotations": [
            {"id": 7, "image_id": 5, "category_id": 3, "iscrowd": 1, "area": 3.0, "bbox": [0, 1, 1, 3],
             "segmentation": {"counts": [5, 3, 12], "size": [4, 5]}},
            {"id": 3, "image_id": 5, "category_id": 1, "iscrowd": 1, "area": 1.0, "bbox": [4, 3, 1, 1],
             "segmentation": {"counts": [19, 1], "size": [4, 5]}},
        ],
        "categories": [{"id": 3, "name": "c"}, {"id": 1, "name": "a"}],
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return path


def test_tiny_json_masks_and_order(tmp_path: Path) -> None:
    index = load_coco(_tiny_json(tmp_path), tmp_path)
    assert index.image_ids == [2, 5]
    assert [(c["id"], c["name"]) for c in index.categories] == [(1, "a"), (3, "c")]
    assert index.image_path(2) == tmp_path / "a.jpg"
    assert index.annotations(2) == []
    first, second = index.annotations(5)
    assert (first["id"], second["id"]) == (3, 7)
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[1:4, 1] = 1  # Fortran-order pixels 5, 6, 7 = column 1, rows 1..3
    np.testing.assert_array_equal(index.ann_to_mask(second), expected)
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[3, 4] = 1  # the last pixel in Fortran order
    np.testing.assert_array_equal(index.ann_to_mask(first), expected)


def test_bad_inputs_name_the_path(tmp_path: Path) -> None:
    good = _tiny_json(tmp_path)
    with pytest.raises(DataError, match="absent.json: annotation file not found"):
        load_coco(tmp_path / "absent.json", tmp_path)
    with pytest.raises(DataError, match="no_images: image directory not found"):
        load_coco(good, tmp_path / "no_images")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DataError, match="broken.json: not valid JSON") as err:
        load_coco(tmp_path / "broken.json", tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="list.json: top level must be an object"):
        load_coco(tmp_path / "list.json", tmp_path)
    (tmp_path / "nocats.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="nocats.json: missing list 'categories'"):
        load_coco(tmp_path / "nocats.json", tmp_path)
    with pytest.raises(DataError, match="tiny.json: no image with id 99"):
        load_coco(good, tmp_path).image_path(99)
