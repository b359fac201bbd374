"""The tiny project as a git + DVC repository after a real `dvc repro`, built once for the whole suite.

The repro of every stage is the slowest fixture of the suite, and two test files need it. Under
pytest-xdist each worker is its own process, so the first one to ask builds the repository in the
run's shared temporary folder under a file lock (the pattern pytest-xdist documents for session
fixtures); every test module then works on its own copy, so what one file's experiments change
cannot leak into another's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from tests.tiny import ROOT, TINY_PIPELINE, merge, tiny_params, write_params

BIN = Path(sys.executable).parent  # where `ait` and `dvc` are installed
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@dataclass(frozen=True)
class DvcRepo:
    root: Path
    env: dict
    repro_log: str  # what the first `dvc repro` printed

    def run(self, *args: str, env: dict | None = None) -> str:
        """A command in the repository (`dvc ...` and `ait ...` from the venv); its output, or a failure
        that shows it."""
        tool = [str(BIN / args[0])] if args[0] in ("dvc", "ait") else [args[0]]
        result = subprocess.run([*tool, *args[1:]], cwd=self.root, env=env or self.env, capture_output=True,
                                text=True)
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def commit(self, message: str) -> None:
        self.run(*GIT, "add", "-A")
        self.run(*GIT, "commit", "-qm", message, "--allow-empty")

    def status(self) -> dict:
        return json.loads(self.run("dvc", "status", "--json"))


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def stages_restored(output: str) -> set[str]:
    """The stages it restored from the run-cache instead."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def _env(root: Path) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GIT_CONFIG_NOSYSTEM": "1", "DVC_SITE_CACHE_DIR": str(root / ".dvc-site"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _build(root: Path) -> str:
    """pipeline/, stages/, dvc.yaml and a tiny params.yaml in a new git + DVC repository, reproduced."""
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "ablations.yaml", "models/pretrained/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    params = merge(tiny_params(root), TINY_PIPELINE)
    params["data"]["tasks"]["depth"]["root"] = "data/demo/nyuv2"  # the repo-relative demo output
    params["data"]["tasks"]["insseg"]["root"] = "data/demo"
    params["data"]["tasks"]["semseg"]["root"] = "data/demo/nyuv2"
    write_params(root / "params.yaml", params)
    repo = DvcRepo(root, _env(root), "")
    repo.run("git", "init", "-q")
    repo.run("dvc", "init", "-q")
    repo.commit("tiny pipeline")
    return repo.run("dvc", "repro")


def reproduced(shared: Path) -> tuple[Path, str]:
    """The reproduced repository under `shared` (built by the first caller) and its repro log."""
    built, log = shared / "dvc_repo", shared / "dvc_repo.repro.log"
    with FileLock(str(shared / "dvc_repo.lock")):
        if not log.exists():
            shutil.rmtree(built, ignore_errors=True)  # a build that failed half-way
            built.mkdir(parents=True)
            log.write_text(_build(built))
    return built, log.read_text()


def copy_of(shared: Path, dest: Path) -> DvcRepo:
    """A private copy of the reproduced repository (git history, DVC cache and run-cache included)."""
    built, log = reproduced(shared)
    shutil.copytree(built, dest, symlinks=True, ignore=shutil.ignore_patterns(".dvc-site"),
                    dirs_exist_ok=True)
    return DvcRepo(dest, _env(dest), log)
