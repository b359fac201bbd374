"""Inputs nobody listed: property-based cases drawn from the formats themselves (the `hypothesis` library).

tests/test_bad_inputs.py holds the mistakes someone thought of; here the mistakes are drawn. Each case
runs a real command and must end in one of three ways:
- exit 0 with a correct result (the value read is the value written; every annotation of the json is
  kept or counted);
- exit 1 with one `error:` line that names the key or the file, in this project's words (no Python
  exception name as the reason);
- a counted skip: the record listed in report.json with its reason.

Three properties: params documents, COCO annotations, NYU depth frames with their list lines.
The default profile ("ci", tests/conftest.py) draws a fixed, small set of examples (derandomised: the
same cases on every run); `pytest tests/test_generated_inputs.py --hypothesis-profile long` draws many
more, at random.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.tasks.insseg.prepare import BOX_TOLERANCE_PX
from stages.cli import app
from tests.tiny import ROOT, tiny_params, write_params

# A Python exception's name as the reason means a library's error reached the user unexplained.
LIBRARY_REASON = re.compile(r"\b(?!Config|Data|Cache)[A-Z]\w*(Error|Exception)\b")


def _outcome(result) -> str:
    assert isinstance(result.exception, (SystemExit, type(None))), (
        f"traceback: {type(result.exception).__name__}: {result.exception}")
    return "ok" if result.exit_code == 0 else "error"


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert not LIBRARY_REASON.search(lines[0]), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# params documents: one leaf of params.yaml changed, removed, or a key added beside it


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        out += _leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
LEAVES = _leaves(PARAMS)

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.sampled_from([0, 1, -1, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-9, 0.5, 1.0, 1e300]),
    st.text(max_size=6), st.sampled_from(["", "yes", "1e-3", "none", "cpu", "depth"]),
    st.lists(st.integers(-3, 300), max_size=4), st.lists(st.floats(-2, 2), max_size=3),
    st.dictionaries(st.sampled_from(["a", "depth", "steps"]), st.integers(-2, 2), max_size=2),
)
EDITS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(LEAVES), VALUES),
    st.tuples(st.just("drop"), st.sampled_from(LEAVES), st.none()),
    st.tuples(st.just("add"), st.sampled_from(LEAVES), VALUES),
)


def _edited(edit: tuple) -> tuple[dict, tuple[str, ...]]:
    """params.yaml with the edit applied, and the path the edit touched."""
    kind, path, value = edit
    params = copy.deepcopy(PARAMS)
    node = params
    for key in path[:-1]:
        node = node[key]
    if kind == "set":
        node[path[-1]] = value
        return params, path
    if kind == "drop":
        del node[path[-1]]
        return params, path
    node["zz_extra"] = value
    return params, (*path[:-1], "zz_extra")


def _read_back(config: dict, path: tuple[str, ...]):
    node = config[path[0]]
    for key in path[1:]:
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    return node


def _same(written, read) -> bool:
    """What the loader returns for a value it accepted is that value: the same number of the same kind
    (an int may widen to a float), the same text, the same items."""
    if isinstance(written, bool) or isinstance(read, bool):
        return type(written) is type(read) and written == read
    if isinstance(written, int | float) and isinstance(read, int | float):
        return read == written or (read != read and written != written)  # nan == nan here
    if isinstance(written, list) and isinstance(read, list | tuple):
        return len(written) == len(read) and all(_same(w, r) for w, r in zip(written, read, strict=True))
    if isinstance(written, dict) and isinstance(read, dict):
        return written.keys() == read.keys() and all(_same(v, read[k]) for k, v in written.items())
    return written == read


@given(edit=EDITS)
def test_a_params_document_drawn_from_the_schema_is_read_exactly_or_refused_naming_its_key(edit, tmp_path):
    """`ait preset` validates the whole document (the strict loader every stage uses): any leaf set to
    any value, removed, or joined by an unknown key is either read back as written or refused in one
    line that names that key."""
    from pipeline.core.params import load_all

    params, path = _edited(edit)
    target = write_params(tmp_path / "params.yaml", params)
    preset = tmp_path / "preset.yaml"
    preset.write_text("evaluate: {batch_images: 4}\n" if path[:2] != ("evaluate", "batch_images") else
                      "evaluate: {num_panels: 4}\n")
    result = CliRunner().invoke(app, ["preset", str(preset), "--params", str(target)])
    if _outcome(result) == "error":
        line = _error_line(result)
        named = ".".join(path[:-1]) if edit[0] == "drop" else ".".join(path)
        assert named in line or path[-1] in line, (edit, line)
        return
    if edit[0] == "set":
        config = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                  for k, v in load_all(target).items()}
        assert _same(edit[2], _read_back(config, path)), (edit, _read_back(config, path))
    assert edit[0] != "add", f"an unknown key was accepted: {'.'.join(path)}"


# ------------------------------------------------------------------------------------------------
# COCO annotations: one annotation of the tiny demo's json replaced by a drawn one


COORD = st.one_of(st.floats(-50, 200), st.sampled_from([0.0, -1.0, 1e9, float("nan"), float("inf")]),
                  st.integers(-5, 100))
POLYGON = st.lists(COORD, min_size=0, max_size=12)
RLE = st.fixed_dictionaries({"size": st.lists(st.integers(0, 80), min_size=0, max_size=3),
                             "counts": st.one_of(st.lists(st.integers(0, 3000), max_size=6),
                                                 st.text(max_size=6), st.integers(-2, 5))})
KEEP = st.sampled_from(["same", "absent"])  # the demo's own value, or no such key
ANNOTATION = st.fixed_dictionaries(
    {},
    optional={
        "image_id": st.one_of(KEEP, st.integers(-1, 10**6), st.text(max_size=3)),
        "category_id": st.one_of(KEEP, st.integers(-1, 200), st.none(), st.text(max_size=3)),
        "bbox": st.one_of(KEEP, st.lists(COORD, min_size=0, max_size=5), st.none(), st.text(max_size=3)),
        "segmentation": st.one_of(KEEP, st.lists(POLYGON, max_size=2), RLE, st.none(), st.text(max_size=3)),
        "area": st.one_of(KEEP, COORD, st.none()),
        "iscrowd": st.one_of(KEEP, st.integers(-1, 2), st.booleans(), st.none(), st.text(max_size=2)),
        "id": st.one_of(st.just("same"), st.integers(-1, 10**9), st.none()),
    })


def _drawn_annotation(data: dict, drawn: dict) -> dict:
    first = data["annotations"][0]
    ann = {k: first[k] for k in ("id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd")
           if k in first}
    for key, value in drawn.items():
        if value == "absent":
            ann.pop(key, None)
        elif value != "same":
            ann[key] = value
    return ann


@given(drawn=ANNOTATION)
def test_a_drawn_coco_annotation_is_kept_counted_or_refused_and_nothing_vanishes(drawn, tiny_project,
                                                                              tmp_path):
    """`ait prepare insseg` on the demo's COCO files with their first validation annotation replaced by a
    drawn one: it exits 0 and every annotation of the json is either in a kept record (then a box inside
    its image, within the one-pixel tolerance) or listed as dropped with a reason in the project's words
    (an annotation of a skipped image included), or it stops in one line naming the json."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per drawn example
    root = work / "coco"
    demo = tiny_project / "data/demo"
    (root / "coco").mkdir(parents=True)
    (root / "nyuv2").symlink_to(demo / "nyuv2")
    (root / "coco/annotations").mkdir()
    train = demo / "coco/annotations/instances_train.json"
    (root / "coco/annotations/instances_train.json").symlink_to(train)
    data = json.loads((demo / "coco/annotations/instances_val.json").read_text())
    data["annotations"][0] = _drawn_annotation(data, drawn)
    (root / "coco/annotations/instances_val.json").write_text(json.dumps(data))
    params = write_params(work / "params.yaml", tiny_params(tiny_project, {
        "data": {"max_bad_fraction": 1.0, "tasks": {"insseg": {"root": str(root)}}}}))
    out = work / "prepared"
    result = CliRunner().invoke(app, ["prepare", "insseg", "--params", str(params), "--out", str(out)])
    if _outcome(result) == "error":
        assert "instances_val.json" in _error_line(result), result.output
        return
    report = json.loads((out / "report.json").read_text())
    records = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    kept = [a for r in records for a in r["annotations"]]
    assert report["counts"]["train"]["dropped_annotations"] == 0  # the train json is the demo's own
    dropped = report["dropped_annotations"]
    assert all(d["reason"] and not LIBRARY_REASON.search(d["reason"]) for d in dropped), dropped
    assert len(kept) + len(dropped) == len(data["annotations"]), (drawn, report["counts"]["val"])
    t = BOX_TOLERANCE_PX
    for record in records:
        for a in record["annotations"]:
            x, y, w, h = a["bbox"]
            assert -t <= x and -t <= y and w > 0 and h > 0, a
            assert x + w <= record["width"] + t and y + h <= record["height"] + t, a


# ------------------------------------------------------------------------------------------------
# NYU frames: the first training frame's depth PNG and list line replaced by drawn ones

DEPTH_VALUES = st.sampled_from([0, 1, 2, 500, 9999, 10000, 12000, 65535])  # mm, around both range ends
DEPTH_PNG = st.fixed_dictionaries({
    "kind": st.sampled_from(["uint16", "uint8", "rgb", "garbage"]),
    "size": st.one_of(st.just((48, 64)), st.tuples(st.integers(1, 70), st.integers(1, 90))),
    "fill": DEPTH_VALUES, "spot": DEPTH_VALUES})
FOCAL = st.one_of(st.none(), st.sampled_from(["51.8858", "nan", "inf", "-1", "0", "x", "1e3"]),
                  st.floats(allow_nan=True, allow_infinity=True).map(repr))
LIST_LINE = st.fixed_dictionaries({"focal": FOCAL, "bom": st.booleans()})


def _write_depth(path: Path, drawn: dict) -> None:
    from PIL import Image

    if drawn["kind"] == "garbage":
        path.write_bytes(b"\x89PNG not really")
        return
    depth = np.full(drawn["size"], drawn["fill"], np.uint16)
    depth[0, 0] = drawn["spot"]
    if drawn["kind"] == "uint16":
        Image.fromarray(depth).save(path)
    else:
        small = np.minimum(depth, 255).astype(np.uint8)
        Image.fromarray(np.stack([small] * 3, -1) if drawn["kind"] == "rgb" else small).save(path)


def _focal_ok(text: str | None) -> bool:
    try:
        return text is None or (math.isfinite(float(text)) and float(text) > 0)
    except ValueError:
        return False


@given(png=DEPTH_PNG, line=LIST_LINE)
def test_a_drawn_depth_frame_is_kept_exactly_when_valid_or_counted(png, line, tiny_project, tmp_path):
    """`ait prepare depth` on the demo with its first training frame's depth PNG (dtype, size, values at
    both ends of the valid range) and list line (focal, byte-order mark) drawn: a bad focal stops the
    run in one line naming `list:line`; otherwise the frame is kept exactly when it is a uint16 map of
    its RGB's size with one pixel in the valid range, and then reads back as written with every value
    outside (1 mm, 10 m) a hole; a frame not kept is listed with its reason."""
    from pipeline.data.nyu import MAX_DEPTH, MIN_DEPTH, read_depth_metres

    work = Path(tempfile.mkdtemp(dir=tmp_path))
    root = work / "nyuv2"
    shutil.copytree(tiny_project / "data/demo/nyuv2", root)
    listed = (root / "train_files_with_gt.txt").read_text().splitlines()
    rgb, depth, *_ = listed[0].split()
    listed[0] = f"{rgb} {depth}" + ("" if line["focal"] is None else f" {line['focal']}")
    text = "\n".join(listed) + "\n"
    (root / "train_files_with_gt.txt").write_text(("\ufeff" if line["bom"] else "") + text)
    _write_depth(root / depth, png)
    params = write_params(work / "params.yaml", tiny_params(tiny_project, {
        "data": {"max_bad_fraction": 1.0, "tasks": {"depth": {"root": str(root)}}}}))
    out = work / "prepared"
    result = CliRunner().invoke(app, ["prepare", "depth", "--params", str(params), "--out", str(out)])
    if not _focal_ok(line["focal"]):
        assert "train_files_with_gt.txt:1: focal" in _error_line(result), (line, result.output)
        return
    assert _outcome(result) == "ok", (png, line, result.output)
    report = json.loads((out / "report.json").read_text())
    records = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    key = next((r for r in records if r["depth"] == str(root / depth)), None)
    skipped = [s for s in report["skipped"] if s["split"] == "train"]
    assert len(records) + len(skipped) == len(listed)  # nothing vanishes
    assert all(s["reason"] and not LIBRARY_REASON.search(s["reason"]) for s in skipped), skipped
    in_range = any(1 < v < 10000 for v in (png["fill"], png["spot"]))  # mm: (1 mm, 10 m) exclusive
    valid = png["kind"] == "uint16" and tuple(png["size"]) == (48, 64) and in_range
    assert (key is not None) == valid, (png, skipped)
    if valid:
        metres = read_depth_metres(root / depth)
        assert metres.shape == (48, 64)
        assert np.all((metres == 0) | ((metres > MIN_DEPTH) & (metres < MAX_DEPTH)))
