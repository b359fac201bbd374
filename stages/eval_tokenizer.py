"""`ait eval-tokenizer VARIANT` — the `eval_tokenizer@<variant>` DVC stages (paper Tables 1, 8, 12).

Scores the trained tokenizer's reconstructions of the held-out split (depth: NYU protocol, hard and
soft decoding, plus hole RMSE against the complete depth when the data has one; masks: COCO mask AP
with GT boxes and classes) next to the interpolation-tokenizer baseline, and writes `metrics.json` plus
the headline numbers (`results/headline/eval_tokenizer_<variant>.json`). The task and the mask crop side
come from the checkpoint; params give only the soft decode's temperature (`evaluate.tokenizer.<task>`),
so the stage re-runs when the tokenizer or that temperature changes and for nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline import checkpoint
from pipeline.config import TokenizerEvalConfig
from pipeline.data.errors import DataError
from pipeline.headline import headline_path, tokenizer_headline
from pipeline.io import atomic_dir, read_jsonl, write_json, write_json_atomic
from pipeline.params import load_section
from pipeline.runtime import pick_device
from pipeline.tokenizers.evaluate import evaluate_depth, evaluate_masks
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress

SPLIT = {"depth": "test", "insseg": "val"}


@fail_cleanly
def main(
    variant: Annotated[str, typer.Argument(help="a key of tokenizer.variants")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    model_dir: Annotated[Path | None, typer.Option(help="checkpoint dir")] = None,
    out: Annotated[Path | None, typer.Option(help="results dir")] = None,
    headline: Annotated[Path | None, typer.Option(help="headline metrics dir (default: results/headline "
                                                          "beside the results dir)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
) -> None:
    """Reconstruction metrics of one tokenizer variant against the interpolation baseline."""
    model, config = checkpoint.load_vqvae(model_dir or Path("models/tokenizer") / variant)
    task = config["task"]
    cfg = load_section(params, f"evaluate.tokenizer.{task}", TokenizerEvalConfig)
    out = out or Path("results/eval_tokenizer") / variant
    split = prepared / task / f"{SPLIT[task]}.jsonl"
    if not split.is_file():
        raise DataError(f"{split}: prepared manifest not found (run `dvc repro prepare`)")
    records = read_jsonl(split)
    dev = pick_device(device)
    with progress(f"eval_tokenizer {variant}") as cb:
        if task == "depth":
            metrics = evaluate_depth(model, records, cfg.tau, dev, cb)
        else:
            categories = json.loads((prepared / "insseg" / "categories.json").read_text())
            metrics = evaluate_masks(model, records, categories, config["train"]["crop_size"], cfg.tau,
                                     dev, progress=cb)
    metrics = {"variant": variant, "task": task, "tokenizer_hash": config["content_hash"],
               "num_images": len(records), **metrics}
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", metrics)
    numbers = tokenizer_headline(variant, metrics)
    headline = headline or out.parent.parent / "headline"
    write_json_atomic(headline_path(headline, "eval_tokenizer", variant), numbers)
    key = "rmse" if task == "depth" else "AP"
    console.print(f"eval_tokenizer {variant}: {key} hard {metrics['vqvae_hard'][key]:.4f}, soft "
                  f"{metrics['vqvae_soft'][key]:.4f}, interpolation baseline "
                  f"{metrics['interp_baseline'][key]:.4f}", highlight=False)
