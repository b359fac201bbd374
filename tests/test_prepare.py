"""prepare@depth / prepare@insseg: validation, skip-and-report, and the stage's failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.core.io import read_jsonl
from stages.cli import app

H, W = 24, 32


def _write_pair(root: Path, scene: str, i: int, depth_shape=(H, W)) -> str:
    (root / scene).mkdir(parents=True, exist_ok=True)
    rgb = np.full((H, W, 3), 40 * i % 255, np.uint8)
    Image.fromarray(rgb).save(root / scene / f"rgb_{i:05d}.jpg")
    depth = np.full(depth_shape, 1000 + i, np.uint16)
    depth[0, 0] = 0
    Image.fromarray(depth).save(root / scene / f"sync_depth_{i:05d}.png")
    return f"{scene}/rgb_{i:05d}.jpg {scene}/sync_depth_{i:05d}.png 518.8579\n"


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _coco(root: Path, name: str, anns: list[dict], n_images: int = 3) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, n_images + 1):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": W, "height": H})
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / name).write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "chair", "supercategory": "furniture"},
                       {"id": 3, "name": "table", "supercategory": "furniture"}]}))


def _ann(i, image_id, category_id=1, x=2, y=2, s=8, iscrowd=0):
    return {"id": i, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
            "bbox": [x, y, s, s], "area": s * s, "segmentation": _square(x, y, s)}


@pytest.fixture
def dataset(tmp_path):
    nyu = tmp_path / "nyu"
    train = "".join(_write_pair(nyu, "room_a", i) for i in range(6))
    test = "".join(_write_pair(nyu, "room_b", i) for i in range(2))
    (nyu / "train.txt").write_text(train)
    (nyu / "test.txt").write_text(test)
    coco = tmp_path / "coco"
    anns = [_ann(1, 1), _ann(2, 1, category_id=3, x=10), _ann(3, 2), _ann(4, 3, x=20, s=10)]
    _coco(coco, "train.json", anns)
    _coco(coco, "val.json", [_ann(1, 1)])
    params = {"data": {"max_bad_fraction": 0.5, "tasks": {
        "depth": {"source": "nyuv2", "root": str(nyu), "layout": "sync",
                  "train_list": "train.txt", "test_list": "test.txt"},
        "insseg": {"source": "coco", "root": str(coco), "train_images": "images",
                   "train_json": "annotations/train.json", "val_images": "images",
                   "val_json": "annotations/val.json"}}},
              # the crops the depth frames must fit (the solver's is the full frame height)
              "tokenizer": {"depth": {"train": {"crop_size": 16}}}, "cache": {"depth": {"crop_size": H}}}
    return tmp_path, params


def _run(tmp_path, params, task):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    out = tmp_path / "prepared" / task
    result = CliRunner().invoke(app, ["prepare", task, "--params", str(p), "--out", str(out)])
    return result, out


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_clean_depth_dataset(dataset):
    tmp_path, params = dataset
    result, out = _run(tmp_path, params, "depth")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "train.jsonl")
    assert [r["key"] for r in rows] == [f"room_a_rgb_{i:05d}" for i in range(6)]
    assert rows[0]["height"] == H and rows[0]["width"] == W and rows[0]["focal"] == pytest.approx(518.8579)
    assert _report(out)["counts"]["test"] == {"total": 2, "kept": 2, "skipped": 0, "annotations": 0,
                                              "dropped_annotations": 0}


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "sync_depth_00001.png"),
    ("wrong_size", "depth is"),
    ("missing", "sync_depth_00001.png"),
])
def test_bad_depth_sample_is_skipped_and_reported(dataset, damage, reason):
    tmp_path, params = dataset
    bad = tmp_path / "nyu" / "room_a" / "sync_depth_00001.png"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:60])
    elif damage == "wrong_size":
        Image.fromarray(np.ones((H, W + 4), np.uint16)).save(bad)
    else:
        bad.unlink()
    result, out = _run(tmp_path, params, "depth")
    assert result.exit_code == 0, result.output
    report = _report(out)
    assert [s["key"] for s in report["skipped"]] == ["room_a_rgb_00001"]
    assert reason in report["skipped"][0]["reason"]
    assert "room_a_rgb_00001" not in {r["key"] for r in read_jsonl(out / "train.jsonl")}
    assert report["counts"]["train"]["kept"] == 5


def test_too_many_bad_samples_fails_and_writes_nothing(dataset):
    tmp_path, params = dataset
    for i in range(5):  # 5 of 8 samples bad: 62.5% > max_bad_fraction 50%
        (tmp_path / "nyu" / "room_a" / f"rgb_{i:05d}.jpg").unlink()
    result, out = _run(tmp_path, params, "depth")
    assert result.exit_code == 1
    assert "too many bad samples" in result.stderr and "62.5%" in result.stderr
    assert not out.exists() and not list(out.parent.glob(".*partial*"))


def test_missing_root_is_one_line_naming_the_path(dataset):
    tmp_path, params = dataset
    params["data"]["tasks"]["depth"]["root"] = str(tmp_path / "nowhere")
    result, _ = _run(tmp_path, params, "depth")
    assert result.exit_code == 1
    assert str(tmp_path / "nowhere") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_list_file_is_one_line(dataset):
    tmp_path, params = dataset
    params["data"]["tasks"]["depth"]["train_list"] = "missing.txt"
    result, _ = _run(tmp_path, params, "depth")
    assert result.exit_code == 1 and "missing.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_clean_insseg_dataset(dataset):
    tmp_path, params = dataset
    result, out = _run(tmp_path, params, "insseg")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "train.jsonl")
    assert [len(r["annotations"]) for r in rows] == [2, 1, 1]
    assert json.loads((out / "categories.json").read_text()) == [{"id": 1, "name": "chair"},
                                                                 {"id": 3, "name": "table"}]
    val = _report(out)["counts"]["val"]
    assert (val["kept"], val["annotations"]) == (3, 1)


@pytest.mark.parametrize("bad, reason", [
    ({"category_id": 7}, "unknown category_id 7"),
    ({"bbox": [20, 2, 30, 8]}, "outside the 32x24 image"),
    ({"segmentation": []}, "empty segmentation"),
    ({"iscrowd": 2}, "iscrowd must be 0 or 1"),
])
def test_bad_annotation_is_dropped_and_reported(dataset, bad, reason):
    tmp_path, params = dataset
    anns = [_ann(1, 1), _ann(2, 1) | bad, _ann(3, 2), _ann(4, 3)] + [_ann(i, 3) for i in range(5, 9)]
    _coco(tmp_path / "coco", "train.json", anns)
    result, out = _run(tmp_path, params, "insseg")
    assert result.exit_code == 0, result.output
    dropped = _report(out)["dropped_annotations"]
    assert [(d["annotation_id"], d["split"]) for d in dropped] == [(2, "train")]
    assert reason in dropped[0]["reason"]
    first = read_jsonl(out / "train.jsonl")[0]
    assert [a["id"] for a in first["annotations"]] == [1]


def test_missing_image_skips_the_image(dataset):
    tmp_path, params = dataset
    (tmp_path / "coco" / "images" / f"{2:012d}.jpg").unlink()
    result, out = _run(tmp_path, params, "insseg")
    assert result.exit_code == 0, result.output
    skipped = _report(out)["skipped"]
    assert [s["key"] for s in skipped if s["split"] == "train"] == [f"{2:012d}"]
    assert "not found" in skipped[0]["reason"]


def test_prepare_is_deterministic(dataset):
    tmp_path, params = dataset
    _, out = _run(tmp_path, params, "insseg")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    _, out = _run(tmp_path, params, "insseg")
    assert first == {p.name: p.read_bytes() for p in out.iterdir()}
