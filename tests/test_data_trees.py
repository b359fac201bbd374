"""docs/DATA.md's trees, as downloaded: real NYUv2 and COCO sample files arranged exactly as the BTS/AiT
NYUv2 release (`sync/<scene>/` for training, `official_splits/test/<scene_type>/` for the official test
frames, the BTS list files at the root) and the COCO 2017 release (`train2017/`, `val2017/`,
`annotations/instances_*2017.json`), then `ait prepare` with the params DATA.md gives."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stages.cli import app
from tests.tiny import merge, tiny_params, write_params

FOCAL = "518.8579"


def _nyu_tree(sample: Path, root: Path) -> tuple[int, int]:
    """The BTS/AiT tree under `root` from the sample's real frames; returns (train, test) frame counts."""
    train_lines = []
    for depth in sorted((sample / "sync/metric3d_nyu_demo").glob("sync_depth_*.png")):
        frame = depth.stem.removeprefix("sync_depth_")
        scene = root / "sync/basement_0001a"  # the source does not name its scene folder
        scene.mkdir(parents=True, exist_ok=True)
        shutil.copy(depth, scene / depth.name)
        shutil.copy(depth.with_name(f"rgb_{frame}.jpg"), scene / f"rgb_{frame}.jpg")
        train_lines.append(f"/basement_0001a/rgb_{frame}.jpg /basement_0001a/sync_depth_{frame}.png {FOCAL}")
    # the official test frames: the DenseDepth copies, renamed to their BTS names (the sample's mapping),
    # RGB saved as JPEG as BTS's extraction script writes it
    with (sample / "densedepth/densedepth_to_bts_official_test.csv").open() as f:
        mapping = {row["densedepth_file"]: row for row in csv.DictReader(f)}
    bts_test = (sample / "splits/nyudepthv2_test_files_with_gt.txt").read_text().splitlines()
    kept = []
    for name in sorted(p.name for p in (sample / "densedepth/nyu2_test").glob("*_colors.png")):
        row = mapping[name]
        rgb, depth = (root / "official_splits/test" / row[k] for k in ("bts_official_test_rgb",
                                                                        "bts_official_test_depth"))
        rgb.parent.mkdir(parents=True, exist_ok=True)
        Image.open(sample / "densedepth/nyu2_test" / name).convert("RGB").save(rgb, quality=95)
        shutil.copy(sample / "densedepth/nyu2_test" / name.replace("_colors", "_depth"), depth)
        kept.append(row["bts_official_test_rgb"])
    lines = [line for line in bts_test if line.split()[0] in kept]  # the real list's lines, in its order
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(train_lines) + "\n")
    (root / "nyudepthv2_test_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return len(train_lines), len(lines)


def _coco_tree(sample: Path, root: Path) -> int:
    """COCO 2017's tree; the sample holds val2017 images only, so they stand in for both splits."""
    for split in ("train2017", "val2017"):
        shutil.copytree(sample / "images", root / split)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.copy(sample / "annotations/instances_sample.json", root / f"annotations/instances_{split}.json")
    return len(json.loads((sample / "annotations/instances_sample.json").read_text())["images"])


def test_prepare_reads_the_bts_and_coco_trees_as_downloaded(shared_data, tmp_path):
    train, test = _nyu_tree(shared_data / "nyuv2_sample", tmp_path / "nyu_depth_v2")
    images = _coco_tree(shared_data / "coco_sample", tmp_path / "coco")
    assert (train, test) == (3, 28)
    data = {"tasks": {
        "depth": {"source": "nyuv2", "root": str(tmp_path / "nyu_depth_v2"), "layout": "sync",
                  "train_list": "nyudepthv2_train_files_with_gt.txt",
                  "test_list": "nyudepthv2_test_files_with_gt.txt",
                  "train_dir": "sync", "test_dir": "official_splits/test"},
        "insseg": {"source": "coco", "root": str(tmp_path / "coco"), "train_images": "train2017",
                   "train_json": "annotations/instances_train2017.json", "val_images": "val2017",
                   "val_json": "annotations/instances_val2017.json"}}}
    # the real frames are 480x640: the crops of the stages after prepare must fit them
    crops = {"tokenizer": {"depth": {"train": {"crop_size": 480}}}, "cache": {"depth": {"crop_size": 480}}}
    params = write_params(tmp_path / "params.yaml", merge(tiny_params(tmp_path), {"data": data, **crops}))
    for task in ("depth", "insseg"):
        result = CliRunner().invoke(app, ["prepare", task, "--params", str(params),
                                          "--out", str(tmp_path / "prepared" / task)])
        assert result.exit_code == 0, result.output
    depth = tmp_path / "prepared/depth"
    records = {s: [json.loads(line) for line in (depth / f"{s}.jsonl").read_text().splitlines()]
               for s in ("train", "test")}
    assert [len(records["train"]), len(records["test"])] == [3, 28]
    assert all(Path(r["rgb"]).is_relative_to(tmp_path / "nyu_depth_v2/sync") for r in records["train"])
    assert all(Path(r["rgb"]).is_relative_to(tmp_path / "nyu_depth_v2/official_splits/test")
               for r in records["test"])
    report = json.loads((depth / "report.json").read_text())
    assert report["ok"] and report["skipped"] == [], report
    val = (tmp_path / "prepared/insseg/val.jsonl").read_text().splitlines()
    assert len(val) == images


@pytest.mark.parametrize("key, missing", [("train_dir", "sync_missing"), ("test_dir", "official_splits/val")])
def test_a_split_folder_that_is_not_there_is_one_line(shared_data, tmp_path, key, missing):
    _nyu_tree(shared_data / "nyuv2_sample", tmp_path / "nyu")
    depth = {"source": "nyuv2", "root": str(tmp_path / "nyu"), "train_list": "nyudepthv2_train_files_with_gt.txt",
             "test_list": "nyudepthv2_test_files_with_gt.txt", "train_dir": "sync",
             "test_dir": "official_splits/test", key: missing}
    params = write_params(tmp_path / "params.yaml", merge(tiny_params(tmp_path), {"data": {"tasks": {"depth": depth}}}))
    result = CliRunner().invoke(app, ["prepare", "depth", "--params", str(params), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'nyu' / missing}: split folder not found (the list's " \
                                    "paths are relative to it)"
