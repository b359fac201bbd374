"""`ait evaluate RUN` — the `evaluate@{depth,insseg,joint}` DVC stages (paper Tables 2-4, 10; AiT ref §5).

Rebuilds the trained solver from `models/solver/<run>/config.json`, the frozen tokenizers it names (their
content hash must equal the recorded one) and, from the token-cache manifests it was trained on, the
depth crop size and the contiguous class -> category id order. Every task of the checkpoint is scored
on its held-out split (depth: test, insseg: val). Writes `<out>/metrics.json`, `<out>/insseg_results.json`
(COCO results with RLE masks, insseg only), `<out>/panels/<task>_<key>.png` and the same panels as DVCLive
images under `<out>/live`. Reads only the inference params (`evaluate`: batching, panels and, per task,
the decoding: soft tokens, tau, top-p, test-time augmentation), so `dvc exp run -S
evaluate.depth.flip_tta=false` re-scores without retraining; how the model was trained comes from its
checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline import checkpoint
from pipeline.config import DepthTaskConfig, EvalConfig, InssegTaskConfig
from pipeline.data.errors import DataError
from pipeline.headline import headline_path, solver_headline
from pipeline.io import atomic_dir, read_jsonl, write_json, write_json_atomic
from pipeline.models.ait import load_solver
from pipeline.params import from_dict, load_section
from pipeline.runtime import pick_device
from pipeline.solver.evaluate import evaluate_depth, evaluate_insseg, train_depth_baselines
from pipeline.tokens.manifest import check_tokenizer, read_manifest
from pipeline.viz import save_png
from stages.live import open_live
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress

TASK_CONFIG = {"depth": DepthTaskConfig, "insseg": InssegTaskConfig}
SPLIT = {"depth": "test", "insseg": "val"}


def _tokenizer(task: str, config: dict, tokenizers: Path, model_dir: Path):
    """The frozen tokenizer the solver was trained with; a different content hash is a one-line error."""
    entry = config["tokenizers"][task]
    directory = tokenizers / entry["variant"]
    tokenizer, tok_config = checkpoint.load_vqvae(directory)
    if tok_config["content_hash"] != entry["hash"]:
        raise DataError(f"{directory}: tokenizer {tok_config['content_hash']} is not the {entry['hash']} "
                        f"that {model_dir} was trained with; retrain the solver or restore that tokenizer")
    return tokenizer


def _manifest(task: str, config: dict, caches: Path) -> dict:
    """The token-cache manifest the solver was trained on (crop size, category order), hash-checked."""
    root = caches / config["tokenizers"][task]["variant"]
    manifest = read_manifest(root)
    check_tokenizer(manifest, config["tokenizers"][task]["hash"], root)
    return manifest


def _records(prepared: Path, task: str, max_images: int, split: str | None = None) -> list[dict]:
    path = prepared / task / f"{split or SPLIT[task]}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: prepared manifest not found (run `dvc repro prepare`)")
    records = read_jsonl(path)
    return records[:max_images] if max_images > 0 and split is None else records


def _evaluate_task(task: str, model, vocab, config: dict, paths: dict[str, Path], opts: EvalConfig,
                   device: torch.device):
    """(metrics, COCO results or None, panels) of one task of the checkpoint."""
    tokenizer = _tokenizer(task, config, paths["tokenizers"], paths["model_dir"]).to(device)
    manifest = _manifest(task, config, paths["caches"])
    where = f"{paths['model_dir']}: task_configs.{task}"
    cfg = from_dict(TASK_CONFIG[task], config["task_configs"][task], where)
    records = _records(paths["prepared"], task, opts.max_images)
    if task == "depth":
        with progress("evaluate: training depth statistics") as cb:
            baselines = train_depth_baselines(_records(paths["prepared"], task, 0, split="train"), cb)
        with progress("evaluate depth") as cb:
            metrics, panels = evaluate_depth(model, tokenizer, vocab, records, baselines,
                                             manifest["views"]["crop_size"], opts, cb)
        return metrics, None, panels
    categories = json.loads((paths["prepared"] / "insseg" / "categories.json").read_text())
    ids = [c["id"] for c in manifest["categories"]]  # contiguous class k <-> ids[k], as in training
    if len(ids) != vocab.num_classes:
        raise DataError(f"{paths['caches']}: {len(ids)} categories, but the solver has {vocab.num_classes}")
    generator = torch.Generator(device=device).manual_seed(opts.insseg.seed)  # top_p > 0 samples reproducibly
    train = _records(paths["prepared"], task, 0, split="train")  # the image-blind baseline's statistics
    with progress("evaluate insseg") as cb:
        return evaluate_insseg(model, tokenizer, vocab, cfg, records, categories, ids, train, opts, generator,
                               cb)


@fail_cleanly
def main(
    run: Annotated[str, typer.Argument(help="a trained run (a key of solver.runs: depth, insseg, joint)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    model_dir: Annotated[Path | None, typer.Option(help="solver checkpoint dir")] = None,
    tokenizers: Annotated[Path, typer.Option(help="tokenizer checkpoints root")] = Path("models/tokenizer"),
    caches: Annotated[Path, typer.Option(help="token-cache root (manifests only)")] = Path("data/tokens"),
    out: Annotated[Path | None, typer.Option(help="results dir")] = None,
    headline: Annotated[Path | None, typer.Option(help="headline metrics dir (default: results/headline "
                                                          "beside the results dir)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
    num_panels: Annotated[int | None, typer.Option(help="PNG panels per task (default: params)")] = None,
    max_images: Annotated[int | None, typer.Option(help="only the first N samples, 0 = all (default: "
                                                        "params)")] = None,
) -> None:
    """Score a trained task-solver on every task it was trained for; write metrics and panels.

    Reads `evaluate` (batching, panels, decoding); the two options override params for quick runs outside
    DVC.
    """
    model_dir = model_dir or Path("models/solver") / run
    out = out or Path("results/evaluate") / run
    overrides = {"num_panels": num_panels, "max_images": max_images}
    opts = replace(load_section(params, "evaluate", EvalConfig),
                   **{k: v for k, v in overrides.items() if v is not None})
    model, vocab, config = load_solver(model_dir)
    if config.get("run") != run:
        raise DataError(f"{model_dir}: holds run {config.get('run')!r}, not {run!r}")
    dev = pick_device(device)
    model.to(dev)
    paths = {"prepared": prepared, "tokenizers": tokenizers, "caches": caches, "model_dir": model_dir}
    metrics, panels, results = {}, [], None
    for task in config["tasks"]:
        metrics[task], task_results, task_panels = _evaluate_task(task, model, vocab, config, paths, opts,
                                                                  dev)
        results = task_results if task_results is not None else results
        panels += [(f"{task}_{key}.png", image) for key, image in task_panels]
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", metrics)
        if results is not None:  # compact: a full COCO run holds ~500k results
            text = json.dumps(results, sort_keys=True, separators=(",", ":"))
            (tmp / "insseg_results.json").write_text(text)
        live = open_live(tmp / "live", True)
        for name, image in panels:
            save_png(image, tmp / "panels" / name)
            live.log_image(name, image)
        live.end()
    headline = headline or out.parent.parent / "headline"
    write_json_atomic(headline_path(headline, "evaluate", run), solver_headline(run, metrics))
    _report(run, metrics)


def _report(run: str, metrics: dict) -> None:
    if "depth" in metrics:
        m = metrics["depth"]
        console.print(f"evaluate {run} depth: RMSE {m['model']['rmse']:.4f} (mean-depth baseline "
                      f"{m['mean_depth_baseline']['rmse']:.4f}, gain {100 * m['rmse_gain_vs_mean']:.1f}%; "
                      f"tokenizer bound {m['tokenizer_upper_bound']['rmse']:.4f}), d1 {m['model']['d1']:.3f}",
                      highlight=False)
    if "insseg" in metrics:
        m = metrics["insseg"]
        console.print(f"evaluate {run} insseg: box AP {m['bbox']['AP']:.4f}, mask AP {m['segm']['AP']:.4f} "
                      f"over {m['num_images']} images", highlight=False)
