"""Render the demo dataset: rooms -> frames (RGB, complete and sensor depth, instances, classes) -> files.

`render_frame` is the pure per-frame math (three ray casts: camera, projector shadow, light shadow);
`render_demo` drives scenes and frames and writes the NYUv2 sync tree (with per-pixel class labels),
BTS lists, COCO jsons, the semseg class list and meta.json through write.py. Random streams: scene i
uses SeedSequence((seed, i)) split into layout, camera and pixel-noise streams, so a room does not
change when `num_scenes`, the resolution or another room changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import ConfigError
from pipeline.core.params import to_dict
from pipeline.core.sources import DemoConfig
from pipeline.data.demo import semseg, sensor
from pipeline.data.demo.camera import Intrinsics, Pose, sample_poses
from pipeline.data.demo.masks import mask_area_bbox, mask_polygons, mask_rle
from pipeline.data.demo.raycast import Geometry, cast, occluded, surface_frame
from pipeline.data.demo.scene import CATEGORIES, Scene, make_scene, pack
from pipeline.data.demo.shading import Hits, albedo, decal_index, finish, shade, surface_uv
from pipeline.data.demo.tint import tint_scene
from pipeline.data.demo.write import (
    reset_dir,
    save_bts_list,
    save_depth_png,
    save_jpeg,
    save_json,
    save_label_png,
)

_MIN_AREA_FRACTION = 1e-3  # instances with fewer visible pixels (of H*W, at least 8) are not annotated


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    complete_mm: np.ndarray  # (H, W) uint16 z-depth, millimetres, > 0 everywhere
    sensor_mm: np.ndarray  # (H, W) uint16, 0 = no Kinect reading
    instances: np.ndarray  # (H, W) int, 0 = room structure, k = scene.objects[k - 1]
    labels: np.ndarray  # (H, W) uint8 semantic class id (semseg.CLASSES), 0 = unlabelled
    causes: dict[str, np.ndarray]  # (H, W) bool per invalid cause (sensor.CAUSES)


@dataclass(frozen=True)
class PackedScene:
    scene: Scene
    geom: Geometry
    surf_object: np.ndarray  # (6 + P,) object index per surface id
    surf_material: np.ndarray  # (6 + P,)
    surf_class: np.ndarray  # (6 + P,) uint8 semantic class id per surface id

    @staticmethod
    def of(scene: Scene) -> PackedScene:
        geom, surf_object, surf_material = pack(scene)
        return PackedScene(scene, geom, surf_object, surf_material,
                           semseg.surface_classes(scene, surf_object))


def render_frame(ps: PackedScene, pose: Pose, intr: Intrinsics, cfg: DemoConfig,
                 rng: np.random.Generator) -> Frame:
    """Ray-cast one view of a packed scene; `rng` only drives the RGB sensor noise."""
    h, w = intr.height, intr.width
    dirs = pose.world_rays(intr.rays())  # (N, 3), t = z-depth
    depth, surf = cast(ps.geom, pose.position, dirs)
    points = pose.position + depth[:, None] * dirs
    local, n_local, normals = surface_frame(ps.geom, surf, points)
    obj = ps.surf_object[surf]
    view = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    flags = np.array([(False, False)] + [(o.dark, o.specular) for o in ps.scene.objects], bool)
    dark, glossy = flags[obj, 0], flags[obj, 1]

    u, v = surface_uv(local, n_local)
    decal = decal_index(ps.scene.decals, surf, u, v)
    glass = np.array([d.glass for d in ps.scene.decals] + [False])[decal]  # decal -1 -> the False sentinel

    # Kinect holes; the projector test is only needed where nothing else already voids the pixel
    shadow = np.zeros(len(depth), bool)
    need = (depth <= cfg.max_range) & ~dark & ~glass
    shadow[need] = sensor.projector_shadow(ps.geom, sensor.projector_position(pose, cfg.projector_baseline),
                                           points[need])
    cos_view = np.abs((normals * view).sum(-1))
    causes = sensor.invalid_causes(depth, shadow, dark, glossy, cos_view, cfg.max_range, glass)
    invalid = np.logical_or.reduce(list(causes.values()))
    complete_mm = np.clip(np.rint(depth * 1000.0), 1, 65535).astype(np.uint16)

    light = np.asarray(ps.scene.light)
    facing = ((light - points) * normals).sum(-1) > 0
    lit = facing.copy()
    lit[facing] = ~occluded(ps.geom, light, points[facing])
    base = albedo(ps.scene.materials, ps.surf_material[surf], u, v, ps.scene.decals, decal)
    rgb = shade(base, Hits(points, normals, view, lit, glossy, glass), light, pose.position, cfg.flash)
    return Frame(finish(rgb.reshape(h, w, 3), rng), complete_mm.reshape(h, w),
                 sensor.sensor_depth(complete_mm, invalid).reshape(h, w), obj.reshape(h, w),
                 semseg.pixel_classes(ps.surf_class, surf).reshape(h, w),
                 {k: v.reshape(h, w) for k, v in causes.items()})


def frame_annotations(instances: np.ndarray, scene: Scene) -> list[dict[str, Any]]:
    """COCO annotation bodies (no ids) of the instances visible in `(H, W)` ids, ascending object index."""
    h, w = instances.shape
    min_area = max(8, round(_MIN_AREA_FRACTION * h * w))
    anns = []
    for k in np.unique(instances):
        if k == 0:
            continue
        mask = instances == k
        area, bbox = mask_area_bbox(mask)
        if area < min_area:
            continue
        obj = scene.objects[k - 1]
        anns.append({"category_id": obj.category_id, "iscrowd": int(obj.iscrowd), "area": float(area),
                     "bbox": bbox, "segmentation": mask_rle(mask) if obj.iscrowd else mask_polygons(mask)})
    return anns


def _check(cfg: DemoConfig) -> None:
    if cfg.num_scenes < 1 or cfg.frames_per_scene < 1 or cfg.width < 8 or cfg.height < 8:
        raise ConfigError("data.demo: num_scenes, frames_per_scene must be >= 1 and width, height >= 8")
    if not 0 <= cfg.test_scenes < cfg.num_scenes:
        raise ConfigError(f"data.demo.test_scenes: must be in [0, num_scenes), got {cfg.test_scenes}")
    if min(cfg.dark_fraction, cfg.specular_fraction) < 0 or cfg.dark_fraction + cfg.specular_fraction > 1:
        raise ConfigError("data.demo: dark_fraction, specular_fraction must be >= 0 with a sum <= 1")
    if not 0 <= cfg.flash <= 1:
        raise ConfigError(f"data.demo.flash: must be in [0, 1], got {cfg.flash}")
    if not 0 <= cfg.tint <= 1:
        raise ConfigError(f"data.demo.tint: must be in [0, 1], got {cfg.tint}")
    if not 1 <= cfg.jpeg_quality <= 95:
        raise ConfigError(f"data.demo.jpeg_quality: must be in [1, 95], got {cfg.jpeg_quality}")


def render_demo(cfg: DemoConfig, out_dir: Path,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """(Re)write `out_dir` with the demo dataset of `cfg`; returns counts and the invalid-depth fraction."""
    _check(cfg)
    out_dir = Path(out_dir)
    reset_dir(out_dir)
    nyu = out_dir / "nyuv2"
    intr = Intrinsics.nyu(cfg.width, cfg.height)
    total = cfg.num_scenes * cfg.frames_per_scene
    first_test = cfg.num_scenes - cfg.test_scenes
    lists: dict[str, list] = {"train": [], "test": []}
    images: dict[str, list] = {"train": [], "test": []}
    anns: dict[str, list] = {"train": [], "test": []}
    invalid = {c: 0 for c in sensor.CAUSES} | {"any": 0}
    done = 0
    for i in range(cfg.num_scenes):
        split, name = ("test" if i >= first_test else "train"), f"room_{i:04d}"
        layout_rng, pose_rng, noise_rng = (np.random.default_rng(s)
                                           for s in np.random.SeedSequence((cfg.seed, i)).spawn(3))
        scene = make_scene(layout_rng, cfg.dark_fraction, cfg.specular_fraction)
        ps = PackedScene.of(tint_scene(scene, cfg.tint))
        (nyu / name).mkdir(parents=True)
        for f, pose in enumerate(sample_poses(ps.scene, ps.geom, pose_rng, cfg.frames_per_scene)):
            frame = render_frame(ps, pose, intr, cfg, noise_rng)
            rgb_rel, depth_rel = f"{name}/rgb_{f:05d}.jpg", f"{name}/sync_depth_{f:05d}.png"
            save_jpeg(nyu / rgb_rel, frame.rgb, cfg.jpeg_quality)
            save_depth_png(nyu / depth_rel, frame.sensor_mm)
            save_depth_png(nyu / f"{name}/complete_depth_{f:05d}.png", frame.complete_mm)
            save_label_png(nyu / f"{name}/label_{f:05d}.png", frame.labels)
            lists[split].append((rgb_rel, depth_rel, intr.fx))
            image_id = done + 1  # ids are unique over both jsons
            images[split].append({"id": image_id, "file_name": rgb_rel, "width": cfg.width,
                                  "height": cfg.height})
            anns[split] += [{"image_id": image_id, **a} for a in frame_annotations(frame.instances, ps.scene)]
            for c in sensor.CAUSES:
                invalid[c] += int(frame.causes[c].sum())
            invalid["any"] += int((frame.sensor_mm == 0).sum())
            done += 1
            if progress is not None:
                progress(done, total)
    return _write_indices(cfg, out_dir, intr, lists, images, anns, invalid, total)


def _write_indices(cfg, out_dir, intr, lists, images, anns, invalid, total) -> dict[str, Any]:
    nyu = out_dir / "nyuv2"
    save_bts_list(nyu / "train_files_with_gt.txt", lists["train"])
    save_bts_list(nyu / "test_files_with_gt.txt", lists["test"])
    # The class list lives here, not in meta.json, so that meta.json stays byte-identical to renders
    # made before labels existed.
    save_json(nyu / "semseg_classes.json", list(semseg.CLASSES))
    next_id = 1
    for split, json_name in (("train", "instances_train.json"), ("test", "instances_val.json")):
        for a in anns[split]:
            a["id"], next_id = next_id, next_id + 1
        save_json(out_dir / "coco" / "annotations" / json_name, {
            "info": {"description": "AiT pipeline demo dataset: synthetic NYUv2-like rooms (ray-cast)",
                     "version": "1.0", "contributor": "pipeline.data.demo", "url": ""},
            "licenses": [], "images": images[split], "annotations": anns[split],
            "categories": [dict(c) for c in CATEGORIES]})
    pixels = total * cfg.width * cfg.height
    summary = {
        "images": {"train": len(images["train"]), "test": len(images["test"])},
        "scenes": {"train": cfg.num_scenes - cfg.test_scenes, "test": cfg.test_scenes},
        "annotations": {"train": len(anns["train"]), "val": len(anns["test"])},
        "invalid_fraction": round(invalid["any"] / pixels, 4),
        "invalid_by_cause": {c: round(invalid[c] / pixels, 4) for c in sensor.CAUSES},
    }
    save_json(out_dir / "meta.json", {
        "config": to_dict(cfg),
        "intrinsics": {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy,
                       "width": intr.width, "height": intr.height},
        "depth_png": {"unit": "millimetre", "scale": 1000.0, "invalid": 0, "depth": "z (optical axis)"},
        "projector_offset_camera_frame_m": [cfg.projector_baseline, 0.0, 0.0],
        "categories": [dict(c) for c in CATEGORIES],
        "counts": summary,
    })
    return summary
