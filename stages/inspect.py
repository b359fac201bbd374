"""`ait inspect …` — look inside what the stages produced (token caches), for people and for scripts.

- `ait inspect cache PATH [--json]`: per split samples, shards, bytes, tokens per sample and code usage
  (min/median/max count per code, perplexity, unused codes), computed from the zarr store; a rich table
  on stdout, or the same numbers as JSON;
- `ait inspect sample PATH KEY --out FILE.png`: image | GT | hard-decoded tokens side by side. Depth: the
  cached view 0 (unflipped, x = 0) decoded, next to the same crop of the image and GT, one colour scale
  for both depths. Insseg: GT masks and the decoded (unflipped-crop) masks pasted into their boxes, as
  coloured overlays with class names (from the manifest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from pipeline import checkpoint
from pipeline.data.coco import segmentation_to_mask
from pipeline.metrics.codes import usage_stats
from pipeline.tokenizers.mask_crops import paste_mask
from pipeline.tokens.manifest import CacheError
from pipeline.tokens.read import (
    CacheInfo,
    ZarrTokens,
    code_counts,
    decode_sample,
    iter_tar_samples,
    open_cache,
)
from pipeline.viz import colorize_depth, overlay_instances, panel, save_png, shared_range
from stages.ui import console, fail_cleanly

app = typer.Typer(no_args_is_help=True, help="Inspect pipeline outputs (token caches).")


def summarize_cache(path: Path, verify: bool = False) -> dict[str, Any]:
    """Per-split counts, sizes and code-usage statistics of the cache at `path` (`verify`: shard sha256)."""
    info = open_cache(path, verify=verify)
    m = info.manifest
    k = m["tokenizer"]["num_embeddings"]
    splits = {}
    for split in info.splits:
        entry, tokens = info.split(split), ZarrTokens(path, split)
        per_item = int(np.prod(m["views"]["tokens_shape"] if info.task == "depth" else m["tokens_shape"]))
        n_items = len(tokens) if tokens.offsets is None else int(tokens.offsets[-1])
        splits[split] = {
            "samples": entry["samples"], "shards": len(entry["shards"]),
            "bytes": sum(s["bytes"] for s in entry["shards"]),
            "tokens_per_sample": per_item * n_items / max(len(tokens), 1),
            **({"instances": entry["instances"], "tokenised_instances": entry["tokenised_instances"]}
               if info.task == "insseg" else {}),
            "code_usage": usage_stats(code_counts(tokens, k)),
        }
    return {"path": str(path), "task": m["task"], "variant": m["variant"],
            "tokenizer_hash": info.tokenizer_hash, "num_embeddings": k, "splits": splits, "verified": verify}


def foreign_variant(path: Path, variant: str | None) -> str | None:
    """A warning when the folder name is not the variant its manifest records (a copied or moved cache)."""
    name = Path(path).resolve().name
    if variant != name:
        return (f"warning: {path} holds the cache of variant {variant!r}, not {name!r}; "
                f"stages read data/tokens/<variant>, so rebuild it there (`dvc repro cache_tokens@{name}`)")
    return None


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['path']}: {summary['task']} cache of {summary['variant']} "
                        f"(tokenizer {summary['tokenizer_hash']}, K={summary['num_embeddings']}"
                        f"{'; every shard sha256 verified' if summary['verified'] else ''})")
    for name in ("split", "samples", "shards", "bytes", "tokens/sample", "code count min/median/max",
                 "perplexity", "unused codes"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, s in summary["splits"].items():
        u = s["code_usage"]
        table.add_row(split, str(s["samples"]), str(s["shards"]), f"{s['bytes']:,}",
                      f"{s['tokens_per_sample']:.1f}", f"{u['min']}/{u['median']:g}/{u['max']}",
                      f"{u['perplexity']:.2f}", str(u["unused_codes"]))
    return table


@app.command("cache")
@fail_cleanly
def cache(
    path: Annotated[Path, typer.Argument(help="token cache dir (data/tokens/<variant>)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON on stdout instead of a table")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="also check every shard's sha256 against the "
                                                          "manifest (reads every byte)")] = False,
) -> None:
    """Counts, sizes and codebook usage of a token cache."""
    summary = summarize_cache(path, verify)
    warning = foreign_variant(path, summary["variant"])
    if warning:
        console.print(warning, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        out = Console()
        # Logs and pipes default to 80 columns, which truncates the cells; give them room instead.
        (out if out.is_terminal else Console(width=max(out.width, 160))).print(_table(summary))


# --------------------------------------------------------------------------------------------------
# one sample


def find_sample(info: CacheInfo, key: str) -> tuple[str, int, dict[str, Any]]:
    """(split, index, decoded sample) of `key`, read from its shard."""
    for split in info.splits:
        tokens = ZarrTokens(info.root, split)
        if key not in tokens.keys:
            continue
        index = tokens.index_of(key)
        bounds = np.cumsum([0, *info.shard_sizes(split)])
        shard = info.shards(split)[int(np.searchsorted(bounds, index, side="right")) - 1]
        for sample in iter_tar_samples(shard):
            if sample["__key__"] == key:
                return split, index, decode_sample(sample)
    raise CacheError(f"{info.root}: no sample with key {key!r} in {', '.join(info.splits)}")


def _depth_panels(sample: dict[str, Any], model: torch.nn.Module, crop: int) -> np.ndarray:
    view = sample["views"][0]  # flip 0, x 0 by construction (views.depth_views)
    x = view["x"]
    decoded = model.decode(torch.from_numpy(sample["tokens"][:1].astype(np.int64)))[0, 0].numpy()
    gt = sample["depth"][:, x : x + crop]
    lo, hi = shared_range(gt, decoded)
    tiles = [sample["rgb"][:, x : x + crop], colorize_depth(gt, lo, hi), colorize_depth(decoded, lo, hi)]
    return panel(tiles, ["image", f"GT depth {lo:.2f}-{hi:.2f} m", "decoded tokens (view 0)"])


def _insseg_panels(sample: dict[str, Any], model: torch.nn.Module, names: dict[int, str],
                   grid: tuple[int, int]) -> np.ndarray:
    ann, image = sample["annotations"], sample["image"]
    hw = (ann["height"], ann["width"])
    pos = {a: i for i, a in enumerate(ann["ann_ids"])}
    rows = [pos[a] for a in ann["token_ann_ids"]]
    boxes = [ann["boxes"][i] for i in rows]
    labels = [names.get(ann["category_ids"][i], str(ann["category_ids"][i])) for i in rows]
    gt = np.zeros((len(rows), *hw), np.uint8)
    for k, i in enumerate(rows):
        gt[k] = segmentation_to_mask(ann["segmentations"][i], *hw)
    pred = np.zeros((0, *hw), np.uint8)
    if rows:
        tokens = sample["tokens"][:, 0].astype(np.int64).reshape(-1, *grid)  # unflipped crop, (n, h, w)
        crops = model.decode(torch.from_numpy(tokens))[:, 0].numpy()
        pred = np.stack([paste_mask(c, b, hw) for c, b in zip(crops, boxes)])
    overlays = [overlay_instances(image, masks, labels, boxes) for masks in (gt, pred)]
    return panel([image, *overlays], ["image", f"GT masks ({len(rows)})", "decoded tokens"])


@app.command("sample")
@fail_cleanly
def sample(
    path: Annotated[Path, typer.Argument(help="token cache dir")],
    key: Annotated[str, typer.Argument(help="sample key (see the prepared manifests or zarr keys)")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("sample.png"),
    model_dir: Annotated[Path | None, typer.Option(help="tokenizer checkpoint "
                                                        "(default: the manifest's)")] = None,
) -> None:
    """Render image | GT | hard-decoded cached tokens of one sample to a PNG."""
    info = open_cache(path)
    m = info.manifest
    model, tokenizer = checkpoint.load_vqvae(model_dir or Path(m["tokenizer"]["checkpoint"]))
    open_cache(path, expected_hash=tokenizer["content_hash"])  # refuse decoding with another tokenizer
    split, index, decoded = find_sample(info, key)
    with torch.no_grad():
        if info.task == "depth":
            image = _depth_panels(decoded, model, m["views"]["crop_size"])
        else:
            names = {c["id"]: c["name"] for c in m["categories"]}
            image = _insseg_panels(decoded, model, names, tuple(m["tokenizer"]["grid"]))
    save_png(image, out)
    console.print(f"inspect sample {key} ({split} #{index}) -> {out} ({image.shape[1]}x{image.shape[0]})",
                  highlight=False)
