"""The `ait` command: one sub-command per DVC stage, plus tools to inspect what stages produced."""

from __future__ import annotations

import typer

from stages import (
    ablate,
    cache_tokens,
    data,
    eval_tokenizer,
    evaluate,
    inspect,
    prepare,
    preset,
    report,
    summary,
    train_solver,
    train_tokenizer,
)

app = typer.Typer(
    no_args_is_help=True,
    help="AiT (All in Tokens) pipeline. Every DVC stage in dvc.yaml is one of these commands.",
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.command("prepare")(prepare.main)
app.command("train-tokenizer")(train_tokenizer.main)
app.command("eval-tokenizer")(eval_tokenizer.main)
app.command("cache-tokens")(cache_tokens.main)
app.add_typer(inspect.app, name="inspect")
app.command("train-solver")(train_solver.main)
app.command("evaluate")(evaluate.main)
app.command("summary")(summary.main)
app.command("preset")(preset.main)
app.command("ablate")(ablate.main)
app.command("report")(report.main)

if __name__ == "__main__":
    app()
