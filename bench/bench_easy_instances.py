"""Can the instance path learn localisation at all? A from-scratch run on a trivially easy dataset.

Renders a COCO-format dataset of plain grey frames (the demo's 120x160) holding one or two large, flat,
single-coloured shapes whose colour is their class (a rectangle, an ellipse, a triangle), then runs the
real stage commands on it with the demo's params (`ait prepare insseg`, `train-tokenizer insseg`,
`cache-tokens insseg`, `train-solver insseg`, `evaluate insseg`): the same code path as `make repro`,
only the images differ. Held-out frames are new random layouts of the same shapes.

A solver that cannot find most of these objects has a defect that no recipe fixes; one that can shows
the demo's failure is about the task's difficulty and the budget. Prints one JSON object: the held-out
box AP / AP50, the share of ground-truth objects found at IoU >= 0.5 with the right class, the
class-prior baseline's, and each stage's wall time.

    .venv/bin/python bench/bench_easy_instances.py --steps 600 --train 400 --val 60
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from _runs import ROOT, override
from _runs import ait as run
from PIL import Image, ImageDraw

H, W = 120, 160
SHAPES = {1: ("rectangle", (220, 60, 50)), 2: ("ellipse", (60, 180, 70)), 3: ("triangle", (60, 90, 220))}


def _polygon(kind: str, box: tuple[float, float, float, float]) -> list[float]:
    x1, y1, x2, y2 = box
    if kind == "rectangle":
        pts = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    elif kind == "triangle":
        pts = [((x1 + x2) / 2, y1), (x2, y2), (x1, y2)]
    else:
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        pts = list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))
    return [float(v) for p in pts for v in p]


def render(n: int, first_id: int, out: Path, rng: np.random.Generator) -> dict:
    """`n` frames of 1-2 non-overlapping large shapes on grey; their COCO images and annotations."""
    images, anns = [], []
    for i in range(n):
        image_id = first_id + i
        frame = Image.fromarray(np.clip(rng.normal(128, 6, (H, W, 3)), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(frame)
        halves = [(0, W // 2), (W // 2, W)] if rng.random() < 0.5 else [(0, W)]
        for lo, hi in halves:
            cat = int(rng.integers(1, 4))
            kind, colour = SHAPES[cat]
            w = rng.uniform(0.5, 0.9) * (hi - lo)
            h = rng.uniform(0.35, 0.8) * H
            x1, y1 = lo + rng.uniform(0, hi - lo - w), rng.uniform(0, H - h)
            poly = _polygon(kind, (x1, y1, x1 + w, y1 + h))
            draw.polygon(list(zip(poly[::2], poly[1::2], strict=True)), fill=colour)
            xs, ys = poly[::2], poly[1::2]
            bx, by = min(xs), min(ys)
            anns.append({"id": len(anns) + first_id * 10, "image_id": image_id, "category_id": cat,
                         "bbox": [bx, by, max(xs) - bx, max(ys) - by], "segmentation": [poly],
                         "area": float(w * h), "iscrowd": 0})
        name = f"{image_id:06d}.jpg"
        frame.save(out / "images" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
    categories = [{"id": c, "name": kind, "supercategory": "shape"} for c, (kind, _) in SHAPES.items()]
    return {"images": images, "annotations": anns, "categories": categories}


def render_dataset(root: Path, args: argparse.Namespace) -> None:
    """The easy dataset under root/easy: COCO images and train/val annotation files."""
    rng = np.random.default_rng(args.seed)
    data = root / "easy"
    (data / "images").mkdir(parents=True)
    (data / "annotations").mkdir()
    for split, n, first in (("train", args.train, 1), ("val", args.val, 100_000)):
        (data / "annotations" / f"{split}.json").write_text(json.dumps(render(n, first, data, rng)))


def write_params(root: Path, args: argparse.Namespace) -> None:
    """params.yaml = the project's, the insseg task pointed at root/easy, the run's steps and --set."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["tasks"]["insseg"] = {"source": "coco", "root": str(root / "easy"), "train_images": "images",
                                         "train_json": "annotations/train.json", "val_images": "images",
                                         "val_json": "annotations/val.json"}
    params["solver"]["runs"]["insseg"]["steps"] = args.steps
    for item in args.set:
        override(params, item)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="solver steps (the demo run's 600)")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override (dotted key, YAML value); repeatable")
    parser.add_argument("--keep", type=Path, help="work here and keep it (panels, logs)")
    parser.add_argument("--reuse", type=Path, help="a --keep folder whose dataset, tokenizer and cache to reuse")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="easy_instances_"))
    root.mkdir(parents=True, exist_ok=True)
    p = "params.yaml"
    seconds = {}
    if args.reuse:  # the same dataset, tokenizer and cache: only solver params may differ
        for name in ("easy", "data", "models/tokenizer"):
            shutil.copytree(args.reuse / name, root / name)
        write_params(root, args)
    else:
        render_dataset(root, args)
        write_params(root, args)
        seconds["prepare"] = run(root, "prepare", "insseg", "--params", p, "--out", "data/prepared/insseg")
        seconds["train_tokenizer"] = run(root, "train-tokenizer", "insseg", "--params", p, "--prepared",
                                         "data/prepared", "--out", "models/tokenizer/insseg", "--live-dir",
                                         "results/train_tokenizer")
        seconds["cache_tokens"] = run(root, "cache-tokens", "insseg", "--params", p, "--prepared", "data/prepared",
                                      "--model-dir", "models/tokenizer/insseg", "--out", "data/tokens/insseg")
    seconds |= {
        "train_solver": run(root, "train-solver", "insseg", "--params", p, "--caches", "data/tokens",
                            "--tokenizers", "models/tokenizer", "--out", "models/solver/insseg",
                            "--state-dir", "checkpoints/insseg", "--live-dir", "results/train_solver"),
        "evaluate": run(root, "evaluate", "insseg", "--params", p, "--prepared", "data/prepared", "--model-dir",
                        "models/solver/insseg", "--tokenizers", "models/tokenizer", "--caches", "data/tokens",
                        "--out", "results/evaluate/insseg"),
    }
    metrics = json.loads((root / "results/evaluate/insseg/metrics.json").read_text())["insseg"]

    def found(m: dict) -> float:
        return round(m["hits"]["gt_found_right_class"] / max(m["hits"]["gt_objects"], 1), 4)

    print(json.dumps({
        "steps": args.steps, "train_images": args.train, "val_images": args.val, "work_dir": str(root),
        "model": {"box_ap": metrics["bbox"]["AP"], "box_ap50": metrics["bbox"]["AP50"],
                  "mask_ap": metrics["segm"]["AP"], "found_right_class": found(metrics)},
        "prior": {"box_ap50": metrics["prior_baseline"]["bbox"]["AP50"],
                  "found_right_class": found(metrics["prior_baseline"])},
        "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
