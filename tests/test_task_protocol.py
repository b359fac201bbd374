"""The task protocol (pipeline/tasks/base.py) holds for every registered task, and the generic layers stay
generic: no task name in their code, thin stage modules, one registry in step with the params schema.

The contract test runs each task end to end on the tiny demo through the library functions the stages
call: its labels -> a trained tokenizer -> reconstruction metrics -> a verified token cache -> one solver
training step -> decoded predictions scored next to its baseline -> headline, report, summary rows and
an inspection panel.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import TaskName
from pipeline.inspect import sample_panel
from pipeline.jobs.cache import cache_job, cache_variant
from pipeline.jobs.evaluate import EvalPaths, evaluate_run, load_options
from pipeline.jobs.tokenizer import evaluate_variant, load_tokenizer_spec, train_variant
from pipeline.jobs.train_solver import RunPaths, load_run, train_run
from pipeline.tasks import scores
from pipeline.tasks.base import Task
from pipeline.tasks.registry import TASK_IDS, TASK_NAMES, get_task
from pipeline.token_cache.read import ZarrTokens, open_cache
from tests.tiny import ROOT, TINY_PIPELINE, merge, tiny_params, write_params

CPU = torch.device("cpu")
# Everything outside the task folders is task-blind: it names no task. The exceptions read the datasets
# and the params file, whose formats and keys are named after tasks: the dataset readers (pipeline/data)
# and the registry, the one list of the tasks.
NAMING_ALLOWED = ("pipeline/data/", "pipeline/tasks/registry.py")
GENERIC = sorted(p for d in ("pipeline", "stages") for p in (ROOT / d).rglob("*.py")
                 if not str(p.relative_to(ROOT)).startswith(NAMING_ALLOWED)
                 and not (p.relative_to(ROOT).parts[:2] == ("pipeline", "tasks") and p.parent.name in TASK_IDS))
TASK_WORD = re.compile(rf"(?:^|_)({'|'.join(TASK_NAMES)})(?:_|$)")
MAX_STAGE_LINES = 60


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def task_specific(path: Path) -> set[str]:
    """Task names `path` uses as strings (a comparison, a key, a default) and its functions and classes
    named after a task (`colorize_depth`, `InssegLayout`): task logic that belongs in the task's folder."""
    tree = ast.parse(path.read_text())
    named = _string_constants(path) & set(TASK_NAMES)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
               and TASK_WORD.search(re.sub(r"(?<=[a-z])(?=[A-Z])", "_", n.name).lower())}
    return named | defined


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_outside_the_task_folders_is_task_blind(path):
    found = task_specific(path)
    assert not found, f"{path.relative_to(ROOT)}: {sorted(found)} is task logic: move it to pipeline/tasks/<task>/"


def test_the_task_scan_catches_a_comparison_and_a_task_named_function(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(task):\n    return 1 if task == "semseg" else 2\n\n\n'
                   'def colorize_depth(x):\n    return x\n\n\nclass InssegLayout:\n    pass\n')
    assert task_specific(bad) == {"semseg", "colorize_depth", "InssegLayout"}
    assert len(GENERIC) > 60  # the tokenizer training, caches, solver, models, core and stages are scanned


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not comments, not docstrings."""
    src = path.read_text()
    docs = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docs |= set(range(body[0].lineno, body[0].end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in skip:
            lines |= set(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docs)


@pytest.mark.parametrize("path", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stage_modules_are_thin(path):
    assert code_lines(path) < MAX_STAGE_LINES, f"{path.name}: move orchestration into pipeline/"


def test_code_lines_counts_code_only(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc\n\nstring."""\n\n# comment\nx = 1\n\n\n'
                 'def g():\n    """Doc."""\n    return (x +\n            1)\n')
    assert code_lines(f) == 4


def test_registry_matches_the_params_schema_and_implements_the_whole_protocol():
    assert TASK_NAMES == ("insseg", "depth", "semseg")  # the vocabulary's layout order
    assert set(typing.get_args(TaskName)) == set(TASK_NAMES)
    assert sorted(p.parent.name for p in (ROOT / "pipeline/tasks").glob("*/task.py")) == sorted(TASK_NAMES)
    methods = [name for name, v in vars(Task).items() if callable(v) and not name.startswith("_")]
    for name in TASK_NAMES:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        missing = [m for m in methods if getattr(type(task), m) is getattr(Task, m)
                   and m != "vocab_classes"]
        assert not missing, f"{task.name} does not implement {missing}"
    assert len(set(TASK_IDS.values())) == len(TASK_IDS)
    with pytest.raises(Exception, match="registered tasks: insseg, depth, semseg"):
        get_task("panoptic")


def test_the_registry_imports_only_the_task_it_is_asked_for():
    code = ("import sys; from pipeline.tasks.registry import get_task; get_task('semseg'); "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.tasks.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {m.split(".")[2] for m in eval(out.stdout)}
    assert "semseg" in loaded and not loaded & {"depth", "insseg"}, loaded


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol")
    (root / "data").symlink_to(tiny_project / "data")
    steps = {"runs": {run: {"steps": 1} for run in ("depth", "insseg", "semseg")}}
    params = merge(merge(tiny_params(tiny_project), TINY_PIPELINE), {"solver": steps})
    write_params(root / "params.yaml", params)
    return root


@pytest.mark.parametrize("name", TASK_NAMES)
def test_contract_labels_tokens_cache_step_decode_metrics(project, tmp_path, name):
    task, params, prepared = get_task(name), project / "params.yaml", project / "data/prepared"
    variant = load_run(params, name).variants[name]
    tok_dir = tmp_path / "models/tokenizer" / variant
    # labels -> tokenizer
    spec = load_tokenizer_spec(params, variant)
    trained = train_variant(spec, prepared, tok_dir, tmp_path / "live_tok", CPU)
    assert np.isfinite(trained["loss"])
    # reconstruction next to the interpolation baseline, by the task's own metric
    key, headline_name = task.tokenizer_score.value[0], task.tokenizer_score.key
    recon = evaluate_variant(variant, params, prepared, tok_dir, tmp_path / "eval_tok", tmp_path / "headline",
                             CPU)
    assert recon["task"] == name and {"vqvae_hard", "vqvae_soft", "interp_baseline"} <= set(recon)
    assert 0 <= recon["interp_baseline"][key] < float("inf")
    assert (tmp_path / "headline" / f"eval_tokenizer_{variant}.json").read_text().count(headline_name) == 2
    # tokens -> a verified cache of the task's layout
    cache = tmp_path / "data/tokens" / variant
    manifest = cache_variant(cache_job(variant, params, prepared, tok_dir), cache, CPU)
    assert manifest["task"] == name and set(manifest["splits"]) == set(task.splits)
    open_cache(cache, verify=True, variant=variant)
    # one training step of the task's own run
    spec = load_run(params, name)
    paths = RunPaths(tmp_path / "data/tokens", tmp_path / "models/tokenizer", tmp_path / "solver",
                     tmp_path / "state", tmp_path / "live")
    done = train_run(spec, paths, CPU, echo=lambda _: None)
    assert np.isfinite(done["loss"])
    # decode -> metrics next to the task's baseline, headline, report, summary rows
    opts = load_options(params, num_panels=1, max_images=2)
    where = EvalPaths(prepared, paths.out, paths.tokenizers, paths.caches, tmp_path / "eval",
                      tmp_path / "headline")
    metrics = evaluate_run(name, where, opts, CPU)[name]
    assert metrics["num_images"] == 2
    assert scores.report(task, metrics) and scores.summary_rows(task, name, metrics)
    numbers = scores.headline(task, metrics)
    assert numbers and all(np.isfinite(v) for v in numbers.values())
    assert any(k.startswith("base_") for k in numbers)  # every task scores itself next to a baseline
    assert len(list((tmp_path / "eval/panels").glob(f"{name}_*.png"))) == 1
    # the inspection panel of one cached sample
    _, _, picture = sample_panel(cache, ZarrTokens(cache, task.splits[0]).keys[0], tok_dir)
    assert picture.ndim == 3 and picture.dtype == np.uint8 and picture.shape[1] > picture.shape[0]

