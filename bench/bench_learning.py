"""Held-out quality against training budget: the demo's single-task solver runs at 1x, 3x and 10x steps.

The small-scale counterpart of the paper's scaling: the same stage commands as `make repro`
(`ait train-solver`, `ait evaluate`), the same params except `solver.runs.<run>.steps`, the same
prepared data, tokenizers and token caches (read from a project where `make repro` ran; nothing there is
written), scored on the held-out rooms against each task's image-blind baseline. Every schedule in
params is stated in fractions of the run (warm-up steps aside), so a longer budget anneals the same way.

Each (run, multiple) trains in its own folder under --runs-dir (named by its params' hash), cheapest
first; one that already holds a result is not run again, so an interrupted sweep resumes. Prints one
JSON object (also written to <out>/learning.json, with a markdown table in <out>/learning.md) and draws
<out>/learning.png: the plotted score of each run against its steps, the baseline beside it.

    .venv/bin/python bench/bench_learning.py                                 # 1x, 3x, 10x: bench_out/
    .venv/bin/python bench/bench_learning.py --runs insseg --multiples 1 3 \
        --set solver.runs.insseg.layer_decay=1.0
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import yaml
from _runs import add_common_args, held_out, override, project_inputs, solver_run

RUNS = ("depth", "insseg", "semseg")
PLOTTED = {"depth": "rmse", "insseg": "box_ap50", "semseg": "miou"}  # the scores the demo's targets name
# the demo's targets (README, "How quality grows with compute"), from the baseline where they are relative
TARGETS = {"depth": lambda base: 0.6 * base, "insseg": lambda base: 0.25, "semseg": lambda base: 2 * base}
TABLED = {"depth": ("rmse", "spread"), "insseg": ("box_ap50", "found", "box_ap"),
          "semseg": ("miou", "pixel_acc")}


def budget_params(params: dict, run: str, multiple: float, sets: list[str]) -> dict:
    """The project's params with the overrides, and run `run` trained for `multiple` times its steps."""
    out = copy.deepcopy(params)
    for item in sets:
        override(out, item)
    cfg = out["solver"]["runs"][run]
    cfg["steps"] = max(1, round(cfg["steps"] * multiple))
    return out


def sweep(args: argparse.Namespace) -> dict:
    params = yaml.safe_load((args.project / "params.yaml").read_text())
    inputs = project_inputs(args.project)
    rows: dict[str, list[dict]] = {run: [] for run in args.runs}  # a run without any budget yet: no panel
    for multiple in sorted(args.multiples):
        for run in args.runs:
            p = budget_params(params, run, multiple, args.set)
            result = solver_run(args.runs_dir, run, p, inputs, only_done=args.only_done)
            if result is None:
                continue
            rows[run].append({"multiple": multiple, "steps": p["solver"]["runs"][run]["steps"],
                              "folder": Path(result["folder"]).name, "seconds": result["seconds"],
                              "held_out": held_out(result["metrics"])[run]})
            print(f"{run} x{multiple:g}: {rows[run][-1]['held_out'][PLOTTED[run]]}", flush=True)
    return {"set": args.set, "runs": {r: v for r, v in rows.items() if v}}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, (run, rows) in zip(axes[0], runs.items(), strict=True):
        key = PLOTTED[run]
        steps = [r["steps"] for r in rows]
        model = [r["held_out"][key]["value"] for r in rows]
        base = [r["held_out"][key]["baseline"] for r in rows]
        ax.plot(steps, model, "o-", label="solver (held-out rooms)")
        ax.plot(steps, base, "--", color="grey", label="image-blind baseline")
        ax.plot(steps, [TARGETS[run](b) for b in base], ":", color="tab:green", label="target")
        for s, m, r in zip(steps, model, rows, strict=True):
            ax.annotate(f"{r['seconds']['train'] / 60:.1f} min", (s, m), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        ax.set_xticks(steps, [f"{s}\n({r['multiple']:g}x)" for s, r in zip(steps, rows, strict=True)])
        ax.minorticks_off()
        arrow = "lower is better" if rows[0]["held_out"][key]["lower_is_better"] else "higher is better"
        ax.set_title(f"{run}: {key} ({arrow})")
        ax.set_xlabel("training steps (demo multiple)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(report: dict) -> str:
    """One row per (run, budget): steps, training minutes and the tabled scores as "model (baseline)";
    spread is the correlation of the depth map's deviation from the mean map with the ground truth's,
    found the share of ground-truth objects found at IoU >= 0.5 with the right class."""
    lines = ["| run | steps | training | scores: model (baseline) |", "| --- | ---: | ---: | --- |"]
    for run, rows in report["runs"].items():
        for r in rows:
            cells = []
            for key in TABLED[run]:
                score = r["held_out"][key]
                base = f" ({score['baseline']:.4f})" if score["baseline"] is not None else ""
                cells.append(f"{key} {score['value']:.4f}{base}")
            budget = f"{r['steps']} ({r['multiple']:g}×) | {r['seconds']['train'] / 60:.1f} min"
            lines.append(f"| {run} | {budget} | {'; '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "learning.json, learning.png")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--multiples", nargs="+", type=float, default=[1, 3, 10])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override for every run (dotted key, YAML value); repeatable")
    parser.add_argument("--only-done", action="store_true", help="train nothing: report the runs that exist")
    args = parser.parse_args()
    args.project, args.runs_dir = args.project.resolve(), args.runs_dir.resolve()
    report = sweep(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning.json").write_text(json.dumps(report, indent=1))
    (args.out / "learning.md").write_text(markdown(report) + "\n")
    plot(report, args.out / "learning.png")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
