"""dvc.yaml's code deps cover what each stage's command imports, derived from the source (no list typed).

For every stage (foreach bodies once: their entries share the command and deps), the module that
implements its `ait` sub-command (found through the typer app) and the transitive closure of its
`pipeline/` and `stages/` imports (module level and inside functions, by `ast`) must each lie under
one of the stage's deps; package `__init__.py` files count when they hold code. A dep that nothing in
the closure lies under re-runs the stage for nothing: it must carry a comment in dvc.yaml saying why.
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
    for node in ast.walk(ast.parse(path.read_text())):
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


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def _command_module(cmd: str) -> str:
    words = cmd.split()
    assert words[0] == "ait", cmd
    commands = _command_modules()
    key = next(k for k in (" ".join(words[1:3]), words[1]) if k in commands)
    return commands[key]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if d.split("/")[0] in PROJECT]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


STAGES = _stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_module_its_command_imports(name):
    stage = STAGES[name]
    files = closure(_command_module(stage["cmd"]))
    assert len(files) > 2  # the command module and more: the derivation found something
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not _covered(f, _code_deps(stage)))
    assert not missing, f"dvc.yaml stage {name}: add to deps {missing} (the command imports them)"


def _dep_files(dep: str) -> list[Path]:
    """The Python files a code dep stands for (a directory: every .py under it, at any depth)."""
    path = ROOT / dep
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in files if f.name != "__init__.py" or _has_code(f)]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_are_imported_or_say_why(name):
    stage = STAGES[name]
    files = closure(_command_module(stage["cmd"]))
    lines = (ROOT / "dvc.yaml").read_text().splitlines()
    extra = [d for d in _code_deps(stage) if not set(_dep_files(d)) <= files]
    unexplained = [d for d in extra if not any(line.strip().startswith(f"- {d}") and "#" in line for line in lines)]
    assert not unexplained, (f"dvc.yaml stage {name}: deps {unexplained} hold code its command never imports "
                             "(a change there re-runs the stage for nothing); list the files it imports instead")


def test_the_closure_follows_function_level_and_package_imports():
    files = {str(f.relative_to(ROOT)) for f in closure("stages.train_solver")}
    assert {"stages/train_solver.py", "pipeline/solver/steps.py", "pipeline/solver/shares.py",
            "pipeline/tasks/__init__.py", "pipeline/models/backbone.py"} <= files
    assert "pipeline/solver/__init__.py" not in files  # docstring-only package: nothing runs
    assert "stages/evaluate.py" not in files
