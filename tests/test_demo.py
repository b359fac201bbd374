"""The embedded demo dataset renderer (pipeline/data/demo): formats, determinism, Kinect holes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.core.config import ConfigError
from pipeline.core.sources import DemoConfig
from pipeline.data.demo import render_demo
from pipeline.data.demo.camera import Intrinsics, Pose
from pipeline.data.demo.masks import mask_polygons, mask_rle
from pipeline.data.demo.raycast import BOX, ROOM_FACES, SPHERE, Geometry, cast
from pipeline.data.demo.render import PackedScene, render_frame
from pipeline.data.demo.scene import Material, Scene, SceneObject
from pipeline.data.demo.sensor import SPECULAR_DEG, projector_position, projector_shadow

# pycocotools' Cython decode trips numpy 2's `__array__(copy=...)` deprecation on every mask
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = DemoConfig(seed=3, num_scenes=2, test_scenes=1, frames_per_scene=2, height=48, width=64)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    calls = []
    summary = render_demo(TINY, out, lambda done, total: calls.append((done, total)))
    assert calls == [(i + 1, 4) for i in range(4)]  # progress after every frame
    return out, summary


def test_same_seed_gives_byte_identical_files_and_different_seed_differs(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    (again / "stale").mkdir(parents=True)  # a previous run's leftovers are removed
    render_demo(TINY, again)
    digest = _tree_digest(out)
    assert len(digest) == 4 * 4 + 2 + 2 + 1 + 1  # 4 images per frame, 2 lists, 2 jsons, meta, classes
    assert _tree_digest(again) == digest
    other = tmp_path / "other"
    render_demo(dataclasses.replace(TINY, seed=4), other)
    other_digest = _tree_digest(other)
    assert other_digest.keys() == digest.keys()
    assert all(other_digest[k] != digest[k] for k in digest if k.endswith((".jpg", ".png")))


def test_room_does_not_depend_on_the_number_of_rooms(tiny, tmp_path):
    out, _ = tiny
    render_demo(dataclasses.replace(TINY, num_scenes=1, test_scenes=0), tmp_path)
    for f in sorted((tmp_path / "nyuv2" / "room_0000").iterdir()):
        assert f.read_bytes() == (out / "nyuv2" / "room_0000" / f.name).read_bytes()


def test_depth_pngs_are_uint16_mm_and_complete_depth_fills_the_holes(tiny):
    out, summary = tiny
    syncs = sorted((out / "nyuv2").glob("room_*/sync_depth_*.png"))
    assert len(syncs) == 4
    zeros = 0
    for sync in syncs:
        complete = sync.with_name(sync.name.replace("sync_depth", "complete_depth"))
        s, c = np.array(Image.open(sync)), np.array(Image.open(complete))
        rgb = Image.open(sync.with_name(sync.name.replace("sync_depth", "rgb").replace(".png", ".jpg")))
        assert rgb.mode == "RGB" and rgb.size == (64, 48)
        assert s.dtype == np.uint16 and c.dtype == np.uint16 and s.shape == c.shape == (48, 64)
        assert c.min() > 0 and 300 < np.median(c) < 10000  # millimetres of an indoor room
        valid = s > 0
        assert np.array_equal(s[valid], c[valid])
        zeros += int((~valid).sum())
    assert summary["invalid_fraction"] == pytest.approx(zeros / (4 * 48 * 64), abs=1e-4)


def test_lists_are_bts_format_and_split_by_room(tiny):
    out, summary = tiny
    root = out / "nyuv2"
    fx = 518.8579 * 64 / 640
    for name, room in (("train_files_with_gt.txt", "room_0000"), ("test_files_with_gt.txt", "room_0001")):
        lines = (root / name).read_text().splitlines()
        assert len(lines) == 2
        for line in lines:
            rgb, depth, focal = line.split(" ")
            assert rgb.startswith(room + "/rgb_")
            assert depth == rgb.replace("rgb_", "sync_depth_")[:-4] + ".png"
            assert (root / rgb).is_file() and (root / depth).is_file()
            assert focal == f"{fx:.4f}"
    assert summary["images"] == {"train": 2, "test": 2}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["intrinsics"]["fx"] == pytest.approx(fx)
    assert meta["counts"] == summary


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_loads_and_every_mask_matches_area_and_bbox(tiny, split):
    out, summary = tiny
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "coco" / "annotations" / f"instances_{split}.json"))
    assert len(coco.imgs) == 2 and len(coco.anns) == summary["annotations"][split] > 0
    assert {c["name"] for c in coco.cats.values()} >= {"chair", "dining table", "book"}
    for ann in coco.anns.values():
        img = coco.imgs[ann["image_id"]]
        assert (out / "nyuv2" / img["file_name"]).is_file()
        m = coco.annToMask(ann)
        assert m.shape == (img["height"], img["width"])
        assert m.sum() == ann["area"]  # polygons trace pixel borders, so this is exact
        assert np.allclose(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m))), ann["bbox"])
        assert isinstance(ann["segmentation"], dict) == bool(ann["iscrowd"])


def test_polygons_rasterise_back_exactly_even_with_holes_and_diagonals():
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = rng.integers(2, 24, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)  # noise: holes, islands, diagonal touches
        if trial == 0:
            h, w = 5, 5
            mask = np.ones((h, w), bool)
            mask[2, 2] = False  # a ring
        if not mask.any():
            continue
        polys = mask_polygons(mask)
        back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, int(h), int(w))))
        assert np.array_equal(back.astype(bool), mask)
        rle = mask_rle(mask)
        back = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(back, mask)


def test_scaled_nyu_intrinsics():
    k = Intrinsics.nyu(160, 120)
    assert (k.fx, k.fy) == pytest.approx((129.714475, 129.8674))
    # pixel centres scale about the centre: the full-size principal point maps back exactly
    assert (k.cx + 0.5) * 4 - 0.5 == pytest.approx(325.58)
    assert Intrinsics.nyu().rays().shape == (480 * 640, 3)


def test_invalid_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="test_scenes"):
        render_demo(dataclasses.replace(TINY, test_scenes=2), tmp_path)


# --- hand-built scenes for the three Kinect mechanisms ---------------------------------------------


def _looking_along_y(x: float = 3.0) -> Pose:
    return Pose.look(np.array([x, 0.5, 1.5]), np.pi / 2, 0.0, 0.0)  # camera right axis = +x


def test_projector_shadow_is_a_band_left_of_an_occluder_of_the_predicted_width():
    # A 1 m box 2 m in front of the camera, the wall 5.5 m away; projector 0.3 m to the camera's right.
    geom = Geometry.build((6.0, 6.0, 3.0), [(BOX, (3.0, 3.0, 1.5), (0.5, 0.5, 0.5), 0.0, 0)])
    pose, k, baseline = _looking_along_y(), Intrinsics.nyu(128, 96), 0.3
    dirs = pose.world_rays(k.rays())
    depth, surf = cast(geom, pose.position, dirs)
    shadow = projector_shadow(geom, projector_position(pose, baseline), pose.position + depth[:, None] * dirs)
    shadow, surf = shadow.reshape(96, 128), surf.reshape(96, 128)
    row = 48  # through the box
    box_cols = np.flatnonzero(surf[row] >= ROOM_FACES)
    left, right = shadow[row, : box_cols[0]], shadow[row, box_cols[-1] + 1:]
    assert not right.any() and not shadow[surf >= ROOM_FACES].any()
    assert left[-1] and left.sum() == np.flatnonzero(left).size  # one band touching the box edge
    expected = k.fx * baseline * (1 / 2.0 - 1 / 5.5)  # disparity difference of the two depths, pixels
    assert abs(left.sum() - expected) <= 1.0
    box_rows = (surf >= ROOM_FACES).any(1)
    assert not shadow[~box_rows].any()  # the projector sits level with the camera: bands stay beside the box


def _one_object_scene(kind: int, half: tuple, dark: bool, specular: bool) -> PackedScene:
    mats = (Material("plain", (0.6, 0.6, 0.6), (0.5, 0.5, 0.5), 0.3, 1),)
    obj = SceneObject("box", 103, ((kind, (3.0, 2.5, 1.5), half, 0.0, 0),), False, dark, specular)
    scene = Scene((6.0, 6.0, 3.0), (obj,), mats, (0, 0, 0), (), (3.0, 3.0, 2.95), np.zeros((1, 1), bool))
    return PackedScene.of(scene)


@pytest.mark.parametrize("dark", [False, True])
def test_dark_object_has_no_depth_reading(dark):
    ps = _one_object_scene(BOX, (0.5, 0.5, 0.5), dark, False)
    frame = render_frame(ps, _looking_along_y(), Intrinsics.nyu(64, 48), TINY, np.random.default_rng(0))
    on_obj = frame.instances == 1
    assert on_obj.sum() > 100
    valid = frame.sensor_mm[on_obj] > 0
    assert not valid.any() if dark else valid.mean() > 0.9
    assert frame.causes["dark"][on_obj].all() == dark


def test_specular_object_loses_the_head_on_part_and_max_range_cuts_far_pixels():
    cfg = dataclasses.replace(TINY, max_range=5.0)
    ps = _one_object_scene(SPHERE, (0.6, 0.6, 0.6), False, True)
    pose, k = _looking_along_y(), Intrinsics.nyu(64, 48)
    frame = render_frame(ps, pose, k, cfg, np.random.default_rng(0))
    on_obj = (frame.instances == 1).ravel()
    dirs = pose.world_rays(k.rays())
    depth, _ = cast(ps.geom, pose.position, dirs)
    normal = pose.position + depth[:, None] * dirs - np.array([3.0, 2.5, 1.5])
    unit = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    cos = np.abs((normal / np.linalg.norm(normal, axis=-1, keepdims=True) * unit).sum(-1))
    head_on = on_obj & (cos > np.cos(np.deg2rad(SPECULAR_DEG)) + 1e-3)
    oblique = on_obj & (cos < np.cos(np.deg2rad(SPECULAR_DEG)) - 1e-3)
    sensor = frame.sensor_mm.ravel()
    assert head_on.sum() > 5 and (sensor[head_on] == 0).all()
    assert oblique.sum() > 20 and (sensor[oblique] > 0).mean() > 0.9  # only shadow can void the rim
    far = frame.complete_mm.ravel() > 5000
    assert far.sum() > 100 and (sensor[far] == 0).all() and frame.causes["range"].ravel()[far].all()
    assert not frame.causes["range"].ravel()[frame.complete_mm.ravel() < 4999].any()


def test_camera_light_makes_brightness_fall_off_with_depth():
    # A grey box 1.5 m in front of the camera, the back wall 5.5 m away, the same grey material.
    ps = _one_object_scene(BOX, (0.5, 0.5, 0.5), False, False)
    pose, k = _looking_along_y(), Intrinsics.nyu(64, 48)
    ratios = {}
    for flash in (0.0, 1.0):
        frame = render_frame(ps, pose, k, dataclasses.replace(TINY, flash=flash), np.random.default_rng(0))
        grey = frame.rgb.astype(float).mean(-1)
        wall = (frame.instances == 0) & (frame.complete_mm > 5400)
        ratios[flash] = np.median(grey[frame.instances == 1]) / np.median(grey[wall])
    # inverse square through the renderer's 0.7 tone curve: (5.5 / 1.5) ** 1.4 = 6.2 on the axis; the
    # off-axis wall pixels are farther and more oblique, so the measured ratio is a little larger
    assert 6.0 < ratios[1.0] < 8.0
    assert ratios[0.0] < 2.0  # the ceiling light alone barely separates them


def test_flash_outside_unit_interval_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.demo.flash"):
        render_demo(dataclasses.replace(TINY, flash=1.5), tmp_path)


# --- category tint ---------------------------------------------------------------------------------


def test_tint_changes_only_the_rgb_images(tiny, tmp_path):
    out, _ = tiny
    render_demo(dataclasses.replace(TINY, tint=1.0), tmp_path)
    plain, tinted = _tree_digest(out), _tree_digest(tmp_path)
    assert plain.keys() == tinted.keys()
    assert sum(name.endswith(".jpg") for name in plain) == 4  # one RGB image per frame is compared
    for name, digest in plain.items():
        if name.endswith(".jpg"):
            assert tinted[name] != digest, name
        elif name != "meta.json":  # meta.json records the config
            assert tinted[name] == digest, name  # depth PNGs, lists, COCO jsons: byte-identical


def test_tint_gives_each_category_its_own_hue_at_the_material_brightness():
    import colorsys

    from pipeline.data.demo.scene import CATEGORIES, make_scene
    from pipeline.data.demo.tint import category_colours, retint, tint_scene

    colours = category_colours()
    hues = sorted(colorsys.rgb_to_hsv(*c)[0] for c in colours.values())
    assert len(colours) == len(CATEGORIES) and min(np.diff(hues)) > 0.9 / len(CATEGORIES)  # all distinct
    luma = np.array([0.2126, 0.7152, 0.0722])
    grey = (0.2, 0.2, 0.2)  # dark enough that no hue clips at this brightness
    for target in colours.values():
        full = np.array(retint(grey, target, 1.0))
        assert full @ luma == pytest.approx(0.2, abs=1e-6)  # brightness kept
        assert colorsys.rgb_to_hsv(*full)[0] == pytest.approx(colorsys.rgb_to_hsv(*target)[0], abs=1e-6)
    assert retint(grey, next(iter(colours.values())), 0.0) == grey

    scene = make_scene(np.random.default_rng(0), 0.0, 0.0)
    tinted = tint_scene(scene, 1.0)
    assert tint_scene(scene, 0.0) is scene
    owned, checked = set(), 0
    for obj in scene.objects:
        hue = colorsys.rgb_to_hsv(*colours[obj.category_id])[0]
        for *_, m in obj.parts:
            owned.add(m)
            for before, after in ((scene.materials[m].color, tinted.materials[m].color),
                                  (scene.materials[m].color2, tinted.materials[m].color2)):
                if max(after) < 1.0 and max(after) - min(after) > 1e-3:  # unclipped, not black
                    assert colorsys.rgb_to_hsv(*after)[0] == pytest.approx(hue, abs=1e-3), obj.name
                    assert np.dot(after, luma) == pytest.approx(np.dot(before, luma), abs=1e-6), obj.name
                    checked += 1
    assert checked > len(owned)  # most of the two colours of every object material were checked
    untouched = [i for i in range(len(scene.materials)) if i not in owned]
    assert untouched and all(tinted.materials[i] == scene.materials[i] for i in untouched)  # room, decals


def test_tint_outside_unit_interval_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.demo.tint"):
        render_demo(dataclasses.replace(TINY, tint=-0.1), tmp_path)
