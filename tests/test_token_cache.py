"""cache_tokens@* on the tiny demo with tiny trained tokenizers: exact round trip, determinism, refusal
of a failed build, and a 2-process (gloo) build equal to the 1-process one."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.io import read_jsonl
from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres
from pipeline.geometry.views import View, dense_views, extract_views, nearest_view, view_offsets
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
