"""cache_tokens@* on the tiny demo with tiny trained tokenizers: exact round trip, determinism, refusal
of a failed build, a 2-process (gloo) build equal to the 1-process one, and the solver's training
targets read back from these caches checked against the ground truth of the same augmented view."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.io import read_jsonl
from pipeline.core.params import load_all
from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres, read_rgb
from pipeline.geometry.views import View, dense_views, extract_views, nearest_view, view_offsets
from pipeline.jobs import train_solver as solver_run
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.tasks.insseg.masks import crop_instance_mask, flip_crop
from pipeline.tasks.insseg.tokenizer import instance_index
from pipeline.tasks.registry import get_task
from pipeline.token_cache.build import CACHE_THREADS
from pipeline.token_cache.manifest import SCHEMA_VERSION, CacheError
from pipeline.token_cache.read import Sampling, ZarrTokens, decode_sample, open_cache, token_pipeline
from stages.cli import app
from tests.tiny import tiny_params, write_params

# The tiny demo frames are 48x64: the solver crop is the full height, offsets 0, 8, 16 (x 2 flips).
CACHE = {"depth": {"crop_size": 48, "crop_stride": 8, "shard_max_samples": 2, "batch_size": 16},
         "insseg": {"shard_max_samples": 2, "batch_size": 16}}
VARIANTS = {"depth_mask50": "depth", "insseg": "insseg"}


def _invoke(args: list[str], cwd: Path) -> None:
    # Run outside any git/DVC repository, as a stage would in a fresh project directory.
    with pytest.MonkeyPatch.context() as m:
        m.chdir(cwd)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def build(project: Path, variant: str, models: Path, out: Path, params: Path | None = None) -> Path:
    _invoke(["cache-tokens", variant, "--params", str(params or project / "cache_params.yaml"),
             "--prepared", str(project / "data/prepared"), "--model-dir", str(models / variant),
             "--out", str(out), "--device", "cpu"], out.parent)
    return out


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory) -> Path:
    """The tiny project plus cache params for its 48x64 frames and the two trained tiny tokenizers."""
    root = tmp_path_factory.mktemp("cache_project")
    for name in ("data",):
        (root / name).symlink_to(tiny_project / name)
    params = write_params(root / "cache_params.yaml", tiny_params(tiny_project, {"cache": CACHE}))
    for variant in VARIANTS:
        _invoke(["train-tokenizer", variant, "--params", str(params), "--prepared",
                 str(root / "data/prepared"), "--out", str(root / "models" / variant),
                 "--live-dir", str(root / "live" / variant), "--device", "cpu"], root)
    return root


@pytest.fixture(scope="module")
def caches(project) -> Path:
    out = project / "tokens"
    out.mkdir()
    for variant in VARIANTS:
        build(project, variant, project / "models", out / variant)
    return out


def _read_all(path: Path, split: str) -> list[dict]:
    """Every sample of `split` through the training pipeline, in shard order (no shuffle)."""
    decode = functools.partial(decode_sample, fields=get_task(open_cache(path).task).cache_fields)
    return [s for batch in token_pipeline(path, split, Sampling(1, shuffle=0, world_size=1), decode)
            for s in batch]


def _model(project: Path, variant: str) -> VQVAE:
    return load_vqvae(project / "models" / variant)[0]


def test_depth_round_trip_is_exact(project, caches):
    path = caches / "depth_mask50"
    expected = checkpoint.read_config(project / "models/depth_mask50")["content_hash"]
    info = open_cache(path, expected_hash=expected)
    views = dense_views(48, 64, 48, 8)
    assert [View(bool(v["flip"]), v["x"]) for v in info.manifest["views"]["list"]] == views
    model = _model(project, "depth_mask50")
    for split in ("train", "test"):
        records = sorted(read_jsonl(project / f"data/prepared/depth/{split}.jsonl"), key=lambda r: r["key"])
        samples, zarr_tokens = _read_all(path, split), ZarrTokens(path, split)
        assert [s["key"] for s in samples] == zarr_tokens.keys == [r["key"] for r in records]
        for i, (sample, record) in enumerate(zip(samples, records, strict=True)):
            assert sample["tokens"].dtype == np.uint8 and sample["tokens"].shape == (len(views), 6, 6)
            np.testing.assert_array_equal(sample["tokens"], zarr_tokens[i])
            crops = extract_views(read_depth_metres(record["depth"]), views, 48)
            expected = model.encode(torch.from_numpy(crops)[:, None]).numpy()
            np.testing.assert_array_equal(sample["tokens"], expected)
            np.testing.assert_array_equal(sample["depth"], read_depth_metres(record["depth"]))
        shard = path / info.manifest["splits"][split]["shards"][0]["path"]
        assert Path(records[0]["rgb"]).read_bytes() in shard.read_bytes()  # the stored bytes, as is


def test_insseg_round_trip_is_exact(project, caches):
    path = caches / "insseg"
    manifest = open_cache(path).manifest
    model = _model(project, "insseg")
    assert manifest["mask_crop_size"] == 64 and manifest["tokens_shape"] == [2, 16]
    assert {c["name"] for c in manifest["categories"]} >= {"chair"}
    for split in ("train", "val"):
        records = sorted(read_jsonl(project / f"data/prepared/insseg/{split}.jsonl"), key=lambda r: r["key"])
        samples, zarr_tokens = _read_all(path, split), ZarrTokens(path, split)
        assert [s["key"] for s in samples] == zarr_tokens.keys == [r["key"] for r in records]
        total = encoded = 0
        for i, (sample, record) in enumerate(zip(samples, records, strict=True)):
            ann = sample["annotations"]
            kept = [record["annotations"][a] for _, a in instance_index([record])]
            assert ann["token_ann_ids"] == [a["id"] for a in kept] == zarr_tokens.ann_ids(i).tolist()
            assert ann["ann_ids"] == [a["id"] for a in record["annotations"]]
            np.testing.assert_array_equal(sample["tokens"], zarr_tokens[i])
            crops = []
            for a in kept:
                crop = crop_instance_mask(segmentation_to_mask(a["segmentation"], record["height"],
                                                               record["width"]), a["bbox"], 64)
                crops += [crop, flip_crop(crop)]
            if crops:  # an image without a tokenisable instance stores an empty (0, 2, 16) block
                expected = model.encode(torch.from_numpy(np.stack(crops))[:, None]).numpy().reshape(-1, 2, 16)
                np.testing.assert_array_equal(sample["tokens"], expected)
                encoded += 1
            else:
                assert sample["tokens"].shape == (0, 2, 16)
            total += len(kept)
        assert encoded >= len(records) // 2  # the encode reference above ran on most images of the split
        counts = manifest["splits"][split]
        assert counts["tokenised_instances"] == total == int(zarr_tokens.offsets[-1])
        assert counts["instances"] == sum(len(r["annotations"]) for r in records)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_builds_are_byte_identical(project, caches, variant, tmp_path):
    # The second build decodes with 2 DataLoader workers: worker count must not change any byte.
    params = tiny_params(project, {"cache": CACHE})
    params["cache"][VARIANTS[variant]]["num_workers"] = 2
    again = build(project, variant, project / "models", tmp_path / variant,
                  write_params(tmp_path / "params.yaml", params))
    first = caches / variant
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert any(str(f).endswith(".tar") for f in files) and any("tokens.zarr" in str(f) for f in files)
    for f in files:  # shards, every zarr chunk/metadata file and the manifest
        assert (first / f).read_bytes() == (again / f).read_bytes(), f
    assert json.loads((first / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cache_bytes_do_not_depend_on_the_thread_count(project, caches, variant, tmp_path, monkeypatch):
    # oneDNN splits convolutions by thread count: without a fixed count, near-tied codes flip between
    # machines with different core counts (5 of 518,400 demo tokens between 1 and 2 threads).
    seen = []
    real_encode = VQVAE.encode

    def spy(self, x):
        seen.append(torch.get_num_threads())
        return real_encode(self, x)

    monkeypatch.setattr(VQVAE, "encode", spy)
    ambient = 1 if torch.get_num_threads() > 1 else 3  # the fixture's caches: the machine default
    torch.set_num_threads(ambient)
    again = build(project, variant, project / "models", tmp_path / variant)
    assert seen and set(seen) == {CACHE_THREADS} and torch.get_num_threads() == ambient  # fixed inside
    first = caches / variant
    for f in sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file()):
        assert (first / f).read_bytes() == (again / f).read_bytes(), f


def test_next_build_removes_the_scratch_of_a_killed_one(project, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a process that has exited
    stale = tmp_path / f".depth_mask50.partial-{dead}"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "shard-000000.tar").write_bytes(b"half a shard")  # as SIGKILL leaves it
    running = tmp_path / f".depth_mask50.partial-{os.getppid()}"  # a live process's build is not touched
    running.mkdir()
    build(project, "depth_mask50", project / "models", tmp_path / "depth_mask50")
    assert not stale.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "depth_mask50"]


def test_failed_build_leaves_nothing_a_reader_accepts(project, caches, tmp_path, monkeypatch):
    calls = []
    real_encode = VQVAE.encode

    def failing_encode(self, x):
        calls.append(len(x))
        if len(calls) > 1:
            raise RuntimeError("injected encoder failure")
        return real_encode(self, x)

    monkeypatch.setattr(VQVAE, "encode", failing_encode)
    out = tmp_path / "depth_mask50"
    with pytest.MonkeyPatch.context() as m:
        m.chdir(tmp_path)
        result = CliRunner().invoke(app, [
            "cache-tokens", "depth_mask50", "--params", str(project / "cache_params.yaml"),
            "--prepared", str(project / "data/prepared"), "--model-dir", str(project / "models/depth_mask50"),
            "--out", str(out), "--device", "cpu"])
    assert result.exit_code != 0 and "injected encoder failure" in str(result.exception)
    assert len(calls) == 2  # it failed after the first batch was written
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial dir left behind
    with pytest.raises(CacheError):
        open_cache(out)


def test_variant_mismatch_is_one_line(project, tmp_path):
    result = CliRunner().invoke(app, [
        "cache-tokens", "depth_mask0", "--params", str(project / "cache_params.yaml"),
        "--prepared", str(project / "data/prepared"), "--model-dir", str(project / "models/depth_mask50"),
        "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "is tokenizer variant 'depth_mask50', not 'depth_mask0'" in result.stderr


def test_view_set():
    assert view_offsets(64, 48, 8) == [0, 8, 16]
    assert view_offsets(160, 120, 32) == [0, 32, 40]  # W - crop appended when the stride misses it
    assert view_offsets(640, 480, 1) == list(range(161))  # stride 1: every offset the solver can draw
    views = dense_views(3, 5, 3, 1)
    assert views == [View(f, x) for f in (False, True) for x in (0, 1, 2)]
    depth = np.arange(15, dtype=np.float32).reshape(3, 5)
    crops = extract_views(depth, views, 3)
    np.testing.assert_array_equal(crops[1], depth[:, 1:4])
    np.testing.assert_array_equal(crops[3], depth[:, ::-1][:, 0:3])  # flip the full frame, then crop
    assert nearest_view(dense_views(48, 64, 48, 8), True, 13) == 5  # flip=1, x=16
    with pytest.raises(CacheError, match="must equal the frame height 48"):
        dense_views(48, 64, 40, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_build(rank: int, world: int, port: int, project: str, out: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # what torchrun sets
    from pipeline.core import runtime
    from pipeline.jobs.cache import cache_job
    from pipeline.token_cache.build import build_cache

    info = runtime.init_distributed("cpu")
    root = Path(project)
    job = cache_job("depth_mask50", root / "cache_params.yaml", root / "data/prepared", root / "models/depth_mask50")
    build_cache(Path(out), job, torch.device("cpu"), rank=info.rank, world_size=info.world_size)
    runtime.destroy_distributed()


def test_two_process_build_equals_one_process_build(project, caches, tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_rank_build, args=(2, _free_port(), str(project), str(out)), nprocs=2, join=True)
    single = caches / "depth_mask50"
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for f in files:
        if f.name != "manifest.json":
            assert (single / f).read_bytes() == (out / f).read_bytes(), f
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (single, out))
    assert a == b


# -------------------------------------------------------------------------------------------------
# The solver's training targets, drawn through its own reader, against the ground truth reached by an
# independent route: the prepared record's files, warped by the example's own draw.


def _training_batches(project: Path, caches: Path, variant: str, **overrides):
    params = load_all(project / "cache_params.yaml")
    info = open_cache(caches / variant)
    cfg = replace(getattr(params["solver"], info.task), **overrides)
    return solver_run.batches(get_task(info.task).training(info.manifest, cfg), info, 4, 0, seed=3), info


def test_dense_targets_are_the_tokens_of_the_same_view_of_the_same_frame_as_the_image(project, caches):
    """Each depth example's image, depth and tokens are one cached view (offset and flip) of one frame:
    the image is exactly that view of the frame's RGB file, the depth that view of its depth file, and
    the tokens the tokenizer's encode of that depth (semantic maps share this view code, tasks/dense.py)."""
    batches, info = _training_batches(project, caches, "depth_mask50")
    records = {r["key"]: r for r in read_jsonl(project / "data/prepared/depth/train.jsonl")}
    views = [View(bool(v["flip"]), v["x"]) for v in info.manifest["views"]["list"]]
    model, seen = _model(project, "depth_mask50"), set()
    for _ in range(4):
        batch = next(batches)
        np.testing.assert_array_equal(batch["indices"].numpy(), model.encode(batch["depth"]).numpy())
        for b, key in enumerate(batch["keys"]):
            depth_views = extract_views(read_depth_metres(records[key]["depth"]), views, 48)
            rgb_views = extract_views(read_rgb(records[key]["rgb"]), views, 48)
            hits = [v for v in range(len(views)) if np.array_equal(depth_views[v], batch["depth"][b, 0].numpy())
                    and np.array_equal(rgb_views[v], batch["images"][b].permute(1, 2, 0).numpy())]
            assert hits, f"{key}: image and depth are not one view of the frame"
            seen |= {views[v].flip for v in hits}
    assert seen == {False, True}  # both flips were drawn and both pair up


def test_instance_targets_sit_on_their_objects_in_the_augmented_image(project, caches):
    """Through large-scale jitter (scales 0.3-2 of the input side: shrinks, windows, truncations) and flips, every target
    box is the box of one ground-truth mask of that image warped by the same draw, with its class, and
    the 64x64 target crop is that warped mask under the box."""
    batches, info = _training_batches(project, caches, "insseg", scale_range=(0.3, 2.0), color_jitter=0.0)
    records = {r["key"]: r for r in read_jsonl(project / "data/prepared/insseg/train.jsonl")}
    category_ids = [c["id"] for c in info.manifest["categories"]]
    checked, cropped, flips, truncated = 0, 0, set(), 0
    for _ in range(6):
        batch = next(batches)
        for b, key in enumerate(batch["keys"]):
            record, jitter = records[key], batch["jitters"][b]
            np.testing.assert_array_equal(batch["images"][b].permute(1, 2, 0).numpy(),
                                          jitter.image(read_rgb(record["image"])))
            gt = [(a["category_id"], _warped(segmentation_to_mask(a["segmentation"], record["height"],
                                                                    record["width"]), jitter))
                  for a in record["annotations"] if not a.get("iscrowd")]
            for o in batch["objects"][b]:
                box = o["box"].astype(np.float64)
                # the box of one warped GT mask, within rasterisation (a pixel at either end, x scale); a box the
                # window truncated is clipped (the official rule), so it holds its mask's visible part
                tol = 1.0 + jitter.scale
                exact = o["indices"] is not None
                near = [i for i, (_, m) in enumerate(gt) if m.any() and _box_error(box, _mask_box(m), exact) <= tol]
                near = [i for i in near if gt[i][0] == category_ids[o["label"]]]
                assert near, f"{key}: target box {box} is on no object of its class"
                # and its crop is that mask under the box: checked where the box spans 10 original pixels,
                # since both sides round the box to whole pixels (the target in the original frame)
                if min(box[2] - box[0], box[3] - box[1]) >= 10 * jitter.scale:
                    x1, y1, x2, y2 = box
                    ious = [_mask_iou(o["crop"] > 0.5, crop_instance_mask(gt[i][1].astype(np.uint8),
                                                                          (x1, y1, x2 - x1, y2 - y1),
                                                                          o["crop"].shape[0]) > 0.5)
                            for i in near]
                    assert max(ious) > 0.8, f"{key}: the target crop is not its mask ({max(ious):.2f})"
                    cropped += 1
                checked, flips = checked + 1, flips | {jitter.flip}
                truncated += o["indices"] is None
    assert checked >= 20 and cropped >= 5 and flips == {False, True} and truncated > 0, (
        checked, cropped, flips, truncated)


def _warped(mask: np.ndarray, jitter) -> np.ndarray:
    """A full-frame GT mask through the example's own resize, flip and window (as an image)."""
    return jitter.image(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2))[..., 0] > 127


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _box_error(box: np.ndarray, mask_box: np.ndarray, exact: bool) -> float:
    """How far `box` is from the mask's box (exact) or from containing it (truncated)."""
    if exact:
        return float(np.abs(box - mask_box).max())
    outside = np.concatenate([box[:2] - mask_box[:2], mask_box[2:] - box[2:]])
    return float(max(outside.max(), 0.0)) if _overlap(box, mask_box) else np.inf


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
