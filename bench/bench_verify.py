"""What verifying token-cache shards against their manifest sha256 costs, next to only reading them.

`open_cache(..., verify=True)` (train_solver, `ait inspect cache --verify`) hashes every shard; the default
check compares sizes only. Two ways side by side in one run, per cache and on one synthetic file of
`--gib` GiB (paper scale: the cost is linear in bytes, so the figure is per GB):

- `size_check_s` / `verify_s`: `open_cache` without and with sha256 verification (file cache warm);
- `read_gb_per_s` / `sha256_gb_per_s`: reading the bytes vs reading and hashing them;
- `verify_over_read`: what hashing adds to a read of the same bytes (a training epoch reads them all).

    .venv/bin/python bench/bench_verify.py --caches data/tokens --gib 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import timed  # noqa: E402
from pipeline.core.io import sha256_file  # noqa: E402
from pipeline.token_cache.read import open_cache  # noqa: E402

CHUNK = 1 << 20
CPU = torch.device("cpu")


def _read(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            n += len(block)
    return n


def bench_cache(root: Path, repeats: int) -> dict:
    info = open_cache(root)
    size = sum(s["bytes"] for split in info.manifest["splits"].values() for s in split["shards"])
    out = {"bytes": size, **timed("size_check", lambda: open_cache(root), repeats, CPU),
           **timed("verify", lambda: open_cache(root, verify=True), repeats, CPU)}
    out["verify_over_size_check"] = out["verify_s"] / out["size_check_s"]
    return out


def bench_file(gib: float, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard.tar"
        with open(path, "wb") as f:
            for _ in range(int(gib * 1024)):
                f.write(os.urandom(CHUNK))
        size = path.stat().st_size
        out = {"bytes": size, **timed("read", lambda: _read(path), repeats, CPU),
               **timed("sha256", lambda: sha256_file(path), repeats, CPU)}
    out["read_gb_per_s"] = size / out["read_s"] / 1e9
    out["sha256_gb_per_s"] = size / out["sha256_s"] / 1e9
    out["sha256_s_per_gb"] = out["sha256_s"] / (size / 1e9)
    out["verify_over_read"] = out["sha256_s"] / out["read_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caches", type=Path, default=Path("data/tokens"), help="folder of token caches")
    parser.add_argument("--gib", type=float, default=1.0, help="size of the synthetic shard (0 = skip)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = {"caches": {p.name: bench_cache(p, args.repeats) for p in sorted(args.caches.iterdir())
                         if (p / "manifest.json").is_file()}}
    if args.gib > 0:
        result["file"] = bench_file(args.gib, args.repeats)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
