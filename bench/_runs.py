"""The real stage commands, run from a bench (a helper, not a bench).

- `override`: one params override as `dvc exp run -S` takes it (dotted key, YAML value);
- `ait`: one `ait` sub-command in a folder, timed; the bench stops with the command's output if it fails;
- `project_inputs`: the prepared data, tokenizers and token caches of a project where `make repro` ran;
- `solver_run` / `tokenizer_run`: train and evaluate one solver run / tokenizer variant from those
  inputs in a folder named by its params' hash, writing nothing into the project; a step that finished
  is not run again, so an interrupted sweep resumes and the benches share their runs (the seed bench's
  seed-0 runs are the learning bench's 1x runs);
- `held_out`: a run's held-out scores read through each task's score table (what `ait summary` prints),
  plus the two shares the demo's targets are stated in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.tasks.registry import get_task
from pipeline.tasks.scores import parts

ROOT = Path(__file__).resolve().parents[1]


def override(params: dict, item: str) -> None:
    """Apply `dotted.key=yaml-value` to params in place; an unknown parent key stops the bench."""
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    tree = params
    for part in parents:
        if not isinstance(tree, dict) or part not in tree:
            sys.exit(f"--set {key}: params has no '{part}'")
        tree = tree[part]
    tree[leaf] = yaml.safe_load(value)


def ait(cwd: Path, *args: str) -> float:
    """Run `ait <args>` in cwd with this interpreter's environment; its wall seconds."""
    start = time.perf_counter()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["ait", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"ait {' '.join(args)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return round(time.perf_counter() - start, 1)


def add_common_args(parser: argparse.ArgumentParser, outputs: str) -> None:
    """The options every run-sweeping bench takes: the project, the shared runs folder, the output folder."""
    parser.add_argument("--project", type=Path, default=ROOT, help="where `make repro` ran (default: here)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "bench_out/runs", help="one folder per run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out", help=outputs)


def project_inputs(project: Path) -> dict[str, Path]:
    """The project and the stage outputs a run reads, by absolute path; stops when `make repro` has not
    made them."""
    inputs = {"prepared": project / "data/prepared", "tokenizers": project / "models/tokenizer",
              "caches": project / "data/tokens"}
    missing = [str(p) for p in inputs.values() if not p.is_dir()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make repro` in {project} first")
    return {"project": project.resolve()} | {k: p.resolve() for k, p in inputs.items()}


def _folder(root: Path, name: str, params: dict) -> Path:
    """root/<name>-<hash of params>, holding those params: the same run asked for twice (by two benches,
    or by one that was stopped) is the same folder."""
    text = yaml.safe_dump(params, sort_keys=False)
    folder = root / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(text)
    return folder


def _steps(folder: Path, cwd: Path, commands: dict[str, list[str]], only_done: bool = False) -> dict | None:
    """Run each named `ait` command in cwd unless an earlier call finished it (its seconds are kept in
    folder/seconds.json): {"folder", "seconds", "metrics"} with folder/results/metrics.json. With
    `only_done`, run nothing: None unless every command has finished."""
    record = folder / "seconds.json"
    seconds = json.loads(record.read_text()) if record.is_file() else {}
    if only_done and not set(commands) <= set(seconds):
        return None
    for name, args in commands.items():
        if name not in seconds:
            seconds[name] = ait(cwd, *args)
            record.write_text(json.dumps(seconds))
    return {"folder": str(folder), "seconds": seconds,
            "metrics": json.loads((folder / "results/metrics.json").read_text())}


def solver_run(root: Path, run: str, params: dict, inputs: dict[str, Path],
               only_done: bool = False) -> dict | None:
    """`ait train-solver` + `ait evaluate` of `run` under `params`, in a folder of root. The commands run
    in the project (its prepared records name files relative to it) and write only into the folder; an
    interrupted training resumes from its state there. `only_done`: None unless it has finished."""
    f = _folder(root, run, params)
    shared = ["--params", str(f / "params.yaml"), "--tokenizers", str(inputs["tokenizers"]),
              "--caches", str(inputs["caches"])]
    return _steps(f, inputs["project"], only_done=only_done, commands={
        "train": ["train-solver", run, *shared, "--out", str(f / "model"), "--state-dir", str(f / "state"),
                  "--live-dir", str(f / "live")],
        "evaluate": ["evaluate", run, *shared, "--prepared", str(inputs["prepared"]), "--model-dir",
                     str(f / "model"), "--out", str(f / "results"), "--headline", str(f / "headline")]})


def tokenizer_run(root: Path, variant: str, params: dict, inputs: dict[str, Path]) -> dict:
    """`ait train-tokenizer` + `ait eval-tokenizer` of one variant under `params`, as `solver_run`."""
    f = _folder(root, f"tok_{variant}", params)
    shared = ["--params", str(f / "params.yaml"), "--prepared", str(inputs["prepared"])]
    return _steps(f, inputs["project"], {
        "train": ["train-tokenizer", variant, *shared, "--out", str(f / "model"),
                  "--live-dir", str(f / "live")],
        "evaluate": ["eval-tokenizer", variant, *shared, "--model-dir", str(f / "model"),
                     "--out", str(f / "results"), "--headline", str(f / "headline")]})


def _number(value) -> float | None:
    """A score's number: the value itself, or the share of ground-truth objects found with the right
    class (instance hits), or the correlation of the depth spread; None for anything else."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and "gt_objects" in value:
        return value["gt_found_right_class"] / max(value["gt_objects"], 1)
    if isinstance(value, dict) and "deviation_correlation" in value:
        return value["deviation_correlation"]
    return None


def held_out(metrics: dict) -> dict[str, dict[str, dict[str, float | None]]]:
    """{task: {score key: {"value", "baseline", "lower_is_better"}}} for every score of every task the run
    was evaluated on."""
    out = {}
    for name, task_metrics in metrics.items():
        scores = {}
        for score in get_task(name).scores:
            found = parts(score, task_metrics)
            scores[score.key] = {"value": _number(found["value"]), "baseline": _number(found["baseline"]),
                                 "lower_is_better": score.lower_is_better}
        out[name] = scores
    return out
