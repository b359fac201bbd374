"""dvc.yaml's code deps cover what each stage's command imports, derived from the source (no list typed).

For every stage (each foreach entry, as DVC resolves it), the module that implements its `ait`
sub-command (found through the typer app) and the transitive closure of its `pipeline/` and `stages/`
imports (module level and inside functions, by `ast`; not under `if TYPE_CHECKING:`) must each lie
under one of the stage's deps; package `__init__.py` files count when they hold code. The registry
imports a task by name (`pipeline/tasks/<task>/task.py`), which `ast` cannot follow: that is its rule
here, and a stage's closure adds the closures of its own tasks (a variant's task, a run's tasks), and
its deps name exactly those task folders. A dep that no entry of its foreach group imports re-runs the
stage for nothing: it must carry a comment in dvc.yaml saying why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
import yaml

from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("pipeline", "stages")


def _module_file(name: str) -> Path | None:
    """`a.b.c` -> a/b/c.py or a/b/c/__init__.py under the repository, else None."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """Project modules `path` imports (`from a.b import c` counts a.b.c when c is a module)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return {m for m in out if m.split(".")[0] in PROJECT and _module_file(m)}


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (imports there never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))


def _has_code(init: Path) -> bool:
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def closure(module: str) -> set[Path]:
    """Files of `module` and every project module it imports, transitively, plus their packages'
    `__init__.py` files that hold code (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    seen, todo, files = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        todo += sorted(_imports(path))
    return {f for f in files if f.name != "__init__.py" or _has_code(f)}


def _command_modules() -> dict[str, str]:
    """`ait` sub-command words ('train-solver', 'data demo') -> the module of its callback."""
    out = {}
    for info in app.registered_commands:
        out[info.name] = info.callback.__module__
    for group in app.registered_groups:
        sub: typer.Typer = group.typer_instance
        for info in sub.registered_commands:
            out[f"{group.name} {info.name or info.callback.__name__.replace('_', '-')}"] = info.callback.__module__
    return out


def _resolved() -> dict[str, tuple[str, list[str]]]:
    """Every stage as DVC resolves it ('train_solver@joint3') -> (its command, its deps)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: (s.cmd, [d.def_path for d in s.deps]) for s in repo.index.stages}


def _command_module(cmd: str) -> str:
    words = cmd.split()
    assert words[0] == "ait", cmd
    commands = _command_modules()
    key = next(k for k in (" ".join(words[1:3]), words[1]) if k in commands)
    return commands[key]


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TASK_FOLDERS = {p.parent.name for p in (ROOT / "pipeline/tasks").glob("*/task.py")}


def stage_tasks(name: str) -> list[str]:
    """The tasks whose code a stage loads through the registry: its dataset's, its variant's or its
    run's tasks."""
    group, _, key = name.partition("@")
    if group == "prepare":
        return [key]
    if group in ("train_tokenizer", "eval_tokenizer", "cache_tokens"):
        return [PARAMS["tokenizer"]["variants"][key]["task"]]
    if group in ("train_solver", "evaluate"):
        return list(PARAMS["solver"]["runs"][key]["tasks"])
    return []  # demo_data renders the demo dataset: no task's code


def stage_closure(name: str, cmd: str) -> set[Path]:
    """The command's imports plus those of the task modules the registry loads for it: `prepare.py`
    (`get_preparer`) for prepare@<task>, `task.py` (`get_task`) for the others."""
    files = closure(_command_module(cmd))
    module = "prepare" if name.startswith("prepare@") else "task"
    for task in stage_tasks(name):
        files |= closure(f"pipeline.tasks.{task}.{module}")
    return files


def _code_deps(deps: list[str]) -> list[str]:
    return [d for d in deps if d.split("/")[0] in PROJECT]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


STAGES = _resolved()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_module_its_command_and_tasks_import(name):
    cmd, deps = STAGES[name]
    files = stage_closure(name, cmd)
    assert len(files) > 2  # the command module and more: the derivation found something
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not _covered(f, _code_deps(deps)))
    assert not missing, f"dvc.yaml stage {name}: add to deps {missing} (the command imports them)"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_name_exactly_its_own_task_folders(name):
    _, deps = STAGES[name]
    named = {Path(d).parts[2] for d in deps if d.startswith("pipeline/tasks/") and len(Path(d).parts) > 2
             and Path(d).parts[2] in TASK_FOLDERS}
    assert named == set(stage_tasks(name)), f"dvc.yaml stage {name}: task folders {sorted(named)}"


@pytest.mark.parametrize("task", sorted(TASK_FOLDERS))
def test_a_task_imports_no_other_tasks_folder(task):
    others = {f for f in closure(f"pipeline.tasks.{task}.task")
              if f.relative_to(ROOT).parts[:2] == ("pipeline", "tasks") and len(f.relative_to(ROOT).parts) > 3
              and f.relative_to(ROOT).parts[2] != task}
    assert not others, f"pipeline/tasks/{task} imports {sorted(str(f.relative_to(ROOT)) for f in others)}"


def _task_folder(dep: str) -> bool:
    parts = Path(dep).parts
    return len(parts) == 3 and parts[:2] == ("pipeline", "tasks") and parts[2] in TASK_FOLDERS


def _dep_files(dep: str) -> list[Path]:
    """The Python files a code dep stands for (a directory: every .py under it, at any depth)."""
    path = ROOT / dep
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if f.name != "__init__.py" or _has_code(f)]


GROUPS = sorted({name.partition("@")[0] for name in STAGES})


@pytest.mark.parametrize("group", GROUPS)
def test_stage_code_deps_are_imported_or_say_why(group):
    entries = [name for name in STAGES if name.partition("@")[0] == group]
    imported = set().union(*(stage_closure(name, STAGES[name][0]) for name in entries))
    lines = (ROOT / "dvc.yaml").read_text().splitlines()
    extra = {d for name in entries for d in _code_deps(STAGES[name][1]) if not set(_dep_files(d)) <= imported
             and not _task_folder(d)}  # a task's folder is its code as a whole (the registry's unit)
    unexplained = [d for d in sorted(extra)
                   if not any(line.strip().startswith(f"- {d}") and "#" in line for line in lines)]
    assert not unexplained, (f"dvc.yaml stage {group}: deps {unexplained} hold code none of its entries "
                             "imports (a change there re-runs the stage for nothing); list the files instead")


def test_the_closure_follows_function_level_and_package_imports():
    files = {str(f.relative_to(ROOT)) for f in closure("stages.train_solver")}
    assert {"stages/train_solver.py", "pipeline/solver_training/steps.py", "pipeline/solver_training/shares.py",
            "pipeline/models/backbone.py"} <= files
    assert "pipeline/solver_training/__init__.py" not in files  # docstring-only package: nothing runs
    assert "stages/evaluate.py" not in files
    assert not any(f.startswith(("pipeline/tasks/depth", "pipeline/tasks/insseg")) for f in files)  # by name only
    assert "pipeline/tasks/depth/augment.py" in {str(f.relative_to(ROOT)) for f in stage_closure(
        "train_solver@depth", "ait train-solver depth")}


def test_dvc_yaml_stays_short():
    """The pipeline stays readable at a glance: foreach groups and shared anchors, no per-task copies."""
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 300
