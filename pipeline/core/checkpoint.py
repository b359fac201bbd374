"""Checkpoints that carry their own config: `model.safetensors` + `config.json`.

`config.json` holds the architecture (the model's config dataclass as a dict), free-form metadata and
a content hash over the weights bytes and every other field of config.json (the architecture and the
metadata downstream stages trust: task, variant, vocabulary, normalisation). Downstream stages rebuild
the model from config.json (never from params.yaml) and use the hash as the model's identity: a token
cache or a solver records the tokenizer hash it was made with and refuses a different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.core.errors import DataError
from pipeline.core.io import dumps

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def content_hash(weights_path: Path, config: dict) -> str:
    """sha256 over the weights file and the canonical JSON of config.json without its `content_hash`
    (first 16 hex digits)."""
    h = hashlib.sha256(Path(weights_path).read_bytes())
    described = {k: v for k, v in config.items() if k != "content_hash"}
    h.update(json.dumps(described, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def save(directory: Path, model: torch.nn.Module, architecture: Any, meta: dict | None = None) -> dict:
    """Write weights (safetensors, deterministic bytes) and config.json; returns the config dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    arch = dataclasses.asdict(architecture) if dataclasses.is_dataclass(architecture) else dict(architecture)
    config = json.loads(dumps({"architecture": arch, **(meta or {})}))  # as read back: lists, not tuples
    config["content_hash"] = content_hash(directory / WEIGHTS, config)
    (directory / CONFIG).write_text(dumps(config))
    return config


class CheckpointError(DataError):
    """A checkpoint is missing, unreadable, truncated or inconsistent; one line naming the file."""


def read_config(directory: Path, producer: str = "the stage that writes it") -> dict:
    """The config.json of a checkpoint dir; anything unusable is a `CheckpointError` saying to re-run
    `producer` (e.g. "dvc repro train_tokenizer")."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint config not found; re-run {producer}")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({type(e).__name__}); "
                              f"re-run {producer}") from None
    if not (isinstance(config, dict) and isinstance(config.get("architecture"), dict)
            and "content_hash" in config):
        raise CheckpointError(f"{path}: not a checkpoint config (no architecture or content_hash); "
                              f"re-run {producer}")
    return config


def load_weights(directory: Path, model: torch.nn.Module, verify_hash: bool = True,
                 producer: str = "the stage that writes it") -> dict:
    """Load weights strictly into `model`; checks the content hash against config.json."""
    directory = Path(directory)
    config = read_config(directory, producer)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint weights not found; re-run {producer}")
    if verify_hash:
        actual = content_hash(weights, config)
        if actual != config["content_hash"]:
            raise CheckpointError(f"{weights}: content hash {actual} does not match config.json "
                                  f"({config['content_hash']}); the checkpoint is corrupt, re-run {producer}")
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{weights}: weights do not fit the architecture in config.json "
                              f"({_first_line(e)}); re-run {producer}") from None
    return config


def build_from_config(directory: Path, build, config: dict, producer: str):
    """`build(config)` with a one-line `CheckpointError` when config.json's fields do not fit the code."""
    try:
        return build(config)
    except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError too
        raise CheckpointError(f"{Path(directory) / CONFIG}: does not describe a model this code can build "
                              f"({type(e).__name__}: {_first_line(e)}); re-run {producer}") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:160] if lines else type(e).__name__
