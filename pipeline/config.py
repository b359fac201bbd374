"""Strict, typed configuration: every `params.yaml` section is a frozen dataclass.

The loader follows nanoGPT's `configurator.py` in spirit (an unknown key or a wrong type is an
error), but raises a one-line `ConfigError` naming the dotted key instead of exec-ing overrides.
Field names are identical to the params keys: there is no renaming layer. Derived numbers (vocabulary
size, token grid, offsets) are never config: they are computed from artifacts downstream.

This module reads only the file path it is given; stages decide which file and which section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

from pipeline.constraints import (
    CodebookSize,
    DropRate,
    Factor,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
    Range,
    UnitInterval,
    power_of_two,
)

T = TypeVar("T")


class ConfigError(ValueError):
    """A params file does not match its schema; the message is one line naming the key."""


# --------------------------------------------------------------------------------------------------
# schema


# Model and optimiser schemas; their modules re-export them (models/*.py, optim.py, solver/augment.py).


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "swinv2_tiny_window8_256"
    # The input side timm builds the per-stage windows and shifts for (other sizes are still accepted).
    # Derived, not a param: train_solver sets the run's input side (480 depth crops, 640 instances).
    img_size: PositiveInt | None = None
    window_size: PositiveInt | None = None  # None keeps the variant's default
    patch_size: PositiveInt | None = None  # None keeps the variant's 4; 2 halves the stride (small inputs)
    embed_dim: PositiveInt | None = None
    depths: tuple[PositiveInt, ...] | None = None
    num_heads: tuple[PositiveInt, ...] | None = None
    pretrained_window_sizes: tuple[NonNegativeInt, ...] | None = None  # SimMIM: (12, 12, 12, 6), ref §4.1
    drop_path_rate: DropRate = 0.1
    normalize: bool = True  # standardise [0, 1] RGB with the variant's mean/std (see module doc)
    pretrained: bool = False  # timm hub weights (needs network); prefer `weights`
    weights: str | None = None  # local .safetensors or torch state-dict file
    # Recompute each block's activations in the backward pass (timm set_grad_checkpointing): the same
    # results for much less activation memory at 640² (bench/bench_train.py), about a third more compute.
    grad_checkpointing: bool = False


@dataclass(frozen=True)
class SolverModelConfig:
    """The architecture choices a user sets (params `solver.model`, AiT ref §4.2)."""

    dim: PositiveInt = 256
    num_heads: PositiveInt = 8
    ffn_dim: PositiveInt = 1024
    num_encoder_layers: NonNegativeInt = 6
    num_decoder_layers: PositiveInt = 6
    dropout: DropRate = 0.1
    drop_path: DropRate = 0.1  # constant per layer, as every official config (drop_path_linear=False)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"dim: {self.dim} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class VQVAEConfig:
    hidden_dim: PositiveInt = 16  # width of the first conv; the paper's "width 0.5x/1x/2x" is 8/16/32
    downsample_ratio: Annotated[int, Range(lo=2)] = 32  # r, a power of two >= 2
    num_embeddings: CodebookSize = 128  # K
    embedding_dim: PositiveInt = 512  # D
    num_res_blocks: NonNegativeInt = 2
    channels: PositiveInt = 1
    input_scale: Literal["none", "symmetric"] = "none"

    def __post_init__(self) -> None:
        if not power_of_two(self.downsample_ratio):
            raise ConfigError(f"downsample_ratio: must be a power of two ≥ 2, got {self.downsample_ratio}")


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "adamw"] = "adamw"
    lr: PositiveFloat = 3e-4
    weight_decay: NonNegativeFloat = 0.0
    betas: tuple[DropRate, DropRate] = (0.9, 0.999)
    grad_clip: NonNegativeFloat = 0.0  # max L2 norm of all gradients; 0 = off
    schedule: Literal["constant", "exp_step", "cosine", "step", "linear"] = "constant"
    warmup_steps: NonNegativeInt = 0
    warmup_start_factor: Factor = 1e-3  # lr factor at step 0 of the warm-up (linear ramp to 1)
    decay: Factor = 0.98  # exp_step: lr *= decay every `decay_every` steps
    decay_every: PositiveInt = 500
    milestones: tuple[OpenFraction, ...] = ()  # step: fractions of the run where lr *= gamma
    gamma: PositiveFloat = 0.1
    final_factor: UnitInterval = 0.0  # cosine / linear: lr factor reached at the last step


@dataclass(frozen=True)
class DepthAugmentConfig:
    """The depth solver's per-sample RGB augmentation (AiT ref §6.1); defaults are the official ones.

    Shift limits are on albumentations' uint8 scales: a value ± x draws U(−x, x).
    """

    # each of brightness/contrast, gamma and HSV fires independently with this p
    p_photometric: UnitInterval = 0.5
    brightness_contrast: UnitInterval = 0.2  # RandomBrightnessContrast: gain 1 ± x, shift ± x (0 = off)
    # RandomGamma: rgb ** U(lo, hi) (albumentations 80-120 / 100)
    gamma: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.2)
    hue: Annotated[float, Range(0, 180)] = 20.0  # HueSaturationValue, OpenCV units (180 a turn): 20 = ±40°
    saturation: Annotated[float, Range(0, 255)] = 30.0  # additive on HSV saturation, in 1/255
    value: Annotated[float, Range(0, 255)] = 20.0  # additive on HSV value, in 1/255
    cutdepth_p: UnitInterval = 0.25  # GLPDepth vertical CutDepth (official: every 4th call per worker)

    def __post_init__(self) -> None:
        _ordered_pair(self.gamma, "gamma")


@dataclass(frozen=True)
class BaseConfig:
    seed: NonNegativeInt = 0


@dataclass(frozen=True)
class DemoConfig:
    """The embedded demo dataset rendered by `ait data demo` (see pipeline/data/demo)."""

    seed: NonNegativeInt = 0
    num_scenes: Annotated[int, Range(lo=2)] = 12  # rooms; each room is one scene folder
    test_scenes: PositiveInt = 2  # the last rooms form the test split (no scene straddles splits, as NYUv2)
    frames_per_scene: PositiveInt = 16
    height: Annotated[int, Range(lo=16)] = 120
    width: Annotated[int, Range(lo=16)] = 160
    max_range: PositiveFloat = 6.0  # metres; the sensor returns nothing beyond this
    projector_baseline: NonNegativeFloat = 0.075  # metres; Kinect's projector sits this far to the side
    dark_fraction: UnitInterval = 0.15  # fraction of objects with an IR-absorbing (no-return) material
    specular_fraction: UnitInterval = 0.15  # fraction of objects whose near-normal view saturates the sensor
    jpeg_quality: Annotated[int, Range(1, 100)] = 92
    flash: UnitInterval = 0.8  # share of the light from a lamp at the camera: brightness falls as 1/depth²
    tint: UnitInterval = 0.7  # share of each object's colour replaced by its category's hue (a class cue)

    def __post_init__(self) -> None:
        if self.test_scenes >= self.num_scenes:
            raise ConfigError(f"test_scenes: {self.test_scenes} leaves no training scene of num_scenes "
                              f"{self.num_scenes}")


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
    max_bad_fraction: UnitInterval = 0.05  # prepare fails when more than this fraction of samples is bad
    demo: DemoConfig = field(default_factory=DemoConfig)
    tasks: DataTasksConfig = field(default_factory=DataTasksConfig)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    steps: PositiveInt = 1000  # optimiser steps (the paper counts epochs; steps make demo budgets exact)
    batch_size: PositiveInt = 8  # global batch, split over DDP ranks
    crop_size: PositiveInt = 480  # depth: side of the square random training crop; insseg: mask crop side
    patch_size: PositiveInt = 16  # mask augmentation patch side (depth only, AiT ref §2)
    num_workers: NonNegativeInt = 0  # DataLoader workers per rank
    log_every: PositiveInt = 10
    # EMA count below which a code restarts; 0 = off (as the paper)
    dead_code_threshold: NonNegativeFloat = 0.0


@dataclass(frozen=True)
class TokenizerTaskConfig:
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)

    def __post_init__(self) -> None:
        r = self.model.downsample_ratio
        if self.train.crop_size % r:  # the encoder halves the crop log2(r) times (AiT ref §1.1)
            raise ConfigError(f"train.crop_size: {self.train.crop_size} is not a multiple of "
                              f"model.downsample_ratio {r}")


@dataclass(frozen=True)
class TokenizerVariant:
    """One trained tokenizer: its task and, for depth, the mask-augmentation ratio (paper Table 8)."""

    task: Literal["depth", "insseg"]
    mask_ratio: DropRate = 0.0  # 1 would mask every patch


@dataclass(frozen=True)
class TokenizerConfig:
    variants: dict[str, TokenizerVariant] = field(default_factory=dict)
    solver_depth_variant: str = "depth_mask50"  # the depth tokenizer the task-solver is trained with
    depth: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)
    insseg: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)

    def __post_init__(self) -> None:
        tasks = {name: v.task for name, v in self.variants.items()}
        check_variant(self.solver_depth_variant, tasks, "depth", "solver_depth_variant")


@dataclass(frozen=True)
class DepthCacheConfig:
    # side of the solver's square training crop (paper: 480 of the 480x640 frame)
    crop_size: PositiveInt = 480
    crop_stride: PositiveInt = 32  # x-offset stride of the cached views; 1 = every offset the solver can draw
    shard_max_samples: PositiveInt = 1000  # samples per WebDataset shard
    batch_size: PositiveInt = 16  # tokenizer encode batch
    num_workers: NonNegativeInt = 0  # DataLoader workers decoding labels


@dataclass(frozen=True)
class InssegCacheConfig:
    shard_max_samples: PositiveInt = 1000
    batch_size: PositiveInt = 256  # mask crops per encode batch
    num_workers: NonNegativeInt = 0


@dataclass(frozen=True)
class CacheConfig:
    depth: DepthCacheConfig = field(default_factory=DepthCacheConfig)
    insseg: InssegCacheConfig = field(default_factory=InssegCacheConfig)


@dataclass(frozen=True)
class DepthTaskConfig:
    """How the solver learns depth (AiT ref §3, §4.4); how it decodes is `DepthInferConfig`."""

    aux_weight: NonNegativeFloat = 1.0  # SiLog of the soft decode through the frozen detokenizer (§3.3)
    tau: PositiveFloat = 0.8  # temperature of the aux loss's soft decode (multiplies the logits)
    augment: DepthAugmentConfig = field(default_factory=DepthAugmentConfig)  # training RGB only (§6.1)


@dataclass(frozen=True)
class InssegTaskConfig:
    """How the solver learns instances (AiT ref §4.5); how it decodes is `InssegInferConfig`."""

    num_query: PositiveInt = 100  # objects per sequence (21 tokens each)
    image_size: PositiveInt = 640  # square (padded) input side; also the coordinate normalisation
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.1, 3.0)  # large-scale jitter of the training images
    order: Literal["random", "area"] = "random"  # object order in a sequence (AiT: random each iteration)
    aux_weight: NonNegativeFloat = 5.0  # Dice + MSE of the soft-decoded masks (§3.3)
    mask_weight: NonNegativeFloat = 0.2  # CE weight of mask-code targets
    tau: PositiveFloat = 1.0  # temperature of the aux loss's soft decode
    color_jitter: UnitInterval = 0.2

    def __post_init__(self) -> None:
        _ordered_pair(self.scale_range, "scale_range")


@dataclass(frozen=True)
class SolverRunConfig:
    """One train_solver@<run> stage: which tasks, how long, how."""

    tasks: tuple[Literal["depth", "insseg"], ...] = ("depth",)
    steps: PositiveInt = 1000
    batch_size: dict[str, PositiveInt] = field(default_factory=lambda: {"depth": 24})  # global, per task
    # per task, default 1 (joint: depth 0.2)
    loss_weights: dict[str, NonNegativeFloat] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    layer_decay: Factor = 0.9  # backbone lr = lr * layer_decay ** (num_layers - 1 - layer_id)
    parallel: bool = False  # the parallel decoder (AiT-P, paper §4.4 / Table 9), studied for depth only
    num_workers: NonNegativeInt = 0
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 100  # steps between resumable checkpoints

    def __post_init__(self) -> None:
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: must name each task once and at least one, got {list(self.tasks)}")
        if set(self.batch_size) != set(self.tasks):
            raise ConfigError(f"batch_size: keys {sorted(self.batch_size)} must match tasks "
                              f"{list(self.tasks)}")
        if not set(self.loss_weights) <= set(self.tasks):
            raise ConfigError(f"loss_weights: keys {sorted(self.loss_weights)} are not all in tasks "
                              f"{list(self.tasks)}")


@dataclass(frozen=True)
class SolverConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: SolverModelConfig = field(default_factory=SolverModelConfig)
    num_bins: Annotated[int, Range(lo=2)] = 2000  # coordinate bins (the vocabulary gets num_bins + 1)
    spare_codes: NonNegativeInt = 0  # vocabulary rows kept for future tasks (paper's insseg configs: 128)
    depth: DepthTaskConfig = field(default_factory=DepthTaskConfig)
    insseg: InssegTaskConfig = field(default_factory=InssegTaskConfig)
    runs: dict[str, SolverRunConfig] = field(default_factory=dict)


# Inference only: evaluate@<run> and eval_tokenizer@<variant> read these, training never does, so
# switching a decoding trick (paper Table 7) re-runs evaluation alone.


@dataclass(frozen=True)
class DepthInferConfig:
    """How evaluate@<run> decodes and scores depth (AiT ref §3.1-3.2, §5.1)."""

    soft_input: bool = True  # solver side: next input = softmax(code logits) @ code embeddings
    soft_decode: bool = True  # detokenizer side: decode_soft instead of decode(argmax)
    tau: PositiveFloat = 0.8  # decode_soft temperature (multiplies the logits)
    flip_tta: bool = True  # average each window with its horizontal flip (ref §5.1)
    shift_windows: bool = True  # sliding S x S windows; False = one centred window


@dataclass(frozen=True)
class InssegInferConfig:
    """How evaluate@<run> decodes and scores instances (AiT ref §4.5, §5.2)."""

    soft_input: bool = True
    soft_decode: bool = True
    tau: PositiveFloat = 1.0
    top_p: UnitInterval = 0.0  # 0 = greedy (deterministic); the paper samples with 0.3
    seed: NonNegativeInt = 0  # of the top-p sampling generator
    panel_score: UnitInterval = 0.3  # instances drawn in the panels score at least this


@dataclass(frozen=True)
class TokenizerEvalConfig:
    """How eval_tokenizer@<variant> soft-decodes (AiT ref §3.2: tau multiplies the logits)."""

    tau: PositiveFloat = 1.0


@dataclass(frozen=True)
class TokenizerEvalTasks:
    depth: TokenizerEvalConfig = field(default_factory=TokenizerEvalConfig)
    insseg: TokenizerEvalConfig = field(default_factory=TokenizerEvalConfig)


@dataclass(frozen=True)
class EvalConfig:
    """How evaluation runs (never what the model is): batching and panels, then per-task decoding."""

    batch_images: PositiveInt = 4  # images per generate call (depth: x windows x flips sequences)
    num_panels: NonNegativeInt = 4  # PNG panels for the first samples of each task
    max_images: NonNegativeInt = 0  # evaluate only the first N samples (0 = all)
    depth: DepthInferConfig = field(default_factory=DepthInferConfig)
    insseg: InssegInferConfig = field(default_factory=InssegInferConfig)
    tokenizer: TokenizerEvalTasks = field(default_factory=TokenizerEvalTasks)


def _ordered_pair(pair: tuple[float, float], name: str) -> None:
    if pair[0] > pair[1]:
        raise ConfigError(f"{name}: lower bound {pair[0]} is above upper bound {pair[1]}")


def check_variant(name: str, tasks: dict[str, str], task: str, key: str) -> None:
    """`name` must be a `task` entry of tokenizer.variants (`tasks`: variant -> task); `key` chose it."""
    if tasks.get(name) != task:
        known = ", ".join(k for k, t in tasks.items() if t == task) or "none"
        raise ConfigError(f"{key}: {name!r} is not a {task} variant of tokenizer.variants "
                          f"({task} variants: {known})")


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
        section = from_dict(cls, node, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if _READS is not None:
        _track(section, key)
    return section


def load_value(path: str | Path, key: str) -> Any:
    """Load the single dotted value `key` (e.g. "data.max_bad_fraction"), checked against the type and
    range its dataclass field declares."""
    tp = field_type(key)
    node: Any = read_params(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: missing key '{key}'")
        node = node[part]
    try:
        value = _coerce(tp, node, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if _READS is not None:
        _READS.add(key)
    return value


def field_type(key: str) -> Any:
    """The declared type (with its range) of the dotted params key, walking the section schemas."""
    parts = key.split(".")
    tp: Any = SECTIONS[parts[0]]
    for part in parts[1:]:
        if typing.get_origin(tp) is dict:  # a named entry (tokenizer.variants.<name>, solver.runs.<run>)
            tp = typing.get_args(tp)[1]
        else:
            tp = typing.get_type_hints(tp, include_extras=True)[part]
    return tp


def load_variant(path: str | Path, name: str, task: str, key: str) -> TokenizerVariant:
    """The `task` tokenizer variant `name` that params key `key` chose, or one line listing the known ones
    (a stage that trains on a variant's cache reads only that variant's entry)."""
    variants = read_params(path).get("tokenizer", {}).get("variants")
    variants = variants if isinstance(variants, dict) else {}
    tasks = {k: v.get("task") for k, v in variants.items() if isinstance(v, dict)}
    try:
        check_variant(name, tasks, task, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    variant = load_section(path, f"tokenizer.variants.{name}", TokenizerVariant)
    if variant.task != task:  # checked above; reading it records the one key the caller depends on
        raise ConfigError(f"{path}: {key}: {name!r} is not a {task} variant")
    return variant


def load_all(path: str | Path) -> dict[str, Any]:
    """Every registered section of the file, validated; an unknown top-level section is an error."""
    raw = read_params(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section '{unknown[0]}'")
    return {name: load_section(path, name, cls) for name, cls in SECTIONS.items() if name in raw}


# --------------------------------------------------------------------------------------------------
# which params a stage reads: DVC re-runs a stage exactly when a key in its `params:` changes, so a key
# read but not declared leaves stale results and a key declared but never read causes needless re-runs.
# tests/test_stage_params.py runs every dvc.yaml stage under `record_reads` and compares.

_READS: set[str] | None = None
_TRACKED: dict[type, type] = {}


@contextlib.contextmanager
def record_reads() -> Iterator[set[str]]:
    """Collect the dotted params keys read inside the block: each `load_value` key, and each leaf field
    of a `load_section` result that the code accesses (a nested section counts through its leaves)."""
    global _READS
    previous, _READS = _READS, set()
    try:
        yield _READS
    finally:
        _READS = previous


def _is_section(value: Any) -> bool:
    if isinstance(value, dict):
        return any(dataclasses.is_dataclass(v) for v in value.values())
    return dataclasses.is_dataclass(value)


def _tracked_class(cls: type) -> type:
    """A subclass of the frozen dataclass `cls` whose field reads are added to the active record."""
    if cls not in _TRACKED:
        names = frozenset(f.name for f in dataclasses.fields(cls))

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            key = self.__dict__.get("_params_key") if name in names else None
            if key is not None and _READS is not None and not _is_section(value):
                _READS.add(f"{key}.{name}")
            return value

        _TRACKED[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                    "__qualname__": cls.__qualname__})
    return _TRACKED[cls]


def _track(section: Any, key: str) -> None:
    """Make `section` (and the sections inside it) report field reads under the dotted `key`."""
    object.__setattr__(section, "__class__", _tracked_class(type(section)))
    object.__setattr__(section, "_params_key", key)
    for f in dataclasses.fields(section):
        value = object.__getattribute__(section, f.name)
        if dataclasses.is_dataclass(value):
            _track(value, f"{key}.{f.name}")
        elif isinstance(value, dict):
            for name, item in value.items():
                if dataclasses.is_dataclass(item):
                    _track(item, f"{key}.{f.name}.{name}")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
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
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a cross-field rule of __post_init__ names the field, not the section
        raise ConfigError(f"{where}.{e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:  # Annotated[type, Range(...)]: coerce, then range-check
        value = _coerce(args[0], value, where)
        for rule in tp.__metadata__:
            rule.check(value, where)
        return value
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
