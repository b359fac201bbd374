"""Strict, typed configuration: every `params.yaml` section is a frozen dataclass.

The loader follows nanoGPT's `configurator.py` in spirit (an unknown key or a wrong type is an
error), but raises a one-line `ConfigError` naming the dotted key instead of exec-ing overrides.
Field names are identical to the params keys: there is no renaming layer. Derived numbers (vocabulary
size, token grid, offsets) are never config: they are computed from artifacts downstream.

This module reads only the file path it is given; stages decide which file and which section.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from pipeline.models.backbone import BackboneConfig
from pipeline.models.solver import SolverModelConfig
from pipeline.models.vqvae import VQVAEConfig
from pipeline.optim import OptimConfig
from pipeline.solver.augment import DepthAugmentConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A params file does not match its schema; the message is one line naming the key."""


# --------------------------------------------------------------------------------------------------
# schema


@dataclass(frozen=True)
class BaseConfig:
    seed: int = 0


@dataclass(frozen=True)
class DemoConfig:
    """The embedded demo dataset rendered by `ait data demo` (see pipeline/data/demo)."""

    seed: int = 0
    num_scenes: int = 12  # rooms; each room is one scene folder
    test_scenes: int = 2  # the last rooms form the test split (scenes never straddle splits, as in NYUv2)
    frames_per_scene: int = 16
    height: int = 120
    width: int = 160
    max_range: float = 6.0  # metres; the sensor returns nothing beyond this
    projector_baseline: float = 0.075  # metres; Kinect's projector sits this far to the camera's side
    dark_fraction: float = 0.15  # fraction of objects with an IR-absorbing (no-return) material
    specular_fraction: float = 0.15  # fraction of objects whose near-normal view saturates the sensor
    jpeg_quality: int = 92
    flash: float = 0.8  # share of the light from a lamp at the camera: brightness falls as 1/depth²
    tint: float = 0.7  # share of each object's colour replaced by its category's hue (a recognition cue)


@dataclass(frozen=True)
class DepthSourceConfig:
    """Where `prepare@depth` reads depth samples from (NYUv2 formats)."""

    source: Literal["demo", "nyuv2"] = "demo"
    root: str = "data/demo/nyuv2"
    layout: Literal["sync", "densedepth"] = "sync"
    train_list: str = "train_files_with_gt.txt"  # relative to root (BTS list or DenseDepth csv)
    test_list: str = "test_files_with_gt.txt"


@dataclass(frozen=True)
class InssegSourceConfig:
    """Where `prepare@insseg` reads instance annotations from (COCO format)."""

    source: Literal["demo", "coco"] = "demo"
    root: str = "data/demo"
    train_images: str = "nyuv2"  # image dirs and jsons are relative to root
    train_json: str = "coco/annotations/instances_train.json"
    val_images: str = "nyuv2"
    val_json: str = "coco/annotations/instances_val.json"


@dataclass(frozen=True)
class DataTasksConfig:
    depth: DepthSourceConfig = field(default_factory=DepthSourceConfig)
    insseg: InssegSourceConfig = field(default_factory=InssegSourceConfig)


@dataclass(frozen=True)
class DataConfig:
    max_bad_fraction: float = 0.05  # prepare fails when more than this fraction of samples is bad
    demo: DemoConfig = field(default_factory=DemoConfig)
    tasks: DataTasksConfig = field(default_factory=DataTasksConfig)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    steps: int = 1000  # optimiser steps (the paper counts epochs; steps make demo budgets exact)
    batch_size: int = 8  # global batch, split over DDP ranks
    crop_size: int = 480  # depth: side of the square random training crop; insseg: mask crop side
    patch_size: int = 16  # mask augmentation patch side (depth only, AiT ref §2)
    num_workers: int = 0  # DataLoader workers per rank
    log_every: int = 10
    dead_code_threshold: float = 0.0  # EMA count below which a code is restarted; 0 = off (as the paper)
    eval_tau: float = 1.0  # soft-decode temperature in eval_tokenizer (AiT ref §3.2: tau multiplies)


@dataclass(frozen=True)
class TokenizerTaskConfig:
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)


@dataclass(frozen=True)
class TokenizerVariant:
    """One trained tokenizer: its task and, for depth, the mask-augmentation ratio (paper Table 8)."""

    task: Literal["depth", "insseg"]
    mask_ratio: float = 0.0


@dataclass(frozen=True)
class TokenizerConfig:
    variants: dict[str, TokenizerVariant] = field(default_factory=dict)
    solver_depth_variant: str = "depth_mask50"  # the depth tokenizer the task-solver is trained with
    depth: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)
    insseg: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)

    def __post_init__(self) -> None:
        chosen = self.variants.get(self.solver_depth_variant)
        if self.variants and (chosen is None or chosen.task != "depth"):
            raise ConfigError(f"tokenizer.solver_depth_variant: {self.solver_depth_variant!r} is not a "
                              f"depth variant in tokenizer.variants")


@dataclass(frozen=True)
class DepthCacheConfig:
    crop_size: int = 480  # side of the solver's square training crop (paper: 480 of the 480x640 frame)
    crop_stride: int = 32  # x-offset stride of the cached views; 1 = every offset the solver can draw
    shard_max_samples: int = 1000  # samples per WebDataset shard
    batch_size: int = 16  # tokenizer encode batch
    num_workers: int = 0  # DataLoader workers decoding labels


@dataclass(frozen=True)
class InssegCacheConfig:
    shard_max_samples: int = 1000
    batch_size: int = 256  # mask crops per encode batch
    num_workers: int = 0


@dataclass(frozen=True)
class CacheConfig:
    depth: DepthCacheConfig = field(default_factory=DepthCacheConfig)
    insseg: InssegCacheConfig = field(default_factory=InssegCacheConfig)


@dataclass(frozen=True)
class DepthTaskConfig:
    """How the solver learns and decodes depth (AiT ref §3, §4.4)."""

    aux_weight: float = 1.0  # SiLog of the soft decode through the frozen detokenizer (§3.3)
    tau: float = 0.8  # decode_soft temperature (multiplies the logits)
    soft_input: bool = True  # solver side: next input = softmax(code logits) @ code embeddings
    soft_decode: bool = True  # detokenizer side: decode_soft instead of decode(argmax)
    augment: DepthAugmentConfig = field(default_factory=DepthAugmentConfig)  # training RGB only (§6.1)


@dataclass(frozen=True)
class InssegTaskConfig:
    """How the solver learns and decodes instances (AiT ref §4.5)."""

    num_query: int = 100  # objects per sequence (21 tokens each)
    image_size: int = 640  # square (padded) input side; also the coordinate normalisation
    scale_range: tuple[float, float] = (0.1, 3.0)  # large-scale jitter of the training images
    order: Literal["random", "area"] = "random"  # object order in a sequence (AiT: random each iteration)
    aux_weight: float = 5.0  # Dice + MSE of the soft-decoded masks (§3.3)
    mask_weight: float = 0.2  # CE weight of mask-code targets
    tau: float = 1.0
    top_p: float = 0.0  # 0 = greedy (deterministic); the paper samples with 0.3
    soft_input: bool = True
    soft_decode: bool = True
    color_jitter: float = 0.2


@dataclass(frozen=True)
class SolverRunConfig:
    """One train_solver@<run> stage: which tasks, how long, how."""

    tasks: tuple[Literal["depth", "insseg"], ...] = ("depth",)
    steps: int = 1000
    batch_size: dict[str, int] = field(default_factory=lambda: {"depth": 24})  # global, per task
    loss_weights: dict[str, float] = field(default_factory=dict)  # per task, default 1 (joint: depth 0.2)
    optim: OptimConfig = field(default_factory=OptimConfig)
    layer_decay: float = 0.9  # backbone lr = lr * layer_decay ** (num_layers - 1 - layer_id)
    parallel: bool = False  # the parallel decoder (AiT-P, paper §4.4 / Table 9), studied for depth only
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 100  # steps between resumable checkpoints

    def __post_init__(self) -> None:
        if set(self.batch_size) != set(self.tasks):
            raise ConfigError(f"batch_size keys {sorted(self.batch_size)} must match tasks {list(self.tasks)}")
        if not set(self.loss_weights) <= set(self.tasks):
            raise ConfigError(f"loss_weights keys {sorted(self.loss_weights)} are not all in tasks {list(self.tasks)}")


@dataclass(frozen=True)
class SolverConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: SolverModelConfig = field(default_factory=SolverModelConfig)
    num_bins: int = 2000  # coordinate quantisation bins (the vocabulary gets num_bins + 1)
    spare_codes: int = 0  # reserved vocabulary rows for future tasks (the paper's insseg configs: 128)
    depth: DepthTaskConfig = field(default_factory=DepthTaskConfig)
    insseg: InssegTaskConfig = field(default_factory=InssegTaskConfig)
    runs: dict[str, SolverRunConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalConfig:
    """How evaluate@<run> runs (not what the model is): test-time augmentation, batching, panels."""

    flip_tta: bool = True  # average each depth window with its horizontal flip (AiT ref §5.1)
    shift_windows: bool = True  # sliding S x S depth windows; False = one centred window
    batch_images: int = 4  # images per generate call (depth: x windows x flips sequences)
    num_panels: int = 4  # PNG panels for the first samples of each task
    panel_score: float = 0.3  # instances drawn in the panels score at least this
    max_images: int = 0  # evaluate only the first N samples (0 = all)


# Top-level params.yaml sections and their schemas. Later sections register here.
SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "cache": CacheConfig,
    "solver": SolverConfig,
    "evaluate": EvalConfig,
}


# --------------------------------------------------------------------------------------------------
# loading


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file; a missing or malformed file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def load_section(path: str | Path, key: str, cls: type[T]) -> T:
    """Load the dotted section `key` of the params file at `path` into dataclass `cls`, strictly."""
    node: Any = read_params(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: missing section '{key}'")
        node = node[part]
    try:
        return from_dict(cls, node, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_value(path: str | Path, key: str, tp: Any) -> Any:
    """Load the single dotted value `key` (e.g. "data.max_bad_fraction") checked against type `tp`."""
    node: Any = read_params(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: missing key '{key}'")
        node = node[part]
    try:
        return _coerce(tp, node, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_all(path: str | Path) -> dict[str, Any]:
    """Every registered section of the file, validated; an unknown top-level section is an error."""
    raw = read_params(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section '{unknown[0]}'")
    return {name: load_section(path, name, cls) for name, cls in SECTIONS.items() if name in raw}


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}: missing key")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches no allowed type")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not ...:  # fixed-length tuple[A, B, ...]
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    # bool is a subclass of int in Python: reject it explicitly for numeric fields.
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return _jsonable(dataclasses.asdict(cfg))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
