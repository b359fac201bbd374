"""COCO 2017 instance annotations through pycocotools (PAPER_NOTES §6.2, §5.2).

A thin, typed view over `pycocotools.coco.COCO`: sorted ids, image paths, per-image annotations and
`annToMask`. Nothing here re-implements pycocotools (polygon/RLE decoding, indexing). The only
difference from `COCO(path)` is that the json is parsed here first, so that a missing or malformed file
raises a one-line `DataError` naming it instead of a `json` traceback, and pycocotools' progress
prints are silenced.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.core.errors import DataError


class CocoIndex:
    """One COCO json plus its image folder; ids and annotations come back in ascending id order."""

    def __init__(self, coco: COCO, json_path: Path, image_dir: Path,
                 set_aside: list[tuple[Any, str]] | None = None) -> None:
        self.coco = coco
        self.set_aside = set_aside or []  # annotations pycocotools cannot index, with the reason
        self.json_path = json_path
        self.image_dir = image_dir
        self._image_ids = sorted(coco.imgs)
        self._categories = [dict(coco.cats[i]) for i in sorted(coco.cats)]

    @property
    def categories(self) -> list[dict[str, Any]]:
        """Category records (`id`, `name`, `supercategory`) sorted by id."""
        return [dict(c) for c in self._categories]

    @property
    def image_ids(self) -> list[int]:
        """All image ids, ascending."""
        return list(self._image_ids)

    def image_record(self, image_id: int) -> dict[str, Any]:
        """The json `images` record (`file_name`, `height`, `width`, ...) of `image_id`."""
        try:
            return self.coco.imgs[image_id]
        except KeyError:
            raise DataError(f"{self.json_path}: no image with id {image_id}") from None

    def image_path(self, image_id: int) -> Path:
        """`image_dir / file_name` of `image_id` (existence is not checked)."""
        return self.image_dir / self.image_record(image_id)["file_name"]

    def annotations(self, image_id: int) -> list[dict[str, Any]]:
        """Every annotation of `image_id` (crowd ones included), sorted by annotation id."""
        self.image_record(image_id)  # an unknown id is an error, not an empty list
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        return sorted(anns, key=lambda a: a["id"])

    def unattached(self) -> list[tuple[Any, str]]:
        """(annotation, reason) of every annotation no image holds: those set aside before indexing and
        those whose `image_id` names no image of the json."""
        orphans = sorted((a for a in self.coco.anns.values() if a["image_id"] not in self.coco.imgs),
                         key=lambda a: a["id"])
        return self.set_aside + [(a, f"image_id {a['image_id']!r} is not the id of an image of the json")
                                 for a in orphans]

    def ann_to_mask(self, ann: dict[str, Any]) -> np.ndarray:
        """Binary `(H, W)` uint8 mask of one annotation (polygon or RLE) at its image's size."""
        image = self.image_record(ann["image_id"])
        try:
            return segmentation_to_mask(ann["segmentation"], image["height"], image["width"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(
                f"{self.json_path}: cannot rasterise annotation {ann.get('id')} ({type(e).__name__}: {e})"
            ) from None


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One compressed RLE of a COCO segmentation (polygons, uncompressed or compressed RLE).

    The same conversion as `COCO.annToRLE`, usable on records that travel without their COCO
    object (the prepared manifests carry each annotation's segmentation).
    """
    if isinstance(segmentation, list):  # polygons: one RLE per part, merged
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Binary `(H, W)` uint8 mask of a COCO segmentation (see `segmentation_to_rle`)."""
    rle = segmentation_to_rle(segmentation, height, width)
    with warnings.catch_warnings():
        # pycocotools' Cython decode trips numpy 2's `__array__(copy=...)` deprecation; the
        # fallback (a copy) is correct, so the per-mask warning is only noise.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(np.uint8)


def load_coco(json_path: Path, image_dir: Path) -> CocoIndex:
    """Load a COCO instances json (images, categories, optional annotations) with its image folder."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    if not json_path.is_file():
        raise DataError(f"{json_path}: annotation file not found")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image directory not found")
    try:
        dataset = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(dataset, dict):
        raise DataError(f"{json_path}: top level must be an object")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{json_path}: missing list '{key}'")
    _check_ids(json_path, dataset)
    annotations = dataset.get("annotations") or []
    set_aside = [(a, reason) for a in annotations if (reason := _unindexable(a))]
    dataset = dict(dataset, annotations=[a for a in annotations if not _unindexable(a)])
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise DataError(f"{json_path}: malformed COCO record ({type(e).__name__}: {e})") from None
    return CocoIndex(coco, json_path, image_dir, set_aside)


def _unindexable(ann: dict[str, Any]) -> str | None:
    """Why pycocotools could not index one annotation (it keys its tables by these two ids), or None."""
    for key in ("image_id", "category_id"):
        if key not in ann:
            return f"no {key}"
        if not isinstance(ann[key], int | str | float | None):
            return f"{key} {ann[key]!r} is not an id"
    return None


def _check_ids(json_path: Path, dataset: dict[str, Any]) -> None:
    """Integer, unique ids (images, annotations, categories): pycocotools indexes by them and silently keeps
    the last of two equal ones; every category named."""
    for key in ("images", "annotations", "categories"):
        seen: set[int] = set()
        for record in dataset.get(key) or []:
            rid = record.get("id") if isinstance(record, dict) else None
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise DataError(f"{json_path}: {key} record with id {rid!r}: ids must be integers")
            if rid in seen:
                raise DataError(f"{json_path}: duplicate {key} id {rid}")
            seen.add(rid)
    for category in dataset["categories"]:
        if not isinstance(category.get("name"), str) or not category["name"]:
            raise DataError(f"{json_path}: category {category['id']} has no name")


def coco_from_records(records: list[dict[str, Any]], categories: list[dict[str, Any]]) -> COCO:
    """A pycocotools ground truth built from prepared insseg manifest records (crowd ones included)."""
    images = [{"id": r["image_id"], "width": r["width"], "height": r["height"], "file_name": r["image"]}
              for r in records]
    annotations = [dict(ann, image_id=r["image_id"]) for r in records for ann in r["annotations"]]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": list(categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
