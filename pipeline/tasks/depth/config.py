"""The depth task's params sections: `data.tasks.depth`, `cache.depth`, `solver.depth` and
`evaluate.depth`.

`CONFIGS` is what the registry hands the params schema (pipeline/core/config.py assembles the task-keyed
sections from every task's `CONFIGS`); a stage loads only its own task's classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pipeline.core.config import TaskConfigs, ViewCacheConfig, WindowInferConfig, ordered_pair
from pipeline.core.constraints import NonNegativeFloat, PositiveFloat, Range, UnitInterval
from pipeline.core.sources import ListSourceConfig


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
        ordered_pair(self.gamma, "gamma")


@dataclass(frozen=True)
class DepthTaskConfig:
    """How the solver learns depth (PAPER_NOTES §3, §4.4); how it decodes is `DepthInferConfig`."""

    aux_weight: NonNegativeFloat = 1.0  # SiLog of the soft decode through the frozen detokenizer (§3.3)
    tau: PositiveFloat = 0.8  # temperature of the aux loss's soft decode (multiplies the logits)
    augment: DepthAugmentConfig = field(default_factory=DepthAugmentConfig)  # training RGB only (§6.1)


@dataclass(frozen=True)
class DepthInferConfig(WindowInferConfig):
    """How evaluate@<run> decodes and scores depth (PAPER_NOTES §3.1-3.2, §5.1)."""

    tau: PositiveFloat = 0.8  # decode_soft temperature (multiplies the logits)


CONFIGS = TaskConfigs(source=ListSourceConfig, cache=ViewCacheConfig, solver=DepthTaskConfig,
                      infer=DepthInferConfig)
