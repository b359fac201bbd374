"""The params schema: every `params.yaml` section is a frozen dataclass, every field a type and range.

Field names are identical to the params keys: there is no renaming layer. Derived numbers (vocabulary
size, token grid, offsets) are never config: they are computed from artifacts downstream. Rules that
tie fields together live in each dataclass's `__post_init__`. Reading a params file into these classes
(strictly, with the keys each stage reads recorded) is `pipeline/params.py`. The `data` section (where
the datasets live) is `pipeline/data/sources.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

from pipeline.constraints import (
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
from pipeline.data.sources import DataConfig

TaskName = Literal["depth", "insseg", "semseg"]  # the registered tasks (pipeline/tasks/registry.py)

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
class DepthAugmentConfig:
    """The depth solver's per-sample RGB augmentation (PAPER_NOTES §6.1); defaults are the official ones.

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
class TokenizerConfig:
    variants: dict[str, TokenizerVariant] = field(default_factory=dict)
    # per task, the tokenizer variant the task-solver is trained with (its cache feeds train_solver)
    solver_variants: dict[TaskName, str] = field(default_factory=dict)
    depth: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)
    insseg: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)
    semseg: TokenizerTaskConfig = field(default_factory=TokenizerTaskConfig)

    def __post_init__(self) -> None:
        tasks = {name: v.task for name, v in self.variants.items()}
        for task, name in self.solver_variants.items():
            check_variant(name, tasks, task, f"solver_variants.{task}")


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
class SemsegCacheConfig(DepthCacheConfig):
    """Class maps are cached per view like depth: the same crop, stride and sharding knobs."""


@dataclass(frozen=True)
class CacheConfig:
    depth: DepthCacheConfig = field(default_factory=DepthCacheConfig)
    insseg: InssegCacheConfig = field(default_factory=InssegCacheConfig)
    semseg: SemsegCacheConfig = field(default_factory=SemsegCacheConfig)


@dataclass(frozen=True)
class DepthTaskConfig:
    """How the solver learns depth (PAPER_NOTES §3, §4.4); how it decodes is `DepthInferConfig`."""

    aux_weight: NonNegativeFloat = 1.0  # SiLog of the soft decode through the frozen detokenizer (§3.3)
    tau: PositiveFloat = 0.8  # temperature of the aux loss's soft decode (multiplies the logits)
    augment: DepthAugmentConfig = field(default_factory=DepthAugmentConfig)  # training RGB only (§6.1)


@dataclass(frozen=True)
class InssegTaskConfig:
    """How the solver learns instances (PAPER_NOTES §4.5); how it decodes is `InssegInferConfig`."""

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
class SemsegTaskConfig:
    """How the solver learns class maps (the dense, discrete task); how it decodes is `SemsegInferConfig`."""

    aux_weight: NonNegativeFloat = 1.0  # CE of the soft-decoded class logits on labelled pixels (cf. §3.3)
    tau: PositiveFloat = 1.0  # temperature of the aux loss's soft decode
    color_jitter: UnitInterval = 0.2  # brightness / contrast / saturation of the training RGB


@dataclass(frozen=True)
class SolverRunConfig:
    """One train_solver@<run> stage: which tasks, how long, how."""

    tasks: tuple[TaskName, ...] = ("depth",)
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
class SolverConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: SolverModelConfig = field(default_factory=SolverModelConfig)
    num_bins: Annotated[int, Range(lo=2)] = 2000  # coordinate bins (the vocabulary gets num_bins + 1)
    spare_codes: NonNegativeInt = 0  # vocabulary rows kept for future tasks (paper's insseg configs: 128)
    depth: DepthTaskConfig = field(default_factory=DepthTaskConfig)
    insseg: InssegTaskConfig = field(default_factory=InssegTaskConfig)
    semseg: SemsegTaskConfig = field(default_factory=SemsegTaskConfig)
    runs: dict[str, SolverRunConfig] = field(default_factory=dict)


# Inference only: evaluate@<run> and eval_tokenizer@<variant> read these, training never does, so
# switching a decoding trick (paper Table 7) re-runs evaluation alone.


@dataclass(frozen=True)
class DepthInferConfig:
    """How evaluate@<run> decodes and scores depth (PAPER_NOTES §3.1-3.2, §5.1)."""

    soft_input: bool = True  # solver side: next input = softmax(code logits) @ code embeddings
    soft_decode: bool = True  # detokenizer side: decode_soft instead of decode(argmax)
    tau: PositiveFloat = 0.8  # decode_soft temperature (multiplies the logits)
    flip_tta: bool = True  # average each window with its horizontal flip (PAPER_NOTES §5.1)
    shift_windows: bool = True  # sliding S x S windows; False = one centred window


@dataclass(frozen=True)
class InssegInferConfig:
    """How evaluate@<run> decodes and scores instances (PAPER_NOTES §4.5, §5.2)."""

    soft_input: bool = True
    soft_decode: bool = True
    tau: PositiveFloat = 1.0
    top_p: UnitInterval = 0.0  # 0 = greedy (deterministic); the paper samples with 0.3
    seed: NonNegativeInt = 0  # of the top-p sampling generator
    panel_score: UnitInterval = 0.3  # instances drawn in the panels score at least this


@dataclass(frozen=True)
class SemsegInferConfig(DepthInferConfig):
    """How evaluate@<run> decodes class maps: the depth protocol's windows and flips, class
    probabilities averaged per pixel, then the argmax."""

    tau: PositiveFloat = 1.0


@dataclass(frozen=True)
class TokenizerEvalConfig:
    """How eval_tokenizer@<variant> soft-decodes (PAPER_NOTES §3.2: tau multiplies the logits)."""

    tau: PositiveFloat = 1.0


@dataclass(frozen=True)
class TokenizerEvalTasks:
    depth: TokenizerEvalConfig = field(default_factory=TokenizerEvalConfig)
    insseg: TokenizerEvalConfig = field(default_factory=TokenizerEvalConfig)
    semseg: TokenizerEvalConfig = field(default_factory=TokenizerEvalConfig)


@dataclass(frozen=True)
class EvalConfig:
    """How evaluation runs (never what the model is): batching and panels, then per-task decoding."""

    batch_images: PositiveInt = 4  # images per generate call (depth: x windows x flips sequences)
    num_panels: NonNegativeInt = 4  # PNG panels for the first samples of each task
    max_images: NonNegativeInt = 0  # evaluate only the first N samples (0 = all)
    depth: DepthInferConfig = field(default_factory=DepthInferConfig)
    insseg: InssegInferConfig = field(default_factory=InssegInferConfig)
    semseg: SemsegInferConfig = field(default_factory=SemsegInferConfig)
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
