"""The class-map task's params sections: `data.tasks.semseg`, `cache.semseg`, `solver.semseg` and
`evaluate.semseg`.

Class maps are cached per view and decoded by windows and flips like depth: the dense kinds' shared
classes (`ViewCacheConfig`, `WindowInferConfig`, `ListSourceConfig`). `CONFIGS` is what the registry
hands the params schema; a stage loads only its own task's classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.core.config import TaskConfigs, ViewCacheConfig, WindowInferConfig
from pipeline.core.constraints import NonNegativeFloat, PositiveFloat, UnitInterval
from pipeline.core.sources import ListSourceConfig


@dataclass(frozen=True)
class SemsegSourceConfig(ListSourceConfig):
    """Where `prepare@semseg` reads per-pixel class labels from: the depth lists' frames, each label
    beside its depth (`sync_depth_X.png` -> `label_X.png`), the classes in `<root>/semseg_classes.json`.
    Real NYUv2: the output of `ait data import-nyu-mat`; BTS lists only (DenseDepth's csv has no labels)."""

    layout: Literal["sync"] = "sync"


@dataclass(frozen=True)
class SemsegTaskConfig:
    """How the solver learns class maps (the dense, discrete task); how it decodes is `evaluate.semseg`
    (`WindowInferConfig`)."""

    aux_weight: NonNegativeFloat = 1.0  # CE of the soft-decoded class logits on labelled pixels (cf. §3.3)
    tau: PositiveFloat = 1.0  # temperature of the aux loss's soft decode
    color_jitter: UnitInterval = 0.2  # brightness / contrast / saturation of the training RGB


CONFIGS = TaskConfigs(source=SemsegSourceConfig, cache=ViewCacheConfig, solver=SemsegTaskConfig,
                      infer=WindowInferConfig)
