"""Checkpoints that carry their own config: `model.safetensors` + `config.json`.

`config.json` holds the architecture (the model's config dataclass as a dict), free-form metadata and
a content hash over the weights bytes and the architecture. Downstream stages rebuild the model from
config.json (never from params.yaml) and use the hash as the model's identity: a token cache or a
solver records the tokenizer hash it was made with and refuses a different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.io import dumps

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def content_hash(weights_path: Path, architecture: dict) -> str:
    """sha256 over the weights file and the canonical architecture JSON (first 16 hex digits)."""
    h = hashlib.sha256(Path(weights_path).read_bytes())
    h.update(json.dumps(architecture, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save(directory: Path, model: torch.nn.Module, architecture: Any, meta: dict | None = None) -> dict:
    """Write weights (safetensors, deterministic bytes) and config.json; returns the config dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    arch = dataclasses.asdict(architecture) if dataclasses.is_dataclass(architecture) else dict(architecture)
    config = {"architecture": arch, "content_hash": content_hash(directory / WEIGHTS, arch), **(meta or {})}
    (directory / CONFIG).write_text(dumps(config))
    return config


def read_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint config not found")
    return json.loads(path.read_text())


def load_weights(directory: Path, model: torch.nn.Module, verify_hash: bool = True) -> dict:
    """Load weights strictly into `model`; checks the content hash against config.json."""
    directory = Path(directory)
    config = read_config(directory)
    if verify_hash:
        actual = content_hash(directory / WEIGHTS, config["architecture"])
        if actual != config["content_hash"]:
            raise ValueError(f"{directory / WEIGHTS}: content hash {actual} does not match "
                             f"config.json ({config['content_hash']}); the checkpoint is corrupt")
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    return config


def load_vqvae(directory: Path):
    """Rebuild a VQ-VAE tokenizer from its checkpoint dir (config.json, hash-checked); eval mode.

    Returns `(model, config)`; a missing checkpoint raises `DataError` naming the path.
    """
    from pipeline.data.errors import DataError
    from pipeline.models.vqvae import VQVAE, VQVAEConfig

    try:
        config = read_config(directory)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None
    model = VQVAE(VQVAEConfig(**config["architecture"]))
    load_weights(directory, model)
    return model.eval(), config
