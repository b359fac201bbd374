"""The task protocol: what a task is, and the few behaviours that really differ between tasks.

The generic layers (tokenizer training, token caches, the solver's training step, inference, evaluation,
inspection, summaries, the vocabulary) never compare task names: they receive a `Task` (from
`pipeline.tasks.registry.get_task`, which imports the task's folder `pipeline/tasks/<task>/` by name) and
read its record or call it. In the spirit of big_vision UViM's task functions, and of ml-4m, where
behaviour follows a modality's kind (`pipeline/tasks/dense.py` is the dense kind, written once).

A task is a record:
- `name`, `code_kind` (its code range in the shared vocabulary), `splits` (training, held-out);
- `configs`: its own params classes (`data.tasks.<task>`, `cache.<task>`, `solver.<task>`,
  `evaluate.<task>`; `pipeline/tasks/<task>/config.py`), from which the params schema is assembled;
- `scores`: the declarative table of what it reports (`Score`: key, label, where the value, its
  image-blind baseline and its tokenizer bound sit in metrics.json, which way is better). Headline
  numbers, console reports and summary rows are produced from it, for every task alike (`scores.py`);
  `tokenizer_score` is the same for the tokenizer's reconstruction;
- `cache_fields`: the decoders of its cached label files;

plus six behaviours (one optional), each returning a plain record:
1. `tokenizer(job)` -> `TokenizerRecipe`: the VQ-VAE shape its labels need, the training crops and the
   reconstruction loss (mask augmentation lives inside depth's);
2. `evaluate_tokenizer(ctx)`: reconstruction metrics next to the interpolation baseline (Table 12);
3. `cache_layout(...)`: what one cached sample stores (`token_cache.layouts.Layout`);
4. `training(manifest, cfg)` -> `TrainingRecipe`: sequence length, input side, the cache-sample ->
   example decoder and its collate, and the loss adapter around the frozen tokenizer;
5. `evaluate(ctx)`: decode the solver's outputs, score them next to an image-blind baseline, panels;
6. `inspect_panel(sample, model, manifest)`: image | GT | decoded cached tokens of one cache sample;
and `vocab_classes(manifest)` (class tokens it adds to the vocabulary; default none). Its dataset
validation is `prepare.py` `PREPARE` in its folder (`registry.get_preparer`), its row in the solver's task
embedding the registry's `TASK_IDS`. See README "Adding a task".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pipeline.core.config import EvalConfig, TaskConfigs, TokenizerTaskConfig, TokenizerVariant, VQVAEConfig
from pipeline.core.errors import DataError
from pipeline.core.io import read_jsonl
from pipeline.core.runtime import dist_info, gather_to_rank0
from pipeline.core.vocab import Vocab
from pipeline.models.vqvae import VQVAE

if TYPE_CHECKING:  # the cache machinery stands above the protocol; only its types are named here
    from pipeline.token_cache.build import Tokenizer
    from pipeline.token_cache.layouts import Layout

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

    def loss(self, model: torch.nn.Module, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]: ...


TokenizerLoss = Callable[[torch.nn.Module, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class TokenizerJob:
    """What `tokenizer` gets: the training records, the variant, `tokenizer.<task>`, seed, prepared dir."""

    records: list[dict]
    variant: TokenizerVariant
    cfg: TokenizerTaskConfig
    seed: int
    prepared: Path  # data/prepared/<task>


@dataclass(frozen=True)
class TokenizerRecipe:
    """How the VQ-VAE learns a task's labels: its shape, the crops (C, S, S) indexed by (index, epoch),
    and the loss of one crop batch (reconstruction + commitment, parts "recon" and "commit")."""

    arch: VQVAEConfig
    crops: Dataset
    loss: TokenizerLoss


@dataclass(frozen=True)
class TrainingRecipe:
    """How the solver trains on a task's cache: decoder positions of one example, the side of the
    square images it feeds the backbone, the picklable decoder (cache sample -> augmented example) for a
    data seed and its collate, and the loss adapter to build around the frozen tokenizer (built after the
    model, so loading the tokenizer draws nothing from the generator the model's initialisation uses)."""

    sequence_length: int
    input_side: int
    examples: Callable[[int], Callable[[dict], dict]]
    collate: Callable[[list[dict]], dict]
    loss: Callable[[VQVAE], LossAdapter]


@dataclass(frozen=True)
class TokenizerEval:
    """What `evaluate_tokenizer` needs: the frozen model and its config.json, the held-out records."""

    model: VQVAE
    config: dict
    records: list[dict]
    prepared: Path  # data/prepared/<task>
    tau: float
    device: torch.device
    progress: Progress | None = None


@dataclass(frozen=True)
class SolverEval:
    """What `evaluate` needs: the trained solver, one task's frozen tokenizer, cache manifest, training
    config (the task's `solver.<task>` class, from the checkpoint), decoding config (its
    `evaluate.<task>` class, from params) and prepared data."""

    model: torch.nn.Module
    vocab: Vocab
    tokenizer: VQVAE
    manifest: dict
    task_cfg: Any  # the task's own `configs.solver`
    infer_cfg: Any  # the task's own `configs.infer`
    opts: EvalConfig  # batching, panels, max_images
    prepared: Path  # data/prepared/<task>
    records: list[dict]  # the held-out split (max_images applied)
    progress: Callable[[str], Any]  # label -> context manager yielding a Progress


@dataclass(frozen=True)
class SolverResult:
    metrics: dict
    panels: list[Panel]
    files: dict[str, bytes]  # extra result files (COCO results json), written beside metrics.json


Path_ = tuple[str, ...]  # keys into a task's metrics.json


@dataclass(frozen=True)
class Score:
    """One number a task reports, next to what it is compared with (see `scores.py`)."""

    key: str  # headline name, unique across tasks (a `dvc exp show` column)
    label: str  # as a person names it
    value: Path_  # where the model's value sits in the task's metrics.json
    baseline: Path_ | None = None  # its image-blind baseline (or the interpolation tokenizer)
    bound: Path_ | None = None  # the tokenizer's upper bound
    lower_is_better: bool = False
    headline: tuple[str, ...] = ("value", "baseline", "bound")  # parts `dvc exp show` compares; () none
    text: Callable[[Any], str] | None = None  # how a value that is not a number prints


class Task:
    """Base of the tasks: the record every task fills in and the behaviours it implements."""

    name: ClassVar[str]
    code_kind: ClassVar[str]  # the vocabulary range of its codebook (`Vocab.ranges`)
    splits: ClassVar[tuple[str, str]]  # (training, held-out) prepared splits
    configs: ClassVar[TaskConfigs]  # its own params classes
    scores: ClassVar[tuple[Score, ...]]  # what evaluate@<run> reports, in order
    tokenizer_score: ClassVar[Score]  # the reconstruction score of eval_tokenizer (value: key per method)
    baseline_note: ClassVar[str]  # what its image-blind baseline is, for the summary's caption
    cache_fields: ClassVar[dict[str, Callable[[bytes], Any]]] = {}  # decoders of its cached label files

    def tokenizer(self, job: TokenizerJob) -> TokenizerRecipe:
        raise NotImplementedError

    def evaluate_tokenizer(self, ctx: TokenizerEval) -> dict:
        """Hard / soft reconstruction metrics of the held-out split next to `interp_baseline`."""
        raise NotImplementedError

    def cache_layout(self, splits: dict[str, list[dict]], tok: Tokenizer, cfg: Any, prepared: Path) -> Layout:
        """What one cached sample stores, validated against the records and `cfg` (its `cache.<task>`)."""
        raise NotImplementedError

    def vocab_classes(self, manifest: dict) -> int:
        """Class tokens it needs in the shared vocabulary (instances only); default none."""
        return 0

    def training(self, manifest: dict, cfg: Any) -> TrainingRecipe:
        """How the solver trains on its cache (`manifest`) with `solver.<task>` (`cfg`)."""
        raise NotImplementedError

    def evaluate(self, ctx: SolverEval) -> SolverResult | None:
        """Metrics, panels and files on rank 0; None on the other ranks (their batches went to rank 0)."""
        raise NotImplementedError

    def inspect_panel(self, sample: dict, model: VQVAE, manifest: dict) -> np.ndarray:
        """image | GT | hard-decoded cached tokens of one decoded cache sample."""
        raise NotImplementedError
