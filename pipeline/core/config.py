"""The params schema: every `params.yaml` section is a frozen dataclass, every field a type and range.

Field names are identical to the params keys: there is no renaming layer. Derived numbers (vocabulary
size, token grid, offsets) are never config: they are computed from artifacts downstream. Rules that
tie fields together live in each dataclass's `__post_init__`. Reading a params file into these classes
(strictly, with the keys each stage reads recorded) is `pipeline/core/params.py`. The `data` section (where
the datasets live) is `pipeline/core/sources.py`.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from pipeline.core.constraints import (
    CodebookSize,
    ConfigError,
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
from pipeline.core.sources import DataConfig
from pipeline.tasks.registry import TASK_NAMES, check_task

TaskName = Literal[tuple(sorted(TASK_NAMES))]  # the registered tasks (pipeline/tasks/registry.py)

# --------------------------------------------------------------------------------------------------
# schema


# Model and optimiser schemas; their modules re-export them (models/*.py, optim.py).


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
    pretrained_window_sizes: tuple[NonNegativeInt, ...] | None = None  # SimMIM: (12, 12, 12, 6), PAPER_NOTES §4.1
    drop_path_rate: DropRate = 0.1
    normalize: bool = True  # standardise [0, 1] RGB with the variant's mean/std (see module doc)
    # Where the weights start (PAPER_NOTES §4.1, §4.6): `checkpoint` = the local file `weights` (timm,
    # official Swin/SimMIM, detector or this project's layout: models/pretrained.py), `scratch` = random
    # on purpose, `timm` = timm's hub weights (needs network). Unset, a solver run refuses to start.
    init: Literal["checkpoint", "scratch", "timm"] | None = None
    weights: str | None = None  # the local checkpoint of `init: checkpoint` (implies it when init is unset)
    # Recompute each block's activations in the backward pass (timm set_grad_checkpointing): the same
    # results for much less activation memory at 640² (bench/bench_train.py), about a third more compute.
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.weights is not None and self.init in ("scratch", "timm"):
            raise ConfigError(f"weights: {self.weights!r} contradicts init: {self.init} (drop one of them)")

    def check_initialised(self, key: str) -> None:
        """A run must say where its backbone starts: a checkpoint file, or `init: scratch` on purpose.
        `key` is the params section that sets it."""
        if self.init == "checkpoint" and self.weights is None:
            raise ConfigError(f"{key}.weights: not set, but init is checkpoint: give the path of the pretrained "
                              f"{self.name} checkpoint (docs/REPRODUCE.md lists each run's)")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"{key}.weights: {self.weights} not found (docs/REPRODUCE.md: where each run's "
                              f"pretrained checkpoint comes from)")
        if self.init is None and self.weights is None:
            raise ConfigError(f"{key}.init: not set and no {key}.weights: the {self.name} backbone would train "
                              f"from random initialisation; set weights to a pretrained checkpoint, or "
                              f"init: scratch to train from scratch on purpose")


@dataclass(frozen=True)
class BackboneInit:
    """A run's own start (params `solver.runs.<run>.backbone`), over the shared `solver.backbone`: the paper
    starts depth from SimMIM weights and the COCO runs from a detection-pretrained backbone + encoder with
    drop-path 0.3 (PAPER_NOTES §4.1, §4.6). Unset fields keep the shared section's values."""

    init: Literal["checkpoint", "scratch", "timm"] | None = None
    weights: str | None = None
    drop_path_rate: DropRate | None = None

    def apply(self, shared: BackboneConfig) -> BackboneConfig:
        """The run's backbone config: `shared` with these fields; `scratch`/`timm` drop a shared file."""
        changes = {k: v for k, v in asdict(self).items() if v is not None}
        if self.init in ("scratch", "timm"):
            changes["weights"] = None
        elif self.weights is not None and self.init is None:
            changes["init"] = "checkpoint"
        return replace(shared, **changes)


@dataclass(frozen=True)
class SolverModelConfig:
    """The architecture choices a user sets (params `solver.model`, PAPER_NOTES §4.2)."""

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
    input_scale: Literal["none", "symmetric", "onehot"] = "none"  # onehot: channels = N semseg classes

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
class BaseConfig:
    seed: NonNegativeInt = 0


@dataclass(frozen=True)
class TokenizerTrainConfig:
    steps: PositiveInt = 1000  # optimiser steps (the paper counts epochs; steps make demo budgets exact)
    batch_size: PositiveInt = 8  # global batch, split over DDP ranks
    crop_size: PositiveInt = 480  # depth: side of the square random training crop; insseg: mask crop side
    patch_size: PositiveInt = 16  # mask augmentation patch side (depth only, PAPER_NOTES §2)
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
        if self.train.crop_size % r:  # the encoder halves the crop log2(r) times (PAPER_NOTES §1.1)
            raise ConfigError(f"train.crop_size: {self.train.crop_size} is not a multiple of "
                              f"model.downsample_ratio {r}")


@dataclass(frozen=True)
class TokenizerVariant:
    """One trained tokenizer: its task and, for depth, the mask-augmentation ratio (paper Table 8)."""

    task: TaskName
    mask_ratio: DropRate = 0.0  # 1 would mask every patch


@dataclass(frozen=True)
class TokenizerVariants:
    """The task-blind part of `tokenizer`; `sections()` adds one `TokenizerTaskConfig` per task."""

    variants: dict[str, TokenizerVariant] = field(default_factory=dict)
    # per task, the tokenizer variant the task-solver is trained with (its cache feeds train_solver)
    solver_variants: dict[TaskName, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.variants:
            check_name(name, "variants")
        tasks = {name: v.task for name, v in self.variants.items()}
        for task, name in self.solver_variants.items():
            check_variant(name, tasks, task, f"solver_variants.{task}")


@dataclass(frozen=True)
class ViewCacheConfig:
    """A per-view token cache (`token_cache.layouts.ViewLayout`): the dense tasks' `cache.<task>`."""

    # side of the solver's square training crop (paper: 480 of the 480x640 frame)
    crop_size: PositiveInt = 480
    crop_stride: PositiveInt = 32  # x-offset stride of the cached views; 1 = every offset the solver can draw
    shard_max_samples: PositiveInt = 1000  # samples per WebDataset shard
    batch_size: PositiveInt = 16  # tokenizer encode batch
    num_workers: NonNegativeInt = 0  # DataLoader workers decoding labels


@dataclass(frozen=True)
class SolverRunConfig:
    """One train_solver@<run> stage: which tasks, how long, how."""

    tasks: tuple[TaskName, ...]
    batch_size: dict[str, PositiveInt]  # global, per task
    steps: PositiveInt = 1000
    # per task, default 1 (joint: depth 0.2)
    loss_weights: dict[str, NonNegativeFloat] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    layer_decay: Factor = 0.9  # backbone lr = lr * layer_decay ** (num_layers - 1 - layer_id)
    parallel: bool = False  # the parallel decoder (AiT-P, paper §4.4 / Table 9), studied for depth only
    num_workers: NonNegativeInt = 0
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 100  # steps between resumable checkpoints
    backbone: BackboneInit = field(default_factory=BackboneInit)  # this run's start (weights, drop-path)

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
class SolverShared:
    """The task-blind part of `solver`; `sections()` adds each task's own `solver.<task>` class."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: SolverModelConfig = field(default_factory=SolverModelConfig)
    num_bins: Annotated[int, Range(lo=2)] = 2000  # coordinate bins (the vocabulary gets num_bins + 1)
    spare_codes: NonNegativeInt = 0  # vocabulary rows kept for future tasks (paper's insseg configs: 128)
    runs: dict[str, SolverRunConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.runs:
            check_name(name, "runs")


# Inference only: evaluate@<run> and eval_tokenizer@<variant> read these, training never does, so
# switching a decoding trick (paper Table 7) re-runs evaluation alone.


@dataclass(frozen=True)
class TokenizerEvalConfig:
    """How eval_tokenizer@<variant> soft-decodes (PAPER_NOTES §3.2: tau multiplies the logits)."""

    tau: PositiveFloat = 1.0


@dataclass(frozen=True)
class WindowInferConfig:
    """How evaluate@<run> decodes a dense map by S x S windows and flips (PAPER_NOTES §3.1-3.2, §5.1)."""

    soft_input: bool = True  # solver side: next input = softmax(code logits) @ code embeddings
    soft_decode: bool = True  # detokenizer side: decode_soft instead of decode(argmax)
    tau: PositiveFloat = 1.0  # decode_soft temperature (multiplies the logits)
    flip_tta: bool = True  # average each window with its horizontal flip (PAPER_NOTES §5.1)
    shift_windows: bool = True  # sliding S x S windows; False = one centred window


@dataclass(frozen=True)
class EvalConfig:
    """How evaluation runs (never what the model is): batching and panels. `sections()` adds each task's
    decoding (`evaluate.<task>`) and `evaluate.tokenizer.<task>`."""

    batch_images: PositiveInt = 4  # images per generate call (depth: x windows x flips sequences)
    num_panels: NonNegativeInt = 4  # PNG panels for the first samples of each task
    max_images: NonNegativeInt = 0  # evaluate only the first N samples (0 = all)


@dataclass(frozen=True)
class TaskConfigs:
    """A task's own params classes (`pipeline/tasks/<task>/config.py` `CONFIGS`): where its data is
    (`data.tasks.<task>`), how it is cached (`cache.<task>`), learned (`solver.<task>`) and decoded
    (`evaluate.<task>`). Its tokenizer (`tokenizer.<task>`) is a `TokenizerTaskConfig` like every task's."""

    source: type
    cache: type
    solver: type
    infer: type


def ordered_pair(pair: tuple[float, float], name: str) -> None:
    if pair[0] > pair[1]:
        raise ConfigError(f"{name}: lower bound {pair[0]} is above upper bound {pair[1]}")


# A variant or run name becomes a DVC stage name (`train_tokenizer@<name>`), folder names under data/,
# models/ and results/, and a word on the stages' command lines: one spelling that is safe as all three.
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_name(name: object, key: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a usable name (it becomes a DVC stage name, folder names "
                          f"and a command-line word): use up to 64 lower-case letters, digits and _, "
                          f"starting with a letter")


def check_variant(name: str, tasks: dict[str, str], task: str, key: str) -> None:
    """`name` must be a `task` entry of tokenizer.variants (`tasks`: variant -> task); `key` chose it."""
    check_name(name, key)
    if tasks.get(name) != task:
        known = ", ".join(k for k, t in tasks.items() if t == task) or "none"
        raise ConfigError(f"{key}: {name!r} is not a {task} variant of tokenizer.variants "
                          f"({task} variants: {known})")


def task_configs(task: str) -> TaskConfigs:
    """`CONFIGS` of the registered `task`, imported from its folder alone (the registry's rule)."""
    return importlib.import_module(f"pipeline.tasks.{check_task(task)}.config").CONFIGS


# Where the task-keyed sections sit (dotted prefix -> the `TaskConfigs` role of each task's entry):
TASK_KEYED = {"data.tasks": "source", "cache": "cache", "solver": "solver", "evaluate": "infer",
              "tokenizer": None, "evaluate.tokenizer": None}  # None: the same class for every task
SHARED_TYPES = {"tokenizer": TokenizerTaskConfig, "evaluate.tokenizer": TokenizerEvalConfig}


def task_section_type(prefix: str, task: str) -> type:
    """The class of `<prefix>.<task>` (e.g. `cache.depth`), importing that task's config module only."""
    role = TASK_KEYED[prefix]
    return SHARED_TYPES[prefix] if role is None else getattr(task_configs(task), role)


def _per_task(name: str, prefix: str, base: type | None = None, extra: tuple = ()) -> type:
    """A frozen dataclass (subclass of `base`) with a field per registered task, typed as `<prefix>.<task>`."""
    fields = [(task, cls, field(default_factory=cls))
              for task, cls in ((task, task_section_type(prefix, task)) for task in TASK_NAMES)]
    return make_dataclass(name, [*fields, *extra], bases=(base,) if base else (), frozen=True)


@functools.cache
def sections() -> dict[str, type]:
    """Every top-level params.yaml section and its whole schema. The task-keyed parts are assembled from
    every registered task's own classes, so this imports every task's config module: the whole-file
    checks use it (`ait preset`, `params.load_all`); a stage loads only its own sections."""
    data_tasks = _per_task("DataTasksConfig", "data.tasks")
    eval_tokenizer = _per_task("TokenizerEvalTasks", "evaluate.tokenizer")
    return {
        "base": BaseConfig,
        "data": make_dataclass("DataSections", [("tasks", data_tasks, field(default_factory=data_tasks))],
                               bases=(DataConfig,), frozen=True),
        "tokenizer": _per_task("TokenizerConfig", "tokenizer", TokenizerVariants),
        "cache": _per_task("CacheConfig", "cache"),
        "solver": _per_task("SolverConfig", "solver", SolverShared),
        "evaluate": _per_task("EvalSections", "evaluate", EvalConfig,
                              (("tokenizer", eval_tokenizer, field(default_factory=eval_tokenizer)),)),
    }
