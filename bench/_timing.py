"""Timing and numeric set-up shared by the benches (a helper, not a bench).

- `timed`: one warm-up call (allocator, cuDNN autotuning, file cache), then `repeats` timed calls with
  the device synchronised; the best and the median go into the JSON, ratios use the best of each side;
- `set_precision`: fp32 means fp32. On CUDA, PyTorch lets cuDNN convolutions use TF32 by default and
  a process may have enabled TF32 matmuls, so an "fp32" figure could silently be TF32. The benches set
  both switches explicitly (`--allow-tf32` opts in) and print what was in force.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def times(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    sync(device)
    out = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def timed(name: str, fn: Callable[[], object], repeats: int, device: torch.device) -> dict[str, float]:
    """{`name`_s: best, `name`_median_s: median} of `times`."""
    t = times(fn, repeats, device)
    return {f"{name}_s": min(t), f"{name}_median_s": statistics.median(t)}


def rates(name: str, items: int, seconds: list[float]) -> dict[str, float]:
    """{`name`_sps: items per second of the best run, `name`_sps_median: of the median run}."""
    return {f"{name}_sps": round(items / min(seconds), 1),
            f"{name}_sps_median": round(items / statistics.median(seconds), 1)}


def set_precision(allow_tf32: bool = False) -> dict[str, object]:
    """Set the fp32 matmul / convolution precision explicitly; return what is in force for the JSON."""
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
