"""The instance task's params sections: `data.tasks.insseg`, `cache.insseg`, `solver.insseg` and
`evaluate.insseg`.

`CONFIGS` is what the registry hands the params schema; a stage loads only its own task's classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.core.config import TaskConfigs, ordered_pair
from pipeline.core.constraints import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitInterval,
)


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
class InssegCacheConfig:
    shard_max_samples: PositiveInt = 1000
    batch_size: PositiveInt = 256  # mask crops per encode batch
    num_workers: NonNegativeInt = 0


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
        ordered_pair(self.scale_range, "scale_range")


@dataclass(frozen=True)
class InssegInferConfig:
    """How evaluate@<run> decodes and scores instances (PAPER_NOTES §4.5, §5.2)."""

    soft_input: bool = True
    soft_decode: bool = True
    tau: PositiveFloat = 1.0
    top_p: UnitInterval = 0.0  # 0 = greedy (deterministic); the paper samples with 0.3
    seed: NonNegativeInt = 0  # of the top-p sampling generator
    panel_score: UnitInterval = 0.3  # instances drawn in the panels score at least this


CONFIGS = TaskConfigs(source=InssegSourceConfig, cache=InssegCacheConfig, solver=InssegTaskConfig,
                      infer=InssegInferConfig)
