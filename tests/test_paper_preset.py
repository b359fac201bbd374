"""The paper preset (presets/paper.yaml) is a valid overlay and builds the paper's models (meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.params import load_all
from pipeline.models.ait import build_ait, solver_config
from pipeline.models.vqvae import VQVAE
from pipeline.presets import merged
from pipeline.tasks.insseg import sequence as insseg_task
from pipeline.tasks.registry import vocab_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> dict:
    combined = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))
    path = tmp_path_factory.mktemp("paper") / "params.yaml"
    path.write_text(yaml.safe_dump(combined))
    return load_all(path)  # strict: every overlay key exists in the schema with the right type


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tokenizers_have_the_paper_sizes(paper):
    with torch.device("meta"):  # no memory, no weights
        depth, mask = VQVAE(paper["tokenizer"].depth.model), VQVAE(paper["tokenizer"].insseg.model)
    assert _count(depth) == 7_689_201  # PAPER_NOTES §1.1: 7.69 M without the codebook buffer
    assert _count(mask) == 1_985_393  # 1.99 M


def test_solver_vocabulary_and_sizes(paper):
    solver = paper["solver"]
    manifest = {"tokenizer": {"num_embeddings": 128}}
    vocab = vocab_for(solver.num_bins, {"depth": manifest,
                      "insseg": manifest | {"categories": [{"id": i} for i in range(80)]}}, solver.spare_codes)
    assert vocab.size == 2467  # paper §4.3 with instance segmentation
    length = solver.insseg.num_query * insseg_task.tokens_per_object(16)
    assert length == 2100
    with torch.device("meta"):
        model = build_ait(solver.backbone, solver_config(solver.model, length), vocab)
    # SwinV2-B ≈ 87 M (PAPER_NOTES §4.1, classifier head excluded).
    assert 86e6 < _count(model.backbone) < 88e6
    # The transformer is 14.7 M in the official code with 4 task slots in its positional table; the
    # registry's four task ids (det, insseg, depth, semseg) fill the same four.
    assert _count(model.solver) == 14_700_963
    assert model.backbone.out_channels == 1024


def _preset_line(*presets: str) -> str:
    from typer.testing import CliRunner

    from stages.cli import app
    result = CliRunner().invoke(app, ["preset", *presets, "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    return result.output


PRESETS = [["presets/paper.yaml"], ["presets/paper.yaml", "presets/rehearsal.yaml"]]


@pytest.mark.parametrize("presets", PRESETS)
def test_preset_line_survives_unquoted_shell_expansion(presets):
    # `dvc exp run $(ait preset ...)`: the shell splits on whitespace and keeps quotes literally.
    words = _preset_line(*[str(ROOT / p) for p in presets]).split()
    assert words[::2] == ["-S"] * (len(words) // 2)
    applied = {}
    for flag in words[1::2]:
        key, _, value = flag.lstrip("+").partition("=")
        applied[key] = yaml.safe_load(value)  # DVC parses -S values as YAML
    overlay = {}
    for p in presets:
        overlay = merged(overlay, yaml.safe_load((ROOT / p).read_text()))
    from pipeline.presets import leaves
    assert applied == dict(leaves(overlay))


# What a dress rehearsal may change of the paper configuration: how long and how wide it runs, which
# data it reads and how much of it is evaluated — never an architecture, a resolution or an optimiser.
REHEARSAL_KNOBS = ("steps", "batch_size", "num_workers", "log_every", "checkpoint_every", "max_images",
                   "batch_images", "num_panels",
                   "grad_checkpointing",  # memory only: same outputs and gradients (test_backbone.py)
                   "backbone.init")  # no pretrained checkpoints in a rehearsal: random init, said explicitly


def test_rehearsal_only_cuts_lengths_batches_workers_and_data():
    from pipeline.presets import leaves
    rehearsal = yaml.safe_load((ROOT / "presets/rehearsal.yaml").read_text())
    changed = [k for k, _ in leaves(rehearsal) if not k.startswith("data.tasks.")]
    assert changed and all(any(f".{knob}" in k for knob in REHEARSAL_KNOBS) for k in changed), changed


@pytest.mark.parametrize("run, key", [("depth", "solver.runs.depth.backbone.weights"),
                                      ("insseg", "solver.runs.insseg.backbone.weights"),
                                      ("semseg", "solver.backbone.weights")])
def test_the_paper_preset_without_its_checkpoints_stops_in_one_line_naming_the_key(tmp_path, run, key):
    """No silent random init at paper size: each paper run names the checkpoint it starts from; absent, the
    stage stops before any work (no cache is opened: there is none here), one line naming the key."""
    from typer.testing import CliRunner

    from stages.cli import app

    combined = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(combined))
    with pytest.MonkeyPatch.context() as m:
        m.chdir(tmp_path)
        result = CliRunner().invoke(app, ["train-solver", run, "--params", "params.yaml", "--device", "cpu"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}") and "not" in lines[0], result.output
