"""Bad input never reaches a traceback or a wrong result: one case per mistake a user can make.

Every case runs the real stage command on a tiny project with one thing broken and asserts the outcome
class: `error` (exit 1, one line naming the key or file, printed verbatim, no traceback) or `reported`
(exit 0, the bad sample or annotation listed with its reason in report.json, the rest kept). Cases that
already worked before this matrix existed stay here so that none regresses.

Set AIT_BAD_INPUTS_LOG=<file> to append each case's observed outcome as a JSON line (the table of the
closing note is made from it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from stages.cli import app
from tests.tiny import ROOT, TINY_PIPELINE, merge, tiny_params, write_params

# ------------------------------------------------------------------------------------------------
# the project every case breaks a copy of


@pytest.fixture(scope="module")
def built(tiny_project, tmp_path_factory) -> Path:
    """The tiny demo, prepared, with the depth_mask50 and insseg tokenizers, their caches and a 2-step
    depth solver, all made by the real stage commands."""
    root = tmp_path_factory.mktemp("bad_inputs_base")
    shutil.copytree(tiny_project / "data/demo", root / "data/demo")
    params = write_params(root / "params.yaml", _params(root))
    steps = [["prepare", "depth"], ["prepare", "insseg"]]
    variants = ("depth_mask50", "insseg")
    steps += [["train-tokenizer", v, "--live-dir", str(root / "live" / v)] for v in variants]
    steps += [["cache-tokens", v] for v in ("depth_mask50", "insseg")]
    steps += [["train-solver", "depth", "--live-dir", str(root / "live/solver")]]
    for args in steps:
        device = [] if args[0] == "prepare" else ["--device", "cpu"]
        result = _invoke([*args, "--params", str(params), *device], root)
        assert result.exit_code == 0, result.output
    return root


def _params(root: Path, extra: dict | None = None) -> dict:
    # Tolerant enough that one bad sample of the 9 frames is reported, not fatal.
    base = merge(tiny_params(root, TINY_PIPELINE), {"data": {"max_bad_fraction": 0.2}})
    return merge(base, extra or {})


def _invoke(args: list[str], cwd: Path):
    with pytest.MonkeyPatch.context() as m:
        m.chdir(cwd)
        return CliRunner().invoke(app, args)


@pytest.fixture
def project(built, tmp_path) -> Path:
    """A private copy of the built project (symlinks would let a case break the shared one)."""
    root = tmp_path / "p"
    shutil.copytree(built, root)
    write_params(root / "params.yaml", _params(root))
    return root


# ------------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """Break `project` (`setup` returns the command's arguments), then expect `outcome` and `message`."""

    id: str
    setup: Callable[[Path], list[str]]
    message: str  # verbatim substring of the error line, or of the reason in report.json
    outcome: str = "error"  # "error" | "reported" | "ok"


def _with_params(extra: dict, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", _params(root, extra))
        return list(args)

    return setup


def _raw_params(text: str, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        (root / "params.yaml").write_text(text)
        return list(args)

    return setup


def _edit_params(edit: Callable[[dict], None], *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        params = _params(root)
        edit(params)
        write_params(root / "params.yaml", params)
        return list(args)

    return setup


DEMO = "data/demo"
TRAIN_JSON = f"{DEMO}/coco/annotations/instances_train.json"
VAL_JSON = f"{DEMO}/coco/annotations/instances_val.json"
NYU = f"{DEMO}/nyuv2"


def _edit_json(rel: str, edit: Callable[[dict], None], *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        path = root / rel
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))  # json writes NaN as the NaN token, as a careless tool would
        return list(args)

    return setup


def _first_ann(**fields) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["annotations"][0].update(fields)

    return edit


def _drop_key(key: str) -> Callable[[dict], None]:
    return lambda data: data["annotations"][0].pop(key)


def _edit_file(rel: str, edit: Callable[[Path], None], *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        edit(root / rel)
        return list(args)

    return setup


def _depth(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    Image.fromarray(edit(np.asarray(Image.open(path)).copy())).save(path)


def _zero_eval_crop(d: np.ndarray) -> np.ndarray:
    from pipeline.tasks.depth.metrics import eval_crop

    d[eval_crop(*d.shape)] = 0
    return d


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _resize_pair(root: Path, stem: str) -> None:
    for name, mode in ((f"rgb_{stem}.jpg", "RGB"), (f"sync_depth_{stem}.png", None)):
        path = root / NYU / "room_0000" / name
        im = Image.open(path)
        im.resize((80, 48)).save(path) if mode else Image.fromarray(
            np.resize(np.asarray(im), (48, 80))).save(path)


PREPARE_DEPTH = ("prepare", "depth")
PREPARE_INSSEG = ("prepare", "insseg")
TRAIN_DEPTH_TOK = ("train-tokenizer", "depth_mask50", "--device", "cpu")
CACHE_DEPTH = ("cache-tokens", "depth_mask50", "--device", "cpu")
SOLVER = ("train-solver", "depth", "--device", "cpu")
EVALUATE = ("evaluate", "depth", "--device", "cpu", "--max-images", "1", "--num-panels", "0")
DEPTH_TOK = "models/tokenizer/depth_mask50"
SHARD = "data/tokens/depth_mask50/train/shard-000000.tar"

PARAMS_CASES = [
    Case("params file missing", lambda r: ["prepare", "depth", "--params", "absent.yaml"],
         "absent.yaml: params file not found"),
    Case("params YAML syntax", _raw_params("data: [\n", *PREPARE_DEPTH), "not valid YAML"),
    Case("params unknown key", _with_params({"tokenizer": {"depth": {"train": {"stepz": 3}}}},
                                            *TRAIN_DEPTH_TOK),
         "tokenizer.depth.train.stepz: unknown key"),
    Case("params wrong type", _with_params({"tokenizer": {"depth": {"train": {"steps": "ten"}}}},
                                           *TRAIN_DEPTH_TOK),
         "tokenizer.depth.train.steps: expected int, got str 'ten'"),
    Case("negative batch size", _with_params({"tokenizer": {"depth": {"train": {"batch_size": -1}}}},
                                             *TRAIN_DEPTH_TOK),
         "tokenizer.depth.train.batch_size: must be ≥ 1, got -1"),
    Case("solver steps 0", _with_params({"solver": {"runs": {"depth": {"steps": 0}}}}, *SOLVER),
         "solver.runs.depth.steps: must be ≥ 1, got 0"),
    Case("mask ratio 1.5", _with_params({"tokenizer": {"variants": {"depth_mask50": {"mask_ratio": 1.5}}}},
                                        *TRAIN_DEPTH_TOK),
         "tokenizer.variants.depth_mask50.mask_ratio: must be in [0, 1), got 1.5"),
    Case("codebook of one code", _with_params({"tokenizer": {"depth": {"model": {"num_embeddings": 1}}}},
                                              *TRAIN_DEPTH_TOK),
         "tokenizer.depth.model.num_embeddings: must be ≥ 2, got 1"),
    Case("crop not a multiple of the downsample ratio",
         _with_params({"tokenizer": {"depth": {"train": {"crop_size": 44}}}}, *TRAIN_DEPTH_TOK),
         "tokenizer.depth.train.crop_size: 44 is not a multiple of model.downsample_ratio 8"),
    Case("downsample ratio not a power of two",
         _with_params({"tokenizer": {"depth": {"model": {"downsample_ratio": 6},
                                               "train": {"crop_size": 48}}}},
                      *TRAIN_DEPTH_TOK),
         "tokenizer.depth.model.downsample_ratio: must be a power of two ≥ 2, got 6"),
    Case("max_bad_fraction above 1", _with_params({"data": {"max_bad_fraction": 1.5}}, *PREPARE_DEPTH),
         "data.max_bad_fraction: must be in [0, 1], got 1.5"),
    Case("NaN weight", lambda r: _nan_params(r, *SOLVER), "solver.depth.aux_weight: must be ≥ 0, got nan"),
    Case("negative learning rate", _with_params({"solver": {"runs": {"depth": {"optim": {"lr": -0.1}}}}},
                                                *SOLVER),
         "solver.runs.depth.optim.lr: must be > 0, got -0.1"),
    Case("heads do not divide the width", _with_params({"solver": {"model": {"num_heads": 3}}}, *SOLVER),
         "solver.model.dim: 32 is not divisible by num_heads 3"),
    Case("reversed scale range", _with_params({"solver": {"insseg": {"scale_range": [2.0, 1.0]}}},
                                              "train-solver", "insseg", "--device", "cpu"),
         "solver.insseg.scale_range: lower bound 2.0 is above upper bound 1.0"),
    Case("decoding tau not positive", _with_params({"evaluate": {"depth": {"tau": 0.0}}}, *EVALUATE),
         "evaluate.depth.tau: must be > 0, got 0.0"),
    Case("negative workers", _with_params({"tokenizer": {"insseg": {"train": {"num_workers": -1}}}},
                                          "train-tokenizer", "insseg"),
         "tokenizer.insseg.train.num_workers: must be ≥ 0, got -1"),
    Case("cache crop stride 0", _with_params({"cache": {"depth": {"crop_stride": 0}}}, *CACHE_DEPTH),
         "cache.depth.crop_stride: must be ≥ 1, got 0"),
    Case("no training scene in the demo", _with_params({"data": {"demo": {"test_scenes": 3}}},
                                                       "data", "demo", "--out", "demo2"),
         "data.demo.test_scenes: 3 leaves no training scene of num_scenes 3"),
    Case("solver depth variant is not a depth variant",
         _with_params({"tokenizer": {"solver_variants": {"depth": "insseg"}}}, *SOLVER),
         "tokenizer.solver_variants.depth: 'insseg' is not a depth variant of tokenizer.variants "
         "(depth variants: depth_mask0, depth_mask50)"),
    Case("solver depth variant missing",
         _with_params({"tokenizer": {"solver_variants": {"depth": "depth_mask99"}}}, *SOLVER),
         "tokenizer.solver_variants.depth: 'depth_mask99' is not a depth variant"),
    Case("no tokenizer variants", _edit_params(lambda p: p["tokenizer"].update(variants={}), *SOLVER),
         "(depth variants: none)"),
    Case("run names an unknown task", _with_params({"solver": {"runs": {"depth": {"tasks": ["panoptic"]}}}},
                                                   *SOLVER),
         "solver.runs.depth.tasks[0]: expected one of ['depth', 'insseg', 'semseg'], got 'panoptic'"),
    Case("batch sizes for other tasks", _edit_params(
        lambda p: p["solver"]["runs"]["depth"].update(batch_size={"insseg": 2}), *SOLVER),
         "solver.runs.depth.batch_size: keys ['insseg'] must match tasks ['depth']"),
]

DATA_CASES = [
    Case("NaN bbox", _edit_json(TRAIN_JSON, _first_ann(bbox=[math.nan, 16.0, 19.0, 20.0]), *PREPARE_INSSEG),
         "bbox must be 4 finite numbers [x, y, w, h], got [nan, 16.0, 19.0, 20.0]", "reported"),
    Case("infinite bbox", _edit_json(TRAIN_JSON, _first_ann(bbox=[45.0, 16.0, math.inf, 20.0]),
                                     *PREPARE_INSSEG),
         "bbox must be 4 finite numbers", "reported"),
    Case("negative-width bbox", _edit_json(TRAIN_JSON, _first_ann(bbox=[45.0, 16.0, -19.0, 20.0]),
                                           *PREPARE_INSSEG),
         "empty bbox [45.0, 16.0, -19.0, 20.0]", "reported"),
    Case("bbox outside the image", _edit_json(TRAIN_JSON, _first_ann(bbox=[60.0, 16.0, 19.0, 20.0]),
                                              *PREPARE_INSSEG),
         "bbox [60.0, 16.0, 19.0, 20.0] outside the 64x48 image", "reported"),
    Case("empty segmentation", _edit_json(TRAIN_JSON, _first_ann(segmentation=[]), *PREPARE_INSSEG),
         "empty segmentation", "reported"),
    Case("segmentation without pixels", _edit_json(
        TRAIN_JSON, _first_ann(segmentation=[[45.0, 16.0, 45.0, 16.0, 45.0, 16.0]]), *PREPARE_INSSEG),
         "segmentation covers no pixel", "reported"),
    Case("unreadable segmentation", _edit_json(TRAIN_JSON, _first_ann(segmentation={"counts": 5}),
                                               *PREPARE_INSSEG),
         "unreadable segmentation", "reported"),
    Case("unknown category", _edit_json(TRAIN_JSON, _first_ann(category_id=999), *PREPARE_INSSEG),
         "unknown category_id 999", "reported"),
    Case("crowd flag 2", _edit_json(TRAIN_JSON, _first_ann(iscrowd=2), *PREPARE_INSSEG),
         "iscrowd must be 0 or 1, got 2", "reported"),
    Case("annotation without area", _edit_json(TRAIN_JSON, _drop_key("area"), *PREPARE_INSSEG),
         "area must be a finite number >= 0, got None", "reported"),
    Case("annotation without id", _edit_json(TRAIN_JSON, _drop_key("id"), *PREPARE_INSSEG),
         "instances_train.json: annotations record with id None: ids must be integers"),
    Case("annotation with a text id", _edit_json(TRAIN_JSON, _first_ann(id="a1"), *PREPARE_INSSEG),
         "instances_train.json: annotations record with id 'a1': ids must be integers"),
    Case("duplicate annotation id", _edit_json(TRAIN_JSON, _first_ann(id=2), *PREPARE_INSSEG),
         "instances_train.json: duplicate annotations id 2"),
    Case("image without width", _edit_json(TRAIN_JSON, lambda d: d["images"][0].pop("width"),
                                           *PREPARE_INSSEG),
         "image 1 needs positive integer width and height", "reported"),
    Case("image file missing", _edit_file(f"{NYU}/room_0000/rgb_00000.jpg", Path.unlink, *PREPARE_INSSEG),
         "image file not found", "reported"),
    Case("annotations of a skipped image", _edit_file(f"{NYU}/room_0000/rgb_00000.jpg", Path.unlink,
                                                      *PREPARE_INSSEG),
         "its image is skipped: ", "reported"),
    Case("annotation of no image", _edit_json(TRAIN_JSON, _first_ann(image_id=999999), *PREPARE_INSSEG),
         "image_id 999999 is not the id of an image of the json", "reported"),
    Case("annotation without image_id", _edit_json(TRAIN_JSON, _drop_key("image_id"), *PREPARE_INSSEG),
         "no image_id", "reported"),
    Case("annotation without category_id", _edit_json(TRAIN_JSON, _drop_key("category_id"), *PREPARE_INSSEG),
         "no category_id", "reported"),
    Case("polygon of two points", _edit_json(TRAIN_JSON, _first_ann(segmentation=[[45.0, 16.0, 50.0, 20.0]]),
                                             *PREPARE_INSSEG),
         "a polygon needs 3 or more points", "reported"),
    Case("RLE of another size", _edit_json(TRAIN_JSON, _first_ann(segmentation={"size": [64, 48],
                                                                               "counts": [3072]}),
                                           *PREPARE_INSSEG),
         "RLE size [64, 48] is not the image's [height, width] [48, 64]", "reported"),
    Case("duplicate category id", _edit_json(TRAIN_JSON, lambda d: d["categories"].append(d["categories"][0]),
                                             *PREPARE_INSSEG),
         "instances_train.json: duplicate categories id"),
    Case("category without a name", _edit_json(TRAIN_JSON, lambda d: d["categories"][0].pop("name"),
                                               *PREPARE_INSSEG),
         "has no name"),
    Case("image truncated", _edit_file(f"{NYU}/room_0000/rgb_00001.jpg", _truncate, *PREPARE_INSSEG),
         "cannot decode image", "reported"),
    Case("no categories", _edit_json(VAL_JSON, lambda d: d.update(categories=[]), *PREPARE_INSSEG),
         "instances_val.json: categories differ from the train json's"),
    Case("category list without any instance",
         _edit_json(VAL_JSON, lambda d: d.update(annotations=[]), *PREPARE_INSSEG),
         "prepare insseg: val: no usable annotation in 3 images"),
    Case("annotation json not JSON", _edit_file(TRAIN_JSON, lambda p: p.write_text("{"), *PREPARE_INSSEG),
         "instances_train.json: not valid JSON"),
    Case("all-zero depth map", _edit_file(f"{NYU}/room_0000/sync_depth_00000.png",
                                          lambda p: _depth(p, np.zeros_like), *PREPARE_DEPTH),
         "sync_depth_00000.png: no valid depth pixel (all holes or out of range)", "reported"),
    Case("no valid depth in the evaluation crop", _edit_file(
        f"{NYU}/room_0002/sync_depth_00000.png", lambda p: _depth(p, _zero_eval_crop), *PREPARE_DEPTH),
         "sync_depth_00000.png: no valid depth pixel inside the evaluation crop", "reported"),
    Case("depth size differs from RGB", _edit_file(
        f"{NYU}/room_0000/sync_depth_00001.png", lambda p: _depth(p, lambda d: d[:40]), *PREPARE_DEPTH),
         "depth is 64x40 but RGB is 64x48", "reported"),
    Case("depth PNG truncated", _edit_file(f"{NYU}/room_0000/sync_depth_00002.png", _truncate,
                                           *PREPARE_DEPTH),
         "sync_depth_00002.png", "reported"),
    Case("one frame of another size", _edit_file(".", lambda r: _resize_pair(r, "00000"), *PREPARE_DEPTH),
         "frame 80x48 differs from the dataset's 64x48 (the token cache needs one size)", "reported"),
    Case("tokenizer crop larger than the frames",
         _with_params({"tokenizer": {"depth": {"train": {"crop_size": 56}}}}, *PREPARE_DEPTH),
         "too many bad samples, samples: 100.0% bad"),
    Case("solver crop is not the frame height",
         _with_params({"cache": {"depth": {"crop_size": 40}}}, *PREPARE_DEPTH),
         "too many bad samples, samples: 100.0% bad"),
    Case("empty test split", _edit_file(f"{NYU}/test_files_with_gt.txt", lambda p: p.write_text(""),
                                        *PREPARE_DEPTH),
         "prepare depth: test: no usable sample (0 listed)"),
    Case("no usable depth sample", _edit_file(NYU, lambda d: [p.unlink() for p in d.glob("*/sync_depth_*")],
                                              *PREPARE_DEPTH),
         "too many bad samples, samples: 100.0% bad"),
    Case("list file with one column", _edit_file(f"{NYU}/train_files_with_gt.txt",
                                                 lambda p: p.write_text("room_0000/rgb_00000.jpg\n"),
                                                 *PREPARE_DEPTH),
         "train_files_with_gt.txt:1: expected 2 or 3 columns (rgb depth [focal]), got 1"),
    Case("bracketed text in a message", _edit_file(
        f"{NYU}/train_files_with_gt.txt",
        lambda p: p.write_text("room_0000/rgb_00000.jpg room_0000/sync_depth_00000.png [focal]\n"),
        *PREPARE_DEPTH),
         "train_files_with_gt.txt:1: focal '[focal]' is not a positive number of pixels"),
    Case("dataset root missing", _with_params({"data": {"tasks": {"insseg": {"root": "absent"}}}},
                                              *PREPARE_INSSEG),
         "absent: dataset root not found"),
]


def _garbage(path: Path) -> None:
    path.write_bytes(b"\0garbage" * 64)


def _zero_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1024:4096] = bytes(3072)  # same size, other bytes: only the sha256 can tell
    path.write_bytes(bytes(data))


def _edit_config(rel: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / rel / "config.json"
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))

    return setup


def _no_annotations(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**row, "annotations": []}) + "\n" for row in rows))


def _largest_zarr_file(root: Path) -> Path:
    """The largest token chunk of the depth cache's zarr store (not its zarr.json metadata)."""
    files = (root / "data/tokens/depth_mask50/tokens.zarr").rglob("*")
    chunks = [p for p in files if p.is_file() and p.suffix != ".json"]
    return max(chunks, key=lambda p: (p.stat().st_size, str(p)))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))


def _foreign_cache(root: Path) -> None:
    shutil.rmtree(root / "data/tokens/depth_mask50")
    shutil.copytree(root / "data/tokens/insseg", root / "data/tokens/depth_mask50")


def _then(edit: Callable[[Path], None], *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        edit(root)
        return list(args)

    return setup


def _nan_params(root: Path, *args: str) -> list[str]:
    text = yaml.safe_dump(_params(root), sort_keys=False)
    (root / "params.yaml").write_text(text.replace("aux_weight: 1.0", "aux_weight: .nan", 1))
    return list(args)


def _garbage_backbone(root: Path, *args: str) -> list[str]:
    _garbage(root / "backbone.safetensors")
    weights = {"solver": {"backbone": {"init": "checkpoint", "weights": str(root / "backbone.safetensors")}}}
    write_params(root / "params.yaml", _params(root, weights))
    return list(args)


ARTIFACT_CASES = [
    Case("tokenizer config.json corrupt", _edit_file(f"{DEPTH_TOK}/config.json", lambda p: p.write_text("{"),
                                                     *CACHE_DEPTH),
         "config.json: unreadable checkpoint config (JSONDecodeError); re-run `dvc repro train_tokenizer`"),
    Case("tokenizer config.json missing", _edit_file(f"{DEPTH_TOK}/config.json", Path.unlink, *CACHE_DEPTH),
         "config.json: checkpoint config not found; re-run `dvc repro train_tokenizer`"),
    Case("tokenizer config.json of another code", _then(
        _edit_config(DEPTH_TOK, lambda c: c["architecture"].update(width=3)), *CACHE_DEPTH),
         "does not describe a model this code can build (TypeError"),
    Case("tokenizer weights garbage", _edit_file(f"{DEPTH_TOK}/model.safetensors", _garbage, *CACHE_DEPTH),
         "the checkpoint is corrupt, re-run `dvc repro train_tokenizer`"),
    Case("tokenizer weights missing", _edit_file(f"{DEPTH_TOK}/model.safetensors", Path.unlink, *CACHE_DEPTH),
         "model.safetensors: checkpoint weights not found; re-run `dvc repro train_tokenizer`"),
    Case("tokenizer config.json metadata edited", _then(
        _edit_config(DEPTH_TOK, lambda c: c.update(mask_ratio=0.0)), *CACHE_DEPTH),
         "does not match config.json"),
    Case("tokenizer of another variant", _then(
        _edit_config(DEPTH_TOK, lambda c: c.update(variant="depth_mask0")), *CACHE_DEPTH),
         "checkpoint is tokenizer variant 'depth_mask0', not 'depth_mask50'"),
    Case("solver config.json corrupt", _edit_file("models/solver/depth/config.json",
                                                  lambda p: p.write_text("[]"), *EVALUATE),
         "config.json: not a checkpoint config (no architecture or content_hash); "
         "re-run `dvc repro train_solver`"),
    Case("solver weights garbage", _edit_file("models/solver/depth/model.safetensors", _garbage, *EVALUATE),
         "the checkpoint is corrupt, re-run `dvc repro train_solver`"),
    Case("backbone weights garbage", lambda r: _garbage_backbone(r, *SOLVER),
         "backbone.safetensors: unreadable backbone checkpoint (SafetensorError)"),
    Case("cache shard zeroed, training", _edit_file(SHARD, _zero_middle, *SOLVER),
         "shard-000000.tar: sha256 differs from the manifest's"),
    Case("cache shard zeroed, inspect --verify", _edit_file(SHARD, _zero_middle, "inspect", "cache",
                                                            "data/tokens/depth_mask50", "--verify"),
         "shard-000000.tar: sha256 differs from the manifest's"),
    Case("intact cache, inspect --verify", _then(lambda r: None, "inspect", "cache", "--json", "--verify",
                                                 "data/tokens/depth_mask50"),
         '"not_verified": "manifest.json itself', "ok"),
    Case("zarr chunk modified, inspect --verify", _then(lambda r: _flip_a_byte(_largest_zarr_file(r)),
                                                        "inspect", "cache", "data/tokens/depth_mask50",
                                                        "--verify"),
         "sha256 differs from the manifest's (the zarr file was modified or corrupted)"),
    Case("zarr file deleted, training", _then(lambda r: _largest_zarr_file(r).unlink(), *SOLVER),
         "zarr file missing or not"),
    Case("cache shard truncated", _edit_file(SHARD, _truncate, *SOLVER), "shard missing or not"),
    Case("cache manifest missing", _edit_file("data/tokens/depth_mask50/manifest.json", Path.unlink, *SOLVER),
         "not a complete token cache (no manifest.json"),
    Case("cache of another variant, training", _then(_foreign_cache, *SOLVER),
         "manifest.json: cache of variant 'insseg', expected 'depth_mask50'"),
    Case("cache of another variant, inspect", _then(_foreign_cache, "inspect", "cache",
                                                    "data/tokens/depth_mask50"),
         "warning: data/tokens/depth_mask50 holds the cache of variant 'insseg', not 'depth_mask50'", "ok"),
    Case("cache of another tokenizer", _edit_json("data/tokens/depth_mask50/manifest.json",
                                                  lambda m: m["tokenizer"].update(hash="0" * 16), *SOLVER),
         "cache was built with tokenizer 0000000000000000, but models/tokenizer/depth_mask50 is"),
    Case("prepared split without instances", _edit_file("data/prepared/insseg/train.jsonl", _no_annotations,
                                                        "train-tokenizer", "insseg", "--device", "cpu"),
         "train.jsonl: no training sample for the insseg tokenizer; re-run `dvc repro prepare`"),
    Case("prepared manifest missing", _edit_file("data/prepared/depth/train.jsonl", Path.unlink,
                                                 *TRAIN_DEPTH_TOK),
         "train.jsonl: prepared manifest not found (run `dvc repro prepare`)"),
]

ABLATIONS = str(ROOT / "ablations.yaml")


def _file(rel: str, text: str, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        return list(args)

    return setup


def _bracket_cache(root: Path) -> None:
    shutil.copytree(root / "data/tokens/depth_mask50", root / "data/tokens/[bold]x")


def _preset(text: str) -> Callable[[Path], list[str]]:
    return _file("p.yaml", text, "preset", "p.yaml")


def _ablate(*args: str) -> Callable[[Path], list[str]]:
    return lambda root: ["ablate", *args, "--ablations", ABLATIONS]


# the commands that are not stages: presets, ablations, reports, summaries, inspection
CLI_CASES = [
    Case("preset file missing", lambda r: ["preset", "absent.yaml"], "absent.yaml: preset file not found"),
    Case("preset YAML syntax", _preset("base: [\n"), "p.yaml: not valid YAML"),
    Case("preset top level a list", _preset("- base\n"),
         "p.yaml: expected a non-empty mapping of params sections, got list"),
    Case("preset mapping over a value", _preset("base: {seed: {x: 1}}\n"),
         "base.seed: a mapping over the value"),
    Case("preset empty mapping", _preset("solver: {runs: {}}\n"),
         "solver.runs: an empty mapping changes nothing under dvc's -S merge"),
    Case("preset backslash in a value", _preset("data: {tasks: {depth: {root: 'C:\\\\nyu'}}}\n"),
         "has a backslash, which dvc's -S grammar doubles"),
    Case("preset non-ASCII value", _preset("data: {tasks: {depth: {root: données}}}\n"),
         '-S data.tasks.depth.root="données"', "ok"),
    Case("ablate table not ASCII digits", _ablate("²", "--dry-run"), "unknown table '²'"),
    Case("report table not ASCII digits", lambda r: ["report", "²", "--ablations", ABLATIONS],
         "unknown table '²'"),
    Case("ablations YAML syntax", _file("a.yaml", "tables: [\n", "ablate", "1", "--dry-run", "--ablations",
                                        "a.yaml"), "a.yaml: not valid YAML"),
    Case("ablate -S value out of range", _ablate("1", "--dry-run", "-S", "tokenizer.depth.train.steps=-5"),
         "tokenizer.depth.train.steps: must be ≥ 1, got -5"),
    Case("ablate --timings without --run", _ablate("1", "--timings", "t.json"),
         "--timings: only --run measures rows"),
    Case("summary over a corrupt metrics.json", _file("results/evaluate/depth/metrics.json", "{", "summary"),
         "metrics.json: not a readable stage output (JSONDecodeError)"),
    Case("inspect a cache whose path reads as markup",
         _then(_bracket_cache, "inspect", "cache", "data/tokens/[bold]x"), "data/tokens/[bold]x:", "ok"),
]



def _params_plus(text: str, *args: str) -> Callable[[Path], list[str]]:
    """params.yaml as written by the fixture, with `text` appended."""
    def setup(root: Path) -> list[str]:
        write_params(root / "params.yaml", _params(root))
        with open(root / "params.yaml", "a") as f:
            f.write(text)
        return list(args)

    return setup


def _everything_far(path: Path) -> None:
    for depth in path.glob("*/sync_depth_*.png"):
        if depth.name.endswith("00000.png") and depth.parent.name == "room_0000":
            _depth(depth, lambda d: np.full_like(d, 12000))  # 12 m: beyond the valid range


def _mkdir_with(rel: str, name: str, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / name).write_text("keep me\n")
        return list(args)

    return setup


def _train_frame_in_test(root: Path) -> None:
    first = (root / NYU / "train_files_with_gt.txt").read_text().splitlines()[0]
    with open(root / NYU / "test_files_with_gt.txt", "a") as f:
        f.write(first + "\n")


# What the audit of docs/INPUTS.md found: one case per defect it fixed.
AUDIT_CASES = [
    Case("params key written twice", _params_plus("base:\n  seed: 1\n", *PREPARE_DEPTH),
         "base: the key is written twice in one mapping; keep one"),
    Case("params exponent without a dot", _params_plus("extra: 5e-05\n", *PREPARE_DEPTH),
         "extra: '5e-05' reads as text in YAML 1.1 (the stages) but as a number in YAML 1.2 (DVC)"),
    Case("params octal-looking integer", _params_plus("extra: 010\n", *PREPARE_DEPTH),
         "'010' reads as an octal number in YAML 1.1"),
    Case("preset YAML 1.1 boolean", _preset("solver: {runs: {depth: {parallel: on}}}\n"),
         "solver.runs.depth.parallel: 'on' reads as a boolean in YAML 1.1 (the stages) but as text in "
         "YAML 1.2 (DVC)"),
    Case("variant name with a dash", _edit_params(
        lambda p: p["tokenizer"]["variants"].update({"depth-b": p["tokenizer"]["variants"]["depth_mask50"]}),
        "train-tokenizer", "depth-b", "--device", "cpu"),
         "'depth-b' is not a usable name"),
    Case("depth beyond 10 m", _edit_file(NYU, _everything_far, *PREPARE_DEPTH),
         "sync_depth_00000.png: no valid depth pixel (all holes or out of range)", "reported"),
    Case("focal nan", _edit_file(f"{NYU}/train_files_with_gt.txt", lambda p: p.write_text(
        "room_0000/rgb_00000.jpg room_0000/sync_depth_00000.png nan\n"), *PREPARE_DEPTH),
         "train_files_with_gt.txt:1: focal 'nan' is not a positive number of pixels"),
    Case("--out is a file", _file("notes.txt", "keep me\n", *PREPARE_DEPTH, "--out", "notes.txt"),
         "notes.txt: is a file, and this output is a folder"),
    Case("--out under a file", _file("notes.txt", "keep me\n", *PREPARE_DEPTH, "--out", "notes.txt/depth"),
         "notes.txt: is a file, so notes.txt/depth cannot be created under it"),
    Case("--out the working directory", lambda r: [*PREPARE_DEPTH, "--out", "."],
         ".: an output folder is replaced whole, and this one holds the working directory"),
    Case("--live-dir holding a project", _mkdir_with("other", "dvc.yaml", *TRAIN_DEPTH_TOK, "--live-dir",
                                                     "other"),
         "other: holds dvc.yaml, so it is a project, not an output of this command"),
    Case("--state-dir a file", _file("state.txt", "keep me\n", *SOLVER, "--state-dir", "state.txt"),
         "state.txt: is a file, and this output is a folder"),
    Case("resumable state unreadable", _file("checkpoints/solver/depth/state.pt", "garbage", *SOLVER),
         "state.pt: not a resumable state this command can read (UnpicklingError); delete it"),
    Case("--num-panels negative", lambda r: [*EVALUATE[:-1], "-1"], "--num-panels: must be ≥ 0, got -1"),
    Case("--max-images negative", lambda r: ["evaluate", "depth", "--device", "cpu", "--max-images", "-2"],
         "--max-images: must be ≥ 0, got -2"),
    Case("--device unknown", lambda r: [*TRAIN_DEPTH_TOK[:-1], "gpu"],
         "--device: 'gpu' is not a device this project runs on: cpu, cuda or cuda:N"),
    Case("--device a GPU that is not there", lambda r: [*TRAIN_DEPTH_TOK[:-1], "cuda:99"],
         "--device: 'cuda:99' asked for, but"),
    Case("bbox of another place than its mask", _edit_json(
        TRAIN_JSON, _first_ann(bbox=[30.0, 16.0, 19.0, 20.0]), *PREPARE_INSSEG),
         "bbox [30.0, 16.0, 19.0, 20.0] is not the box of its segmentation", "reported"),
    Case("a training frame listed for test too", _then(_train_frame_in_test, *PREPARE_DEPTH),
         "also in the train split (a test frame must be one the model never trained on)", "reported"),
    Case("report over an exp show of non-objects", _file("e.json", "[1, 2]", "report", "1", "--json-file",
                                                         "e.json", "--ablations", ABLATIONS),
         "e.json: item 0 is not a commit as `dvc exp show --json` writes it"),
    Case("eval-tokenizer of another variant's checkpoint", _then(
        _edit_config(DEPTH_TOK, lambda c: c.update(variant="depth_mask0")), "eval-tokenizer", "depth_mask50",
        "--device", "cpu"),
         "checkpoint is tokenizer variant 'depth_mask0', not 'depth_mask50'"),
]

CASES = PARAMS_CASES + DATA_CASES + ARTIFACT_CASES + CLI_CASES + AUDIT_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_or_a_reported_skip(case, project):
    args = case.setup(project)
    if "--params" not in args and args[0] not in ("inspect", "report", "summary"):
        args += ["--params", str(project / "params.yaml")]
    result = _invoke(args, project)
    outcome = _outcome(result, project, case)
    _log(case, result, outcome)
    assert "Traceback" not in result.output, result.output
    assert outcome == case.outcome, result.output + "".join(traceback.format_exception(result.exception))
    if case.outcome == "error":
        line = _error_line(result.stderr)
        assert case.message in line, result.stderr  # verbatim: nothing eaten as markup
    elif case.outcome == "reported":
        reasons = [row["reason"] for row in _report_rows(project, args[1])]
        assert any(case.message in reason for reason in reasons), reasons
    else:
        assert case.message in result.output


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _report_rows(root: Path, task: str) -> list[dict]:
    report = json.loads((root / "data/prepared" / task / "report.json").read_text())
    return report["skipped"] + report["dropped_annotations"]


def _outcome(result, root: Path, case: Case) -> str:
    if not isinstance(result.exception, (SystemExit, type(None))):
        return "traceback"
    if result.exit_code != 0:
        return "error" if any(line.startswith("error: ") for line in result.stderr.splitlines()) else "other"
    return "reported" if _newly_reported(root, case) else "ok"


def _newly_reported(root: Path, case: Case) -> bool:
    for task in ("depth", "insseg"):
        report = root / "data/prepared" / task / "report.json"
        if report.is_file() and any(case.message in row["reason"] for row in _report_rows(root, task)):
            return True
    return False


def _log(case: Case, result, outcome: str) -> None:
    path = os.environ.get("AIT_BAD_INPUTS_LOG")
    if path:
        text = result.output.strip().splitlines()
        last = next((line for line in reversed(text) if line.startswith("error: ")), text[-1] if text else "")
        if not isinstance(result.exception, (SystemExit, type(None))):
            last = f"{type(result.exception).__name__}: {str(result.exception).splitlines()[0][:150]}"
        with open(path, "a") as f:
            f.write(json.dumps({"case": case.id, "outcome": outcome, "line": last[:220]}) + "\n")


# ------------------------------------------------------------------------------------------------
# what CliRunner cannot see: worker processes, signals


def test_dataloader_workers_stay_quiet_after_an_error(built, tmp_path):
    """A sample that fails inside a DataLoader worker is one line; the workers exit without noise."""
    root = tmp_path / "p"
    shutil.copytree(built, root)
    params = write_params(root / "params.yaml", _params(root, {"tokenizer": {"depth": {"train": {
        "num_workers": 2}}}}))
    assert _invoke(["prepare", "depth", "--params", str(params)], root).exit_code == 0  # records point here
    rows = [json.loads(line) for line in (root / "data/prepared/depth/train.jsonl").read_text().splitlines()]
    for row in rows:
        Path(row["depth"]).unlink(missing_ok=True)  # the prepared records now point at nothing
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "train-tokenizer", "depth_mask50", "--device",
                           "cpu", "--params", str(root / "params.yaml")], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "meta_path" not in proc.stderr, proc.stderr
    assert "sync_depth_" in _error_line(proc.stderr), proc.stderr  # the file, not the worker's traceback


def test_what_the_operating_system_refuses_is_one_line(project):
    """A folder the system will not create (here under /proc) ends in one line naming the path, never a
    traceback: as root the check at start passes and the write itself fails; as another user the check
    at start says the parent is not writable."""
    args = [*PREPARE_DEPTH, "--out", "/proc/ait-test/depth", "--params", str(project / "params.yaml")]
    result = _invoke(args, project)
    assert "Traceback" not in result.output and result.exit_code == 1, result.output
    assert _error_line(result.stderr).startswith("error: /proc"), result.stderr
