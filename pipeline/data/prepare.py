"""Validate a dataset once and turn it into per-split manifests (JSON lines) plus a report: the
task-blind half (records, skips with their reasons, frame-size and crop rules of dense frames, the
report and its verdict); each task's own checks are `pipeline/tasks/<task>/prepare.py`.

Every later stage reads these manifests instead of the raw list files or annotation jsons, so the
checks run exactly once per dataset version. A malformed sample is skipped and listed in the report with
its reason; a malformed annotation is dropped from its image and listed. `max_bad_fraction` decides
whether the dataset as a whole is acceptable. `prepare_run.py` runs it all for one task from params.yaml
and writes the results.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.data import nyu

Progress = Callable[[int, int], None]
# `label -> context manager yielding a Progress` (stages.ui.progress): one bar per split
ProgressFactory = Callable[[str], AbstractContextManager[Progress | None]]


@dataclass
class SplitResult:
    """Validated records of one split plus what was skipped (each with its reason)."""

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # whole samples
    dropped: list[dict] = field(default_factory=list)  # single annotations (insseg only)
    total: int = 0
    total_annotations: int = 0


def sample_key(rel_path: str) -> str:
    """A WebDataset-safe key (no dots, no slashes) from a dataset-relative file path."""
    stem = os.path.splitext(rel_path.lstrip("/"))[0]
    return stem.replace("/", "_").replace(".", "_")


def bar(progress: ProgressFactory | None, label: str) -> AbstractContextManager[Progress | None]:
    return contextlib.nullcontext() if progress is None else progress(label)


def parallel_map(fn, items: Sequence, progress: Progress | None) -> list:
    # Decoding is I/O and C code that releases the GIL, so threads give a real speed-up here.
    out = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, result in enumerate(pool.map(fn, items), 1):
            out.append(result)
            if progress:
                progress(i, len(items))
    return out


# --------------------------------------------------------------------------------------------------
# frames of dense labels (depth, class maps)


@dataclass(frozen=True)
class FrameRules:
    """What a dense-label frame must satisfy beyond decoding: its split and the configured crops."""

    split: str  # depth "test" frames need a valid pixel inside the evaluation crop
    tokenizer_crop: int  # tokenizer.<task>.train.crop_size: a square inside the frame
    solver_crop: int  # cache.<task>.crop_size: the full frame height (PAPER_NOTES §6.1)
    task: str = "depth"  # names those two params in error messages


def check_frame_size(path: Path, shape: tuple[int, int], rules: FrameRules) -> None:
    h, w = shape
    if rules.tokenizer_crop > min(h, w):
        raise DataError(f"{path}: frame {w}x{h} is smaller than tokenizer.{rules.task}.train.crop_size "
                        f"{rules.tokenizer_crop}")
    if rules.solver_crop != h or rules.solver_crop > w:
        raise DataError(f"{path}: frame {w}x{h}, but cache.{rules.task}.crop_size {rules.solver_crop} must "
                        f"equal the frame height (the solver crops full-height squares)")


def check_frames(entries: Sequence[nyu.DepthEntry], root: Path,
                  check_entry: Callable[[nyu.DepthEntry], dict], progress: Progress | None) -> SplitResult:
    """Records of the frames `check_entry` accepts; the others (and repeats) skipped with the reason."""
    def check(entry):
        try:
            return check_entry(entry)
        except (DataError, OSError) as e:
            return {"key": sample_key(os.path.relpath(entry.rgb, root)), "reason": one_line(e)}

    result = SplitResult(total=len(entries))
    seen: set[str] = set()
    for row in parallel_map(check, entries, progress):
        if "reason" not in row and row["key"] in seen:
            row = {"key": row["key"], "reason": f"{row['rgb']}: listed more than once"}
        (result.skipped if "reason" in row else result.records).append(row)
        seen.add(row["key"])
    return result


def keep_held_out_unseen(splits: dict[str, SplitResult], path_key: str = "rgb") -> None:
    """Skip every frame of a later split (test) that the first split (train) lists too: a score on a
    frame the model trained on is not a held-out score. `path_key` names the file in the reason."""
    first, *later = splits
    seen = {r["key"] for r in splits[first].records}
    for name in later:
        result = splits[name]
        repeats = [r for r in result.records if r["key"] in seen]
        result.records = [r for r in result.records if r["key"] not in seen]
        result.skipped += [{"key": r["key"], "reason": f"{r[path_key]}: also in the {first} split (a {name} "
                            f"frame must be one the model never trained on)"} for r in repeats]


def keep_one_frame_size(splits: dict[str, SplitResult], path_key: str = "depth") -> None:
    """Skip frames whose size is not the dataset's most common one (ties: the larger): the token cache
    stores a fixed view set, so every frame of both splits must share one size. `path_key` names the
    record's label file in the reason."""
    sizes = Counter((r["height"], r["width"]) for s in splits.values() for r in s.records)
    if len(sizes) < 2:
        return
    (h, w), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    for result in splits.values():
        odd = [r for r in result.records if (r["height"], r["width"]) != (h, w)]
        result.records = [r for r in result.records if (r["height"], r["width"]) == (h, w)]
        result.skipped += [{"key": r["key"], "reason": f"{r[path_key]}: frame {r['width']}x{r['height']} "
                            f"differs from the dataset's {w}x{h} (the token cache needs one size)"}
                           for r in odd]


# --------------------------------------------------------------------------------------------------
# semantic segmentation


# --------------------------------------------------------------------------------------------------
# instance segmentation


def finite_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------------------------------
# report


def build_report(task: str, source: str, splits: dict[str, SplitResult], max_bad_fraction: float) -> dict:
    """Counts per split, every skipped sample/annotation with its reason, and the verdict."""
    total = sum(s.total for s in splits.values())
    bad = sum(len(s.skipped) for s in splits.values())
    total_ann = sum(s.total_annotations for s in splits.values())
    bad_ann = sum(len(s.dropped) for s in splits.values())
    fractions = {"samples": bad / total if total else 1.0}
    if total_ann:
        fractions["annotations"] = bad_ann / total_ann
    worst = max(fractions, key=fractions.get)
    within = total > 0 and fractions[worst] <= max_bad_fraction
    verdict = f"{worst}: {fractions[worst]:.1%} bad (limit {max_bad_fraction:.1%})"
    verdict = "no samples listed" if not total else verdict if within else f"too many bad samples, {verdict}"
    empty = _empty_split(splits) if within else None
    return {
        "task": task,
        "source": source,
        "max_bad_fraction": max_bad_fraction,
        "bad_fraction": fractions,
        "ok": within and empty is None,
        "verdict": empty or verdict,
        "counts": {name: {"total": s.total, "kept": len(s.records), "skipped": len(s.skipped),
                          "annotations": sum(len(r.get("annotations", ())) for r in s.records),
                          "dropped_annotations": len(s.dropped)}
                   for name, s in splits.items()},
        "skipped": [dict(row, split=name) for name, s in splits.items() for row in s.skipped],
        "dropped_annotations": [dict(row, split=name) for name, s in splits.items() for row in s.dropped],
    }


def _empty_split(splits: dict[str, SplitResult]) -> str | None:
    """Why the dataset cannot feed every later stage although few samples are bad, or None."""
    for name, result in splits.items():
        if not result.records:
            return f"{name}: no usable sample ({result.total} listed)"
        # tasks whose samples carry annotations (insseg) need at least one
        if "annotations" in result.records[0] and not any(r["annotations"] for r in result.records):
            return f"{name}: no usable annotation in {len(result.records)} images"
    return None


def one_line(e: BaseException, limit: int = 400) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
