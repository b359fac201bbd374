"""Headline numbers, console reports and summary rows come from a task's score table, the same for
every task (pipeline/tasks/scores.py): checked on a made-up task and on the real tasks' records."""

from __future__ import annotations

from pipeline.tasks import scores
from pipeline.tasks.base import Score, Task
from pipeline.tasks.registry import TASK_NAMES, get_task


class Made(Task):
    name = "made"
    scores = (
        Score("err", "error (m)", ("model", "err"), ("base", "err"), ("tok", "err"), lower_is_better=True),
        Score("acc", "accuracy", ("model", "acc"), ("base", "acc"), ("tok", "acc"), headline=("value",)),
        Score("found", "found", ("hits",), ("base", "hits"), headline=(), text=lambda h: f"{h[0]}/{h[1]}"),
        Score("later", "a score older runs lack", ("model", "later")),
    )


METRICS = {"model": {"err": 0.5, "acc": 0.25}, "base": {"err": 0.75, "acc": 0.5, "hits": [1, 9]},
           "tok": {"err": 0.125, "acc": 0.75}, "hits": [3, 9]}


def test_the_headline_holds_the_parts_each_score_names():
    assert scores.headline(Made(), METRICS) == {"err": 0.5, "base_err": 0.75, "tok_err": 0.125, "acc": 0.25}


def test_summary_rows_sign_the_gain_so_that_plus_is_better_and_skip_what_a_run_lacks():
    assert scores.summary_rows(Made(), "r", METRICS) == [
        ("r", "made error (m)", "0.5000", "0.7500", "+0.2500", "0.1250"),
        ("r", "made accuracy", "0.2500", "0.5000", "-0.2500", "0.7500"),
        ("r", "made found", "3/9", "1/9", "", ""),
    ]


def test_the_report_line_names_each_headline_score_beside_its_baseline_and_bound():
    assert scores.report(Made(), METRICS) == ("error (m) 0.5000 (baseline 0.7500, tokenizer bound 0.1250); "
                                              "accuracy 0.2500 (baseline 0.5000, tokenizer bound 0.7500)")


def test_every_task_fills_in_the_record_and_headline_keys_are_unique_across_tasks():
    keys = []
    for name in TASK_NAMES:
        task = get_task(name)
        for attr in ("code_kind", "splits", "configs", "scores", "tokenizer_score", "baseline_note"):
            assert getattr(task, attr, None), f"{name}.{attr}"
        assert any(s.baseline for s in task.scores)  # every task scores itself next to a baseline
        keys += [scores.PREFIX[part] + s.key for s in task.scores for part in s.headline]
    assert len(keys) == len(set(keys)), keys
