"""Headline metrics: the few numbers per evaluating stage that `dvc exp show` compares across runs.

Each eval_tokenizer@<variant> and evaluate@<run> also writes one small JSON into `results/headline/`;
dvc.yaml's `metrics:` lists only these. Keys are unique across those files
(`tok.<variant>.*`, `<run>.*`), so DVC prints short column names without file prefixes and
`dvc exp show --only-changed` stays narrow; the detailed numbers stay in each stage's metrics.json.
"""

from __future__ import annotations

from pathlib import Path


def tokenizer_headline(variant: str, metrics: dict, key: str, name: str) -> dict:
    """Reconstruction of the VQ-VAE (hard decode) next to the interpolation tokenizer (paper Tables 1, 12):
    the task's score `key` of metrics.json as `<name>` and `interp_<name>`."""
    hard, interp = metrics["vqvae_hard"], metrics["interp_baseline"]
    return {"tok": {variant: {name: hard[key], f"interp_{name}": interp[key]}}}


def headline_path(root: Path, stage: str, key: str) -> Path:
    """`results/headline/<stage>_<key>.json`, the path dvc.yaml declares for that stage's headline."""
    return Path(root) / f"{stage}_{key}.json"
