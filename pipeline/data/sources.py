"""The params schema of `data`: where each prepare@<task> stage reads its dataset, and the embedded demo.

Kept apart from `pipeline/config.py` (the model, training and evaluation schema) because it describes
files on disk, not the method; `config.SECTIONS` registers `DataConfig` as the `data` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pipeline.constraints import (
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
class DepthSourceConfig:
    """Where `prepare@depth` reads depth samples from (NYUv2 formats)."""

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
class SemsegDataConfig:
    """Where `prepare@semseg` reads per-pixel class labels from: the depth lists' frames, each label
    beside its depth (`sync_depth_X.png` -> `label_X.png`), the classes in `<root>/semseg_classes.json`."""

    source: Literal["demo", "nyuv2"] = "demo"
    root: str = "data/demo/nyuv2"  # real NYUv2: the output of `ait data import-nyu-mat`
    layout: Literal["sync"] = "sync"  # BTS lists (DenseDepth's csv layout has no labels)
    train_list: str = "train_files_with_gt.txt"  # relative to root
    test_list: str = "test_files_with_gt.txt"
    train_dir: str = "."  # the folders (relative to root) each list's paths are relative to
    test_dir: str = "."


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
    semseg: SemsegDataConfig = field(default_factory=SemsegDataConfig)


@dataclass(frozen=True)
class DataConfig:
    max_bad_fraction: UnitInterval = 0.05  # prepare fails when more than this fraction of samples is bad
    demo: DemoConfig = field(default_factory=DemoConfig)
    tasks: DataTasksConfig = field(default_factory=DataTasksConfig)
