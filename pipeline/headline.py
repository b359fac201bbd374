"""Headline metrics: the few numbers per evaluating stage that `dvc exp show` compares across runs.

Each eval_tokenizer@<variant> and evaluate@<run> also writes one small JSON into `results/headline/`;
dvc.yaml's `metrics:` lists only these. Keys are unique across those files
(`tok.<variant>.*`, `<run>.*`), so DVC prints short column names without file prefixes and
`dvc exp show --only-changed` stays narrow; the detailed numbers stay in each stage's metrics.json.
"""

from __future__ import annotations

from pathlib import Path


def tokenizer_headline(variant: str, metrics: dict) -> dict:
    """Reconstruction of the VQ-VAE (hard decode) next to the interpolation tokenizer (paper Tables 1, 12)."""
    hard, interp = metrics["vqvae_hard"], metrics["interp_baseline"]
    if metrics["task"] == "depth":
        numbers = {"rmse": hard["rmse"], "interp_rmse": interp["rmse"]}
    else:
        numbers = {"mask_ap": hard["AP"], "interp_mask_ap": interp["AP"]}
    return {"tok": {variant: numbers}}


def solver_headline(run: str, metrics: dict) -> dict:
    """The solver's depth RMSE / δ1 and box / mask AP next to their image-blind baselines (`base_*`);
    for depth also its tokenizer's own reconstruction RMSE on the same frames (`tok_rmse`, the bound)."""
    numbers = {}
    if "depth" in metrics:
        depth = metrics["depth"]
        model, base = depth["model"], depth["mean_depth_baseline"]
        numbers |= {"rmse": model["rmse"], "d1": model["d1"], "base_rmse": base["rmse"], "base_d1": base["d1"],
                    "tok_rmse": depth["tokenizer_upper_bound"]["rmse"]}
    if "insseg" in metrics:
        model, base = metrics["insseg"], metrics["insseg"]["prior_baseline"]
        numbers |= {"box_ap": model["bbox"]["AP"], "mask_ap": model["segm"]["AP"],
                    "base_box_ap": base["bbox"]["AP"], "base_mask_ap": base["segm"]["AP"]}
    return {run: numbers}


def headline_path(root: Path, stage: str, key: str) -> Path:
    """`results/headline/<stage>_<key>.json`, the path dvc.yaml declares for that stage's headline."""
    return Path(root) / f"{stage}_{key}.json"
