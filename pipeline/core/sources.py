"""The params schema of `data`: where each prepare@<task> stage reads its dataset, and the embedded demo.

Kept apart from `pipeline/core/config.py` (the model, training and evaluation schema) because it describes
files on disk, not the method; `config.sections()` registers `DataConfig` as the `data` section. Each task's
own source class (`data.tasks.<task>`) lives in its folder (`pipeline/tasks/<task>/config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pipeline.core.constraints import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    UnitInterval,
)


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
class ListSourceConfig:
    """Where a `prepare@<task>` of NYUv2-style frames reads them: list files of (image, label) pairs."""

    source: Literal["demo", "nyuv2"] = "demo"
    root: str = "data/demo/nyuv2"
    layout: Literal["sync", "densedepth"] = "sync"
    train_list: str = "train_files_with_gt.txt"  # relative to root (BTS list or DenseDepth csv)
    test_list: str = "test_files_with_gt.txt"
    # the folders (relative to root) each list's paths are relative to: BTS/AiT as downloaded keep the
    # training frames in `sync` and the official test frames in `official_splits/test` (docs/DATA.md)
    train_dir: str = "."
    test_dir: str = "."


@dataclass(frozen=True)
class DataConfig:
    """The task-blind part of `data`; `config.sections()` adds `tasks`, each task's own source class."""

    max_bad_fraction: UnitInterval = 0.05  # prepare fails when more than this fraction of samples is bad
    demo: DemoConfig = field(default_factory=DemoConfig)
