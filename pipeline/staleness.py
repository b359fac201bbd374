"""Which reported numbers are out of date: DVC's own status, and every stage downstream of a stale one.

`ait summary` and `ait report` read the results folder as it is. After a targeted experiment
(`dvc exp run … eval_tokenizer@depth_mask50`) or an edit to params.yaml or the code, some of those files
no longer match what `dvc repro` would produce; this module names the evaluating stages whose numbers
are affected, so the commands can say so instead of mixing old and new rows in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The stages whose outputs are the numbers the summary and the reports print.
NUMBER_STAGES = ("prepare@", "eval_tokenizer@", "evaluate@")


@dataclass(frozen=True)
class Staleness:
    stale: list[str]  # what `dvc status` lists (a changed dependency, param or output)
    affected: list[str]  # the number stages among them and downstream of them

    def warning(self) -> str | None:
        """One line for stderr, or None when everything is up to date."""
        if not self.stale:
            return None
        numbers = ", ".join(self.affected) or "none of the reported numbers"
        return (f"warning: `dvc status` finds {len(self.stale)} stale stage(s) ({', '.join(self.stale)}); "
                f"out of date: {numbers}. Run `dvc repro` to bring every number up to date")


def staleness(root: Path = Path(".")) -> Staleness | None:
    """DVC's status of the project at `root` and what it makes stale; None outside a DVC project."""
    if not (Path(root) / "dvc.yaml").is_file():
        return None
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stale = sorted(repo.status())
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        by_name = {stage.addressing: stage for stage in graph.nodes}
        downstream = {name for s in stale if s in by_name
                      for name in (s, *(d.addressing for d in nx.ancestors(graph, by_name[s])))}
    return Staleness(stale, sorted(n for n in downstream if n.startswith(NUMBER_STAGES)))
