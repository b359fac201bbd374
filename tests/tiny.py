"""The tiny variant of params.yaml used by stage smoke tests: the real file plus small overrides.

Deriving it from params.yaml (instead of keeping a second copy) means every real key is exercised
and a renamed key breaks these tests rather than drifting silently.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.core.yamlfile import dump_yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"demo": {"num_scenes": 3, "test_scenes": 1, "frames_per_scene": 3, "height": 48, "width": 64}},
    "tokenizer": {
        "depth": {"model": {"hidden_dim": 8, "downsample_ratio": 8, "num_embeddings": 16, "embedding_dim": 16},
                  "train": {"steps": 6, "batch_size": 4, "crop_size": 48, "patch_size": 8, "log_every": 2}},
        "insseg": {"model": {"hidden_dim": 8, "num_embeddings": 16, "embedding_dim": 16},
                   "optim": {"warmup_steps": 2},
                   "train": {"steps": 6, "batch_size": 8, "log_every": 2}},
        "semseg": {"model": {"hidden_dim": 8, "downsample_ratio": 8, "num_embeddings": 16, "embedding_dim": 16},
                   "train": {"steps": 6, "batch_size": 4, "crop_size": 48, "log_every": 2}},
    },
    "cache": {"depth": {"crop_size": 48}, "semseg": {"crop_size": 48}},  # the full frame height
}


def tiny_solver(steps: int, num_query: int) -> dict:
    """A `solver` section small enough to train every run in a few CPU seconds on 48x64 frames."""
    run = {"steps": steps, "log_every": 1, "checkpoint_every": 2, "num_workers": 0}
    return {
        "backbone": {"window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1],
                     "num_heads": [1, 1, 2, 2]},
        "model": {"dim": 32, "num_heads": 2, "ffn_dim": 64, "num_encoder_layers": 1, "num_decoder_layers": 1},
        "num_bins": 64,
        "insseg": {"num_query": num_query, "image_size": 64, "aux_weight": 5.0},  # keeps the aux path run
        "runs": {"depth": {**run, "batch_size": {"depth": 2}},
                 "insseg": {**run, "batch_size": {"insseg": 2}},
                 "semseg": {**run, "batch_size": {"semseg": 2}},
                 "joint": {**run, "batch_size": {"depth": 2, "insseg": 2}},
                 "joint3": {**run, "batch_size": {"depth": 2, "insseg": 2, "semseg": 2}}},
    }


def merge(base: dict, override: dict) -> dict:
    """`base` with `override` merged in recursively (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_params(root: Path, extra: dict | None = None) -> dict:
    """params.yaml made tiny, with data roots pointing into `root`."""
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params = merge(params, {"data": {"tasks": {
        "depth": {"root": str(root / "data/demo/nyuv2")},
        "insseg": {"root": str(root / "data/demo")},
        "semseg": {"root": str(root / "data/demo/nyuv2")}}}})
    return merge(params, extra or {})


def write_params(path: Path, params: dict) -> Path:
    path.write_text(dump_yaml(params))  # text both PyYAML (the stages) and DVC read alike
    return path


# Every stage of dvc.yaml on tiny data: small shards and crops, two solver steps.
TINY_PIPELINE = {
    "cache": {"depth": {"crop_size": 48, "crop_stride": 16, "shard_max_samples": 8},
              "insseg": {"shard_max_samples": 8},
              "semseg": {"crop_size": 48, "crop_stride": 16, "shard_max_samples": 8}},
    "solver": tiny_solver(steps=2, num_query=3),
}


def depth_sample(key: str, rgb: bytes, rgb_ext: str, depth_png: bytes, tokens,
                 views: list[dict[str, int]]) -> dict:
    """A depth WebDataset sample as the depth task's cache layout writes it: stored RGB/depth bytes,
    `(V, h, w)` tokens and the view list."""
    from pipeline.token_cache.write import encode_json, encode_npy

    return {"__key__": key, f"rgb.{rgb_ext}": rgb, "depth.png": depth_png,
            "tokens.npy": encode_npy(tokens), "views.json": encode_json(views)}
