"""The task protocol: everything that differs between the AiT tasks, behind one interface.

The generic layers (tokenizer training, token caches, the solver's training step, inference, evaluation,
inspection, summaries, the vocabulary) never compare task names: they receive a `Task` (from
`pipeline.tasks.registry.get_task`) and call it. A task is one module in this folder implementing
every method below (big_vision UViM's task trio, widened to the whole pipeline):

- labels for the tokenizer: `tokenizer_arch` (the VQ-VAE shape its labels need), `tokenizer_crops`,
  `tokenizer_loss`, `evaluate_tokenizer` (reconstruction next to the interpolation baseline);
- the token cache: `cache_layout` (what one cached sample stores and how its labels are encoded);
- the solver: `sequence_length`, `input_side`, `examples` (cache sample -> augmented training example,
  consistent with the cached views), `loss_adapter` (sequences, CE + aux loss), `vocab_classes` (class tokens it adds to the
  shared vocabulary; its code range is its cache's codebook size);
- evaluation: `evaluate` (decode outputs back to predictions, metrics next to an image-blind baseline,
  panels), `headline`, `report`, `summary_rows`;
- inspection: `inspect_panel` (image | GT | decoded cached tokens of one cached sample).

Params stay per task (`tokenizer.<task>`, `cache.<task>`, `solver.<task>`, `evaluate.<task>`), so a
stage declares exactly its task's sections. See README "Adding a task".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from pipeline.core.errors import DataError
from pipeline.core.io import read_jsonl
from pipeline.core.runtime import dist_info, gather_to_rank0

Progress = Callable[[int, int], None]
Panel = tuple[str, np.ndarray]  # (sample key, (H, W, 3) uint8 picture)


def read_split(prepared: Path, split: str) -> list[dict]:
    """The records of `<prepared>/<split>.jsonl`; a missing manifest is a one-line error."""
    path = Path(prepared) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: prepared manifest not found (run `dvc repro prepare`)")
    return read_jsonl(path)


def fmt(x: float | None, digits: int = 4) -> str:
    """A table cell: `digits` decimals, "-" for a missing number."""
    return "-" if x is None else f"{x:.{digits}f}"


def chunks(records: Sequence[dict], size: int) -> Iterable[Sequence[dict]]:
    """Consecutive slices of at most `size` (>= 1) records: the evaluation batches."""
    for start in range(0, len(records), max(size, 1)):
        yield records[start : start + max(size, 1)]


def sharded_chunks(records: Sequence[dict], size: int, fn: Callable[[int, Sequence[dict]], Any],
                   progress: Progress | None = None) -> list | None:
    """Evaluation across processes: `fn(index of the first record, batch)` for every batch of `size`
    records, batch k on rank k mod world size, so each batch, and each image's prediction, is the one a
    single process computes. The results come back in batch order on rank 0; None on the other ranks."""
    info = dist_info()
    batches = list(chunks(records, size))
    mine = range(info.rank, len(batches), info.world_size)
    total, done, results = sum(len(batches[k]) for k in mine), 0, []
    for k in mine:
        results.append((k, fn(k * max(size, 1), batches[k])))
        done += len(batches[k])
        if progress:
            progress(done, total)
    gathered = gather_to_rank0(results)
    return None if gathered is None else [result for _, result in sorted(gathered, key=lambda kr: kr[0])]


class LossAdapter(Protocol):
    """One task's training loss on one batch of its examples (the frozen tokenizer rides along)."""

    tokenizer: torch.nn.Module

    def loss(self, model: torch.nn.Module, batch: dict, vocab: Any, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]: ...


@dataclass(frozen=True)
class TokenizerEval:
    """What `evaluate_tokenizer` needs: the frozen model and its config.json, the held-out records."""

    model: torch.nn.Module
    config: dict
    records: list[dict]
    prepared: Path  # data/prepared/<task>
    tau: float
    device: torch.device
    progress: Progress | None = None


@dataclass(frozen=True)
class SolverEval:
    """What `evaluate` needs: the trained solver, one task's frozen tokenizer, cache manifest, training
    config (from the checkpoint), decoding config (params `evaluate.<task>`) and prepared data."""

    model: torch.nn.Module
    vocab: Any
    tokenizer: torch.nn.Module
    manifest: dict
    task_cfg: Any
    infer_cfg: Any
    opts: Any  # EvalConfig: batching, panels, max_images
    prepared: Path  # data/prepared/<task>
    records: list[dict]  # the held-out split (max_images applied)
    progress: Callable[[str], Any]  # label -> context manager yielding a Progress


@dataclass(frozen=True)
class SolverResult:
    metrics: dict
    panels: list[Panel]
    files: dict[str, bytes]  # extra result files (COCO results json), written beside metrics.json


class Task:
    """Base of the task modules; every method below is implemented by each registered task."""

    name: ClassVar[str]
    task_id: ClassVar[int]  # row of the solver's task embedding (PAPER_NOTES §9: det 0, insseg 1, depth 2)
    code_kind: ClassVar[str]  # the vocabulary range of its codebook (`Vocab.ranges`)
    splits: ClassVar[tuple[str, str]]  # (training, held-out) prepared splits
    solver_config: ClassVar[type]  # params solver.<task>
    cache_config: ClassVar[type]  # params cache.<task>
    infer_config: ClassVar[type]  # params evaluate.<task>
    soft_kinds: ClassVar[frozenset[str]]  # kinds fed back as soft tokens at inference (PAPER_NOTES §3.1)
    tokenizer_metric: ClassVar[tuple[str, str, str]]  # (metrics key, headline name, label) of its
    # reconstruction score
    cache_fields: ClassVar[dict[str, Callable[[bytes], Any]]] = {}  # decoders of its cached label files

    # ---- tokenizer ------------------------------------------------------------------------------

    def tokenizer_arch(self, cfg: Any, prepared: Path) -> Any:
        """The VQ-VAE config its labels need (e.g. one input channel per class); default unchanged."""
        return cfg

    def tokenizer_crops(self, records: list[dict], crop_size: int, seed: int,
                        prepared: Path) -> torch.utils.data.Dataset:
        """Training crops `(C, S, S)` for the tokenizer, indexed by (index, epoch)."""
        raise NotImplementedError

    def tokenizer_loss(self, model: torch.nn.Module, batch: Tensor, mask_ratio: float, patch_size: int,
                       generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruction + commitment loss of one crop batch."""
        raise NotImplementedError

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        """Hard / soft reconstruction metrics of the held-out split next to `interp_baseline`."""
        raise NotImplementedError

    # ---- token cache ----------------------------------------------------------------------------

    def cache_layout(self, splits: dict[str, list[dict]], tok: Any, cfg: Any, prepared: Path) -> Any:
        """The `tokens.layouts` layout of its cache, validated against the records and the config."""
        raise NotImplementedError

    # ---- solver ---------------------------------------------------------------------------------

    def vocab_classes(self, manifest: dict) -> int:
        """Class tokens it needs in the shared vocabulary (instances only); default none."""
        return 0

    def sequence_length(self, manifest: dict, cfg: Any) -> int:
        """Decoder positions of one example."""
        raise NotImplementedError

    def input_side(self, manifest: dict, cfg: Any) -> int:
        """Side of the square images it feeds the backbone."""
        raise NotImplementedError

    def examples(self, manifest: dict, cfg: Any, seed: int) -> tuple[Callable, Callable]:
        """(decode, collate): picklable cache-sample -> example and examples -> batch functions."""
        raise NotImplementedError

    def loss_adapter(self, tokenizer: torch.nn.Module, cfg: Any, manifest: dict) -> LossAdapter:
        raise NotImplementedError

    # ---- evaluation -----------------------------------------------------------------------------

    def evaluate(self, ctx: SolverEval) -> SolverResult:
        raise NotImplementedError

    def headline(self, metrics: dict) -> dict[str, float]:
        """The few numbers `dvc exp show` compares (keys unique across tasks)."""
        raise NotImplementedError

    def report(self, metrics: dict) -> str:
        """One console line of its solver metrics."""
        raise NotImplementedError

    def summary_rows(self, run: str, metrics: dict) -> list[tuple[str, ...]]:
        """Rows of `ait summary`'s solver table: (run, task / metric, model, baseline, median map, gain,
        tokenizer bound)."""
        raise NotImplementedError

    # ---- inspection -----------------------------------------------------------------------------

    def inspect_panel(self, sample: dict, model: torch.nn.Module, manifest: dict) -> np.ndarray:
        """image | GT | hard-decoded cached tokens of one decoded cache sample."""
        raise NotImplementedError


class DenseTask(Task):
    """A dense task cached per view (`tokens.layouts.ViewLayout`): one code per token-grid cell in raster
    order, and the backbone sees the cached full-height crop."""

    def sequence_length(self, manifest: dict, cfg: Any) -> int:
        h, w = manifest["tokenizer"]["grid"]
        return h * w

    def input_side(self, manifest: dict, cfg: Any) -> int:
        return manifest["views"]["crop_size"]
