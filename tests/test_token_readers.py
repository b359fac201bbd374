"""Token-cache readers on small synthetic caches written with `pipeline.token_cache.write`.

The caches here are made without a tokenizer (tokens encode the sample index), so every reader property
can be checked against known values: DDP/worker splitting, equal batch counts, refusals, zarr access.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.core.io import write_json
from pipeline.tasks.registry import get_task
from pipeline.token_cache import write
from pipeline.token_cache.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    ZARR_STORE,
    CacheError,
    shard_entry,
    zarr_entries,
)
from pipeline.token_cache.read import (
    Sampling,
    ZarrTokens,
    consumer_batches,
    decode_sample,
    open_cache,
    token_pipeline,
)
from pipeline.tokenizer_training.codes import usage_stats
from tests.tiny import depth_sample

HASH = "feedc0de12345678"
VIEWS = [{"flip": 0, "x": 0}, {"flip": 1, "x": 0}]


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _tokens(i: int) -> np.ndarray:
    return (np.arange(18, dtype=np.uint8).reshape(2, 3, 3) + i) % 16  # (V, h, w), depends on the sample


def _write_cache(root: Path, n: int, shard_max: int, split: str = "train") -> list[str]:
    """A depth-like cache of `n` samples in shards of `shard_max`; returns the keys in order."""
    keys = [f"s{i:03d}" for i in range(n)]
    bounds = write.shard_bounds(n, shard_max)
    (root / split).mkdir(parents=True)
    shards = []
    for j, (a, b) in enumerate(bounds):
        samples = [depth_sample(keys[i], _png(np.full((3, 4, 3), i, np.uint8)), "png",
                                      _png(np.full((3, 4), 1000 * (i + 1), np.uint16)), _tokens(i), VIEWS)
                   for i in range(a, b)]
        write.write_shard(root / write.shard_rel(split, j), samples)
        shards.append(shard_entry(root, write.shard_rel(split, j), b - a))
    store = write.create_store(root / ZARR_STORE)
    blocks = [np.stack([_tokens(i) for i in range(a, b)]) for a, b in bounds]
    write.write_view_tokens(store, split, keys, blocks, (2, 3, 3), np.dtype(np.uint8), shard_max)
    write.mark_complete(store, {"task": "depth"})
    write_json(root / MANIFEST, {
        "schema_version": SCHEMA_VERSION, "task": "depth", "variant": "synthetic",
        "tokenizer": {"hash": HASH, "num_embeddings": 16, "grid": [3, 3]},
        "views": {"tokens_shape": [2, 3, 3], "list": VIEWS}, "shard_max_samples": shard_max,
        "splits": {split: {"samples": n, "shards": shards}}, "zarr_files": zarr_entries(root)})
    return keys


@pytest.fixture
def even_cache(tmp_path) -> tuple[Path, list[str]]:
    return tmp_path / "even", _write_cache(tmp_path / "even", n=8, shard_max=2)  # 4 shards of 2


def _epochs(path: Path, rank: int, world: int, workers: int, batch: int, epochs: int, mp) -> list[list[str]]:
    """Keys seen by `rank` in each epoch through a WebLoader with `workers` processes."""
    mp.setenv("RANK", str(rank))  # what webdataset's split_by_node reads (utils.pytorch_worker_info)
    mp.setenv("WORLD_SIZE", str(world))
    pipeline = token_pipeline(path, "train", Sampling(batch, seed=3, shuffle=10, num_workers=workers))
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=workers)
    out = []
    for _ in range(epochs):
        batches = list(loader)
        assert all(len(b) == batch for b in batches)  # partial=False
        out.append([s["key"] for b in batches for s in b])
    return out


def test_two_ranks_two_workers_read_every_sample_once_per_epoch(even_cache, monkeypatch):
    path, keys = even_cache
    seen = {rank: _epochs(path, rank, 2, 2, batch=1, epochs=2, mp=monkeypatch) for rank in (0, 1)}
    for epoch in range(2):
        per_rank = [seen[r][epoch] for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 4  # equal batch counts on both ranks
        assert sorted(per_rank[0] + per_rank[1]) == keys  # every sample exactly once
    # shard i goes to rank i % 2: rank 0 holds shards 0 and 2
    assert sorted(seen[0][0]) == ["s000", "s001", "s004", "s005"]


def test_uneven_shards_still_give_equal_batches_without_repeats(tmp_path, monkeypatch):
    path = tmp_path / "uneven"
    _write_cache(path, n=9, shard_max=2)  # shards of 2, 2, 2, 2, 1
    assert consumer_batches([2, 2, 2, 2, 1], 2, 2, 2) == [1, 1, 1, 1]  # rank 0 worker 0 has 3 samples
    seen = [_epochs(path, rank, 2, 2, batch=2, epochs=1, mp=monkeypatch)[0] for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 4
    assert len(set(seen[0] + seen[1])) == 8  # no sample twice within the epoch


def test_too_few_shards_for_ranks_times_workers_is_refused(tmp_path):
    path = tmp_path / "small"
    _write_cache(path, n=4, shard_max=2)
    with pytest.raises(CacheError, match="2 shards cannot feed 2 ranks x 2 workers"):
        token_pipeline(path, "train", Sampling(1, num_workers=2, world_size=2))


def test_single_process_pipeline_decodes_and_shuffles_with_seed(even_cache):
    path, keys = even_cache

    def order(seed: int) -> list[str]:
        return [s["key"] for b in token_pipeline(path, "train", Sampling(2, seed, shuffle=8, world_size=1)) for s in b]

    orders = [order(seed) for seed in (0, 0, 1, 2)]
    assert sorted(orders[0]) == keys and orders[1] == orders[0]  # every sample once, the same each time
    # each seed gives its own order, and none is the written one
    assert len({tuple(o) for o in orders[1:]}) == 3 and keys not in orders
    decode = functools.partial(decode_sample, fields=get_task("depth").cache_fields)  # depth PNG -> metres
    sample = next(iter(token_pipeline(path, "train", Sampling(1, shuffle=0, world_size=1), decode)))[0]
    i = keys.index(sample["key"])
    np.testing.assert_array_equal(sample["tokens"], _tokens(i))
    assert sample["tokens"].dtype == np.uint8 and sample["views"] == VIEWS
    np.testing.assert_array_equal(sample["rgb"], np.full((3, 4, 3), i, np.uint8))
    np.testing.assert_allclose(sample["depth"], np.full((3, 4), (i + 1) * 1.0, np.float32))  # mm / 1000


def test_pipeline_and_zarr_dataset_pickle_into_workers(even_cache):
    path, keys = even_cache
    pipeline = token_pipeline(path, "train", Sampling(2, world_size=1))
    clone = pickle.loads(pickle.dumps(pipeline))
    assert sorted(s["key"] for b in clone for s in b) == keys
    tokens = ZarrTokens(path, "train")
    _ = tokens[0]  # opens the array; it must not travel in the pickle
    again = pickle.loads(pickle.dumps(tokens))
    assert again._tokens is None
    np.testing.assert_array_equal(again[5], _tokens(5))


def test_zarr_random_access(even_cache):
    path, keys = even_cache
    tokens = ZarrTokens(path, "train", expected_hash=HASH)
    assert len(tokens) == 8 and tokens.keys == keys
    for i in (0, 3, 7, -1):
        np.testing.assert_array_equal(tokens[i], _tokens(i % 8))
    assert tokens.index_of("s006") == 6
    with pytest.raises(CacheError, match="no sample with key 'nope'"):
        tokens.index_of("nope")
    with pytest.raises(IndexError):
        tokens[8]
    with pytest.raises(CacheError, match="no split 'val'"):
        ZarrTokens(path, "val")


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_tokenizer_hash_mismatch_is_refused_by_every_reader(even_cache):
    path, _ = even_cache
    for read in (lambda: open_cache(path, expected_hash="0" * 16),
                 lambda: ZarrTokens(path, "train", expected_hash="0" * 16),
                 lambda: token_pipeline(path, "train", Sampling(1, world_size=1), expected_hash="0" * 16)):
        with pytest.raises(CacheError) as err:
            read()
        assert f"made by tokenizer {HASH}" in _one_line(err) and "0" * 16 in str(err.value)
    assert open_cache(path, expected_hash=HASH).tokenizer_hash == HASH


def test_unknown_schema_version_is_refused(even_cache):
    path, _ = even_cache
    manifest = json.loads((path / MANIFEST).read_text())
    write_json(path / MANIFEST, {**manifest, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(CacheError) as err:
        open_cache(path)
    assert f"schema version {SCHEMA_VERSION + 1}" in _one_line(err)


def test_incomplete_caches_are_refused(even_cache, tmp_path):
    path, _ = even_cache
    no_manifest = tmp_path / "no_manifest"
    shutil.copytree(path, no_manifest)
    (no_manifest / MANIFEST).unlink()
    with pytest.raises(CacheError, match="no manifest.json"):
        open_cache(no_manifest)

    partial = tmp_path / "partial_zarr"  # arrays written, completion attribute never set
    shutil.copytree(path, partial)
    meta = json.loads((partial / ZARR_STORE / "zarr.json").read_text())
    meta["attributes"] = {}
    (partial / ZARR_STORE / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError) as err:
        open_cache(partial)
    assert "zarr store is incomplete" in _one_line(err)

    truncated = tmp_path / "truncated"
    shutil.copytree(path, truncated)
    shard = truncated / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:512])
    with pytest.raises(CacheError, match="shard missing or not"):
        open_cache(truncated)


def test_decode_sample_depth_encodings():
    mm = np.array([[0, 1500], [65535, 1]], np.uint16)
    eight = np.array([[0, 255]], np.uint8)  # DenseDepth train encoding: 255 = 10 m
    fields = get_task("depth").cache_fields  # the depth task decodes its label file to metres
    out = decode_sample({"__key__": "k", "depth.png": _png(mm), "extra.png": _png(eight),
                         "rgb.png": _png(eight), "meta.json": b'{"a": 1}', "__url__": "x"}, fields)
    # metres, with every value outside the one valid range (1 mm, 10 m) a hole: 65535 and 1 mm read as 0
    np.testing.assert_allclose(out["depth"], [[0.0, 1.5], [0.0, 0.0]], rtol=1e-6)
    # other PNGs come back as stored (label maps), images as RGB
    np.testing.assert_array_equal(out["extra"], eight)
    assert out["rgb"].shape == (1, 2, 3) and out["meta"] == {"a": 1}
    assert set(out) == {"key", "depth", "extra", "rgb", "meta"}
    eight_out = decode_sample({"__key__": "k", "depth.png": _png(np.array([[0, 128, 255]], np.uint8))}, fields)
    np.testing.assert_allclose(eight_out["depth"], [[0.0, 1280 / 255, 0.0]], rtol=1e-6)  # 255 = 10 m: a hole
    assert decode_sample({"__key__": "k", "depth.png": _png(mm)})["depth"].dtype == np.uint16  # no task: raw


def test_usage_stats_by_hand():
    stats = usage_stats(np.array([2, 2, 0, 0]))
    assert stats == {"min": 0, "median": 1.0, "max": 2, "perplexity": pytest.approx(2.0), "unused_codes": 2}
    assert usage_stats(np.array([1, 1, 1, 1]))["perplexity"] == pytest.approx(4.0)
