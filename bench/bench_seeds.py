"""Seed spread of the demo's headline figures: each run trained with 3 seeds, mean ± spread beside baselines.

The demo's figures come from one seed; a difference smaller than what another seed moves them is not a
result. This bench re-trains, with `base.seed` = each of --seeds and nothing else changed:
- the single-task solver runs (`ait train-solver` + `ait evaluate`) on the project's own prepared data,
  tokenizers and token caches (a project where `make repro` ran; nothing there is written);
- with --tokenizers, the tokenizer variants (`ait train-tokenizer` + `ait eval-tokenizer`), VQ-VAE
  against the interpolation tokenizer (the paper's Table 12 comparison; depth inside the holes too).
Each score gets mean, sample standard deviation, min and max over the seeds, and a verdict: `better
beyond spread` (or `worse beyond spread`) when the gap between the model's and the baseline's means
exceeds twice their pooled standard deviation (2·sqrt(sd_model² + sd_baseline²); image-blind baselines
do not depend on the seed), else `within spread`. Every run has its
own folder under --runs-dir, named by its params' hash, and is not run again once it holds a result (an
interrupted bench resumes; seed 0 is bench_learning.py's 1x run). Prints one JSON object, also written
to <out>/seeds.json (what `ait summary --spread` reads), with a markdown table in <out>/seeds.md.

    .venv/bin/python bench/bench_seeds.py --tokenizers
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics

import yaml
from _runs import add_common_args, held_out, project_inputs, solver_run, tokenizer_run

from pipeline.tasks.registry import get_task

RUNS = ("depth", "insseg", "semseg")
METHODS = {"vqvae_hard": "value", "interp_baseline": "baseline"}


def seeded(params: dict, seed: int) -> dict:
    out = copy.deepcopy(params)
    out["base"]["seed"] = seed
    return out


def tokenizer_scores(metrics: dict) -> dict[str, dict]:
    """The VQ-VAE's (hard decode) reconstruction score against the interpolation tokenizer's, and, where
    the task measures it, both inside the sensor's holes (lower is better there)."""
    score = get_task(metrics["task"]).tokenizer_score
    key = score.value[-1]
    out = {score.key: {part: metrics[m].get(key) for m, part in METHODS.items()}
           | {"lower_is_better": score.lower_is_better}}
    if "hole_rmse" in metrics["vqvae_hard"]:
        holes = {part: metrics[m]["hole_rmse"] for m, part in METHODS.items()}
        out["hole_rmse"] = holes | {"lower_is_better": True}
    return out


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def summarise(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Per score: the model's and the baseline's stats over seeds and the verdict."""
    out = {}
    for key, first in per_seed[0].items():
        row = {"lower_is_better": first["lower_is_better"]}
        for part in ("value", "baseline"):
            values = [s[key][part] for s in per_seed if s[key][part] is not None]
            if values:
                row[part] = stats(values)
        if "value" in row and "baseline" in row:
            gap = row["value"]["mean"] - row["baseline"]["mean"]
            row["gain"] = -gap if row["lower_is_better"] else gap
            noise = 2 * math.hypot(row["value"]["sd"], row["baseline"]["sd"])
            row["verdict"] = ("within spread" if abs(gap) <= noise else
                              "better beyond spread" if row["gain"] > 0 else "worse beyond spread")
        out[key] = row
    return out


def markdown(report: dict) -> str:
    """One row per (solver run or tokenizer variant, score): each seed's figure, mean ± sd, the baseline
    (image-blind; for tokenizers the interpolation tokenizer) and the verdict."""
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [f"| what | score | seeds {seeds} | mean ± sd | baseline | verdict |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for section in ("solver", "tokenizer"):
        for name, scores in report[section].items():
            for key, row in scores.items():
                if "value" not in row:
                    continue
                v = row["value"]
                base = f"{row['baseline']['mean']:.4f}" if "baseline" in row else ""
                lines.append(f"| {section} {name} | {key} | {', '.join(f'{x:.4f}' for x in v['values'])} | "
                             f"{v['mean']:.4f} ± {v['sd']:.4f} | {base} | {row.get('verdict', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "seeds.json, seeds.md")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", nargs="*", choices=RUNS, default=list(RUNS))
    parser.add_argument("--tokenizers", action="store_true", help="also re-train every tokenizer variant")
    args = parser.parse_args()
    project, runs_dir = args.project.resolve(), args.runs_dir.resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    inputs = project_inputs(project)
    report: dict = {"seeds": args.seeds, "solver": {}, "tokenizer": {}}
    for run in args.runs:
        per_seed = [held_out(solver_run(runs_dir, run, seeded(params, s), inputs)["metrics"])[run]
                    for s in args.seeds]
        report["solver"][run] = summarise(per_seed)
        print(f"solver {run}: done", flush=True)
    for variant in params["tokenizer"]["variants"] if args.tokenizers else ():
        per_seed = [tokenizer_scores(tokenizer_run(runs_dir, variant, seeded(params, s),
                                                   inputs)["metrics"]) for s in args.seeds]
        report["tokenizer"][variant] = summarise(per_seed)
        print(f"tokenizer {variant}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(report, indent=1))
    (args.out / "seeds.md").write_text(markdown(report) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
