"""prepare@semseg on a tiny demo render (and an imported .mat), and the demo's label files."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from pipeline.core.io import read_jsonl
from pipeline.core.sources import DemoConfig
from pipeline.data.demo import render_demo
from pipeline.data.demo.semseg import CLASSES
from pipeline.data.nyu_mat import import_labeled_mat
from stages import prepare
from tests.test_nyu_mat import NAMES, _frames, _labels, _write_mat, _write_splits

# pycocotools' Cython decode trips numpy 2's `__array__(copy=...)` deprecation on every mask
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = DemoConfig(seed=3, num_scenes=2, test_scenes=1, frames_per_scene=2, height=48, width=64)
FRAME = "room_0000/label_00001.png"  # the training frame the damage tests break

# The stage command alone (what `ait prepare` runs); a second command keeps `prepare` a subcommand.
app = typer.Typer()
app.command("prepare")(prepare.main)
app.command("noop")(lambda: None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    render_demo(TINY, out)
    return out


@pytest.fixture
def root(demo, tmp_path) -> Path:
    """A private copy of the demo's NYUv2 tree, free to damage."""
    shutil.copytree(demo / "nyuv2", tmp_path / "nyuv2")
    return tmp_path / "nyuv2"


def _params(root: Path, source: str = "demo", cache_crop: int = TINY.height) -> dict:
    return {"data": {"max_bad_fraction": 0.5, "tasks": {"semseg": {
        "source": source, "root": str(root), "layout": "sync",
        "train_list": "train_files_with_gt.txt", "test_list": "test_files_with_gt.txt"}}},
        # the crops the frames must fit (the solver's is the full frame height)
        "tokenizer": {"semseg": {"train": {"crop_size": 32}}}, "cache": {"semseg": {"crop_size": cache_crop}}}


def _run(tmp_path: Path, params: dict):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    out = tmp_path / "prepared" / "semseg"
    result = CliRunner().invoke(app, ["prepare", "semseg", "--params", str(p), "--out", str(out)])
    return result, out


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# --------------------------------------------------------------------------------------------------
# prepare@semseg


def test_demo_frames_become_records_and_classes(root, tmp_path):
    result, out = _run(tmp_path, _params(root))
    assert result.exit_code == 0, result.output
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert [r["key"] for r in train] == ["room_0000_rgb_00000", "room_0000_rgb_00001"]
    assert [r["key"] for r in test] == ["room_0001_rgb_00000", "room_0001_rgb_00001"]
    assert set(train[1]) == {"key", "rgb", "label", "height", "width"}
    assert train[1]["label"] == str(root / FRAME) and train[1]["rgb"] == str(root / "room_0000/rgb_00001.jpg")
    assert (train[1]["height"], train[1]["width"]) == (TINY.height, TINY.width)
    assert json.loads((out / "classes.json").read_text()) == list(CLASSES)
    report = _report(out)
    assert report["ok"] and report["task"] == "semseg" and report["source"] == "demo"
    assert report["counts"]["test"] == {"total": 2, "kept": 2, "skipped": 0, "annotations": 0,
                                        "dropped_annotations": 0}


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _label(fill: int, shape=(TINY.height, TINY.width), dtype=np.uint8) -> np.ndarray:
    label = np.full(shape, fill, dtype)
    label[:4, :4] = 1  # one wall corner
    return label


@pytest.mark.parametrize("damage, reason", [
    (lambda p: _save(p, _label(2, (TINY.height, TINY.width - 4))), "label is 60x48 but RGB is 64x48"),
    (lambda p: _save(p, _label(len(CLASSES) + 1)), f"class id {len(CLASSES) + 1} is not 0 or one of the 16"),
    (lambda p: _save(p, _label(700, dtype=np.uint16)), "class id 700 is not 0 or one of the 16"),
    (lambda p: _save(p, np.zeros((TINY.height, TINY.width), np.uint8)), "no labelled pixel (all 0)"),
    (lambda p: _save(p, np.ones((TINY.height, TINY.width, 3), np.uint8)), "expected a single-channel"),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "cannot decode image"),
    (lambda p: p.unlink(), "image file not found"),
])
def test_bad_label_is_skipped_and_reported(root, tmp_path, damage, reason):
    damage(root / FRAME)
    result, out = _run(tmp_path, _params(root))
    assert result.exit_code == 0, result.output
    report = _report(out)
    assert [(s["split"], s["key"]) for s in report["skipped"]] == [("train", "room_0000_rgb_00001")]
    assert str(root / FRAME) in report["skipped"][0]["reason"] and reason in report["skipped"][0]["reason"]
    assert [r["key"] for r in read_jsonl(out / "train.jsonl")] == ["room_0000_rgb_00000"]
    assert report["counts"]["train"]["kept"] == 1 and report["counts"]["test"]["kept"] == 2


def test_too_many_bad_labels_fail_and_write_nothing(root, tmp_path):
    for path in list(root.glob("room_0000/label_*.png")) + [root / "room_0001/label_00000.png"]:
        path.unlink()  # 3 of 4 frames: 75% > max_bad_fraction 50%
    result, out = _run(tmp_path, _params(root))
    assert result.exit_code == 1
    assert "prepare semseg: too many bad samples" in result.stderr and "75.0%" in result.stderr
    assert not out.exists()


def test_frames_must_fit_the_semseg_crops(root, tmp_path):
    result, out = _run(tmp_path, _params(root, cache_crop=40))
    assert result.exit_code == 1 and not out.exists()
    assert "cache.semseg.crop_size 40 must equal the frame height" in result.stderr


@pytest.mark.parametrize("classes, reason", [
    ([{"id": 1, "name": "wall"}, {"id": 3, "name": "floor"}], "class ids must be 1..2, each once"),
    ([{"id": 1, "name": "wall"}, {"id": 2, "name": "wall"}], "class name 'wall' appears more than once"),
    ([{"id": 1, "name": " "}], "expected a non-empty list"),
    ([{"id": True, "name": "wall"}], "expected a non-empty list"),
    ([], "expected a non-empty list"),
    ("{", "cannot read the class list"),
    (None, "class list not found"),
])
def test_bad_class_list_is_one_line_naming_the_file(root, tmp_path, classes, reason):
    path = root / "semseg_classes.json"
    if classes is None:
        path.unlink()
    else:
        path.write_text(classes if isinstance(classes, str) else json.dumps(classes))
    result, out = _run(tmp_path, _params(root))
    assert result.exit_code == 1 and not out.exists()
    assert str(path) in result.stderr and reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_imported_nyu_mat_labels_prepare_as_uint16_raw_ids(tmp_path):
    # The .mat importer and prepare agree on the layout: raw NYU ids in 16-bit PNGs, named in
    # semseg_classes.json at the root (tests/test_nyu_mat.py writes the tiny .mat).
    mat = _write_mat(tmp_path / "labeled.mat", *_frames())
    nyu = tmp_path / "nyuv2"
    import_labeled_mat(mat, _write_splits(tmp_path / "splits.mat"), nyu)
    result, out = _run(tmp_path, _params(nyu, source="nyuv2"))
    assert result.exit_code == 0, result.output
    records = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    keys = ["kitchen_0004_rgb_00000", "kitchen_0004_rgb_00002", "office_rgb_00001"]
    assert [r["key"] for r in records] == keys
    assert np.array_equal(np.asarray(Image.open(records[0]["label"])), _labels()[0])
    assert [c["name"] for c in json.loads((out / "classes.json").read_text())] == NAMES


# --------------------------------------------------------------------------------------------------
# the demo's label files


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_labels_are_byte_identical_per_seed_and_only_add_files(demo, tmp_path):
    render_demo(TINY, tmp_path / "again")
    first, again = _files(demo), _files(tmp_path / "again")
    assert first == again  # labels included
    frames = [(f"room_{i:04d}", f"{f:05d}")
              for i in range(TINY.num_scenes) for f in range(TINY.frames_per_scene)]
    before = {f"nyuv2/{room}/{kind}_{f}.{ext}" for room, f in frames
              for kind, ext in (("rgb", "jpg"), ("sync_depth", "png"), ("complete_depth", "png"))}
    before |= {"nyuv2/train_files_with_gt.txt", "nyuv2/test_files_with_gt.txt", "meta.json",
               "coco/annotations/instances_train.json", "coco/annotations/instances_val.json"}
    labels = {f"nyuv2/{room}/label_{f}.png" for room, f in frames}
    assert set(first) == before | labels | {"nyuv2/semseg_classes.json"}
    classes = json.loads(first["nyuv2/semseg_classes.json"])
    assert classes == [{"id": i, "name": c["name"]} for i, c in enumerate(classes, start=1)]
    assert [c["name"] for c in classes[:3]] == ["wall", "floor", "ceiling"]


def test_demo_labels_agree_with_the_coco_masks(demo):
    ids = {c["name"]: c["id"] for c in CLASSES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(str(demo / "coco/annotations/instances_train.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    checked = 0
    for image in coco.loadImgs(coco.getImgIds()):
        name = image["file_name"].replace("rgb_", "label_").replace(".jpg", ".png")
        with Image.open(demo / "nyuv2" / name) as im:
            assert im.mode == "L"  # 8-bit
            label = np.asarray(im)
        assert label.min() >= 1 and label.max() <= len(CLASSES)  # every demo ray hits the room or an object
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            mask = coco.annToMask(ann).astype(bool)
            assert (label[mask] == ids[names[ann["category_id"]]]).all()
            checked += 1
    assert checked > 5
