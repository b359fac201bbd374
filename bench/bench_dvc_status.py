"""What DVC costs on a dataset root with many files as a stage dep (the `prepare` stages at full scale).

A real `prepare@insseg` depends on the COCO root (118,287 train + 5,000 val images, ~19 GB) and
`prepare@depth` on the NYUv2 sync root (24,231 RGB + 24,231 depth PNGs, ~30 GB with the raw scenes).
DVC hashes a directory dep file by file (md5) the first time and remembers (inode, mtime, size) -> md5
in its state database, so later `dvc status` calls only stat the files. This bench measures both on
`--files` synthetic files of `--kib` KiB each in a throw-away git + DVC repository, as two ways side by
side in one run:

- `repro_first_s`: the first `dvc repro` of a stage depending on the folder (hashes every file);
- `status_warm_s`: `dvc status` afterwards (stat only, state-db hits), median of `--repeats`;
- `status_after_touch_s`: `dvc status` after rewriting one file (one re-hash plus the stats);
- the same three on a folder of one file: DVC's fixed start-up cost;
- per-file figures (the costs minus the fixed cost, over the file count) and `hash_mb_per_s`.

    .venv/bin/python bench/bench_dvc_status.py --files 20000 --kib 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DVC_YAML = """stages:
  prepare:
    cmd: python -c "open('out.txt','w').write('ok')"
    deps: [raw]
    outs: [out.txt]
"""


def _run(repo: Path, *args: str) -> float:
    """Seconds of one DVC call (analytics off). `status -q` exits 1 when something changed; more fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode not in (0, 1) or (done.returncode and args[0] != "status"):
        raise SystemExit(f"dvc {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return time.perf_counter() - start


def _repo(root: Path, files: int, kib: int) -> Path:
    """A git + DVC repository whose `prepare` stage depends on `raw/` holding `files` random files."""
    repo = root / f"repo_{files}"
    (repo / "raw").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run(repo, "init", "-q")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for i in range(files):  # 1,000 files per folder, as image datasets are laid out
        path = repo / "raw" / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(kib * 1024))
    return repo


def measure(root: Path, files: int, kib: int, repeats: int) -> dict:
    repo = _repo(root, files, kib)
    first = _run(repo, "repro", "-q")
    warm = statistics.median(_run(repo, "status", "-q") for _ in range(repeats))
    (repo / "raw" / "000" / "000000.jpg").write_bytes(os.urandom(kib * 1024))
    touched = _run(repo, "status", "-q")
    return {"repro_first_s": round(first, 2), "status_warm_s": round(warm, 2),
            "status_after_touch_s": round(touched, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--kib", type=int, default=16, help="size of each synthetic file")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_file = measure(Path(tmp), 1, args.kib, args.repeats)  # DVC start-up and fixed costs
        full = measure(Path(tmp), args.files, args.kib, args.repeats)
    mb = args.files * args.kib / 1024
    per_file_hash = (full["repro_first_s"] - one_file["repro_first_s"]) / args.files
    per_file_stat = (full["status_warm_s"] - one_file["status_warm_s"]) / args.files
    out = {"files": args.files, "kib_per_file": args.kib, "one_file": one_file, "full": full,
           "fixed_status_s": one_file["status_warm_s"],
           "hash_ms_per_file": round(1e3 * per_file_hash, 3),
           "hash_mb_per_s": round(mb / max(full["repro_first_s"] - one_file["repro_first_s"], 1e-9), 1),
           "stat_us_per_file": round(1e6 * per_file_stat, 1),
           "warm_over_first": round(full["status_warm_s"] / full["repro_first_s"], 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
