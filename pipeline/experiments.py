"""The paper's ablation tables as DVC experiments: ablations.yaml → `dvc exp run` commands.

`ait ablate` turns each row of a table into one DVC experiment (`-S` overrides of params.yaml plus
the stages it needs as targets); `pipeline/report.py` reads the results back for `ait report`. DVC
stays the only record of what ran: nothing here stores results, and rows find their experiment by
name (`t<table>-<row>`).

DVC parses `-S` values with Hydra's override grammar, which takes JSON scalars and lists but not
JSON objects (quoted keys fail): mappings are written `{key:value,...}` with bare keys.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config import ConfigError
from pipeline.core.params import from_dict, load_all
from pipeline.core.yamlfile import read_yaml
from pipeline.summary import SummaryTable


class ExperimentError(ConfigError):
    """A dvc command failed or printed something unreadable (a ConfigError: stages report it in one line)."""


# --------------------------------------------------------------------------------------------------
# ablations.yaml


@dataclass(frozen=True)
class Column:
    """One figure of a table: our headline metric beside the paper's."""

    header: str
    dataset: Literal["NYUv2", "COCO"]  # where the paper's figure was measured
    metric: str | None = None  # flattened headline key, e.g. "tok.depth_mask50.rmse"; None = not applicable
    scale: float = 1.0  # ours x scale is comparable to the paper's (100: AP in percent)
    digits: int = 4  # decimals shown for both figures


@dataclass(frozen=True)
class Row:
    """One row of a paper table and the overrides that reproduce it."""

    id: str
    label: str  # the paper's row label
    paper: tuple[float | None, ...]  # one per column; None = the paper's "-"
    set: dict[str, Any]  # -S overrides relative to params.yaml; "+key" appends a key
    metrics: tuple[str | None, ...] | None = None  # per-column override of the metric keys
    targets: tuple[str, ...] | None = None  # override of the table's dvc targets
    exp: str | None = None  # experiment name; default t<table>-<id>


@dataclass(frozen=True)
class Ablation:
    """One paper table: what it varies (rows), what it reports (columns), which stages it needs."""

    title: str
    targets: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    note: str = ""  # caveat printed under the report


@dataclass(frozen=True)
class Experiment:
    """One `dvc exp run`: rows that name the same experiment share it."""

    name: str
    set: dict[str, Any]
    targets: tuple[str, ...]


def load_ablations(path: str | Path) -> dict[int, Ablation]:
    """Every table of ablations.yaml, strictly: unknown keys, wrong types and ragged rows raise."""
    path = Path(path)
    raw = read_yaml(path, "ablations") or {}
    tables = raw.get("tables") if isinstance(raw, dict) else None
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: expected a non-empty mapping under 'tables'")
    out = {}
    for number, spec in tables.items():
        if not isinstance(number, int):
            raise ConfigError(f"{path}: tables.{number}: table keys are the paper's table numbers")
        try:
            out[number] = _checked(from_dict(Ablation, spec, f"tables.{number}"), number)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return dict(sorted(out.items()))


def _checked(table: Ablation, number: int) -> Ablation:
    where = f"tables.{number}"
    width = len(table.columns)
    ids = [row.id for row in table.rows]
    if not table.rows or len(set(ids)) != len(ids):
        raise ConfigError(f"{where}.rows: need at least one row and unique ids, got {ids}")
    for row in table.rows:
        if len(row.paper) != width or (row.metrics is not None and len(row.metrics) != width):
            raise ConfigError(f"{where}.{row.id}: paper and metrics need one entry per column ({width})")
    experiments(number, table)
    return table


def get_table(tables: dict[int, Ablation], name: str) -> tuple[int, Ablation]:
    """The table a user typed ("7"); anything else is a one-line error listing the known numbers."""
    known = ", ".join(str(n) for n in tables)
    if not (name.strip().isascii() and name.strip().isdigit()) or int(name) not in tables:
        raise ConfigError(f"unknown table {name!r}: ablations.yaml has tables {known}")
    return int(name), tables[int(name)]


def experiment_name(number: int, row: Row) -> str:
    """The DVC experiment a row reads: its `exp`, else `t<table>-<id>` (the key between ablate and report)."""
    return row.exp or f"t{number}-{row.id}"


def row_metrics(table: Ablation, row: Row) -> tuple[str | None, ...]:
    """The metric key of each column for this row (its own `metrics`, else the columns')."""
    return row.metrics if row.metrics is not None else tuple(c.metric for c in table.columns)


def select(number: int, table: Ablation, rows: Sequence[str]) -> list[Experiment]:
    """The experiments of the rows with these ids (all rows when none is given); an unknown id raises."""
    ids = [row.id for row in table.rows]
    unknown = [r for r in rows if r not in ids]
    if unknown:
        raise ConfigError(f"table {number} has no row {unknown[0]!r}; its rows are {', '.join(ids)}")
    names = {experiment_name(number, row) for row in table.rows if not rows or row.id in rows}
    return [e for e in experiments(number, table) if e.name in names]


def experiments(number: int, table: Ablation) -> list[Experiment]:
    """The distinct experiments of a table in row order; rows sharing one must agree on what it runs."""
    out: dict[str, Experiment] = {}
    for row in table.rows:
        exp = Experiment(experiment_name(number, row), dict(row.set), row.targets or table.targets)
        if out.setdefault(exp.name, exp) != exp:
            raise ConfigError(f"tables.{number}.{row.id}: shares experiment {exp.name!r} with another "
                              "row but sets different params or targets")
    return list(out.values())


# --------------------------------------------------------------------------------------------------
# dvc commands


def render_value(value: Any) -> str:
    """A `-S` value DVC (Hydra) parses back to `value`: JSON scalars and lists, `{key:value}` maps."""
    if isinstance(value, dict):
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][\w-]*", str(key)):
                raise ConfigError(f"mapping key {key!r} cannot be written as a bare Hydra key")
        return "{" + ",".join(f"{k}:{render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    if isinstance(value, str) and "\\" in value:
        raise ConfigError(f"value {value!r}: Hydra's -S grammar would keep its backslashes doubled; use '/'")
    return json.dumps(value, ensure_ascii=False)  # Hydra reads "\u00e9" as six characters, not "é"


def flag_key(flag: str) -> str:
    """The dotted key of a `key=value` override, without Hydra's `+`."""
    if "=" not in flag:
        raise ConfigError(f"-S {flag!r}: expected key=value")
    return flag.split("=", 1)[0].strip().lstrip("+")


def param_paths(tree: dict, prefix: str = "") -> set[str]:
    """Every dotted path of a nested mapping, interior nodes included (a whole section may be set)."""
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= param_paths(value, path + ".")
    return out


def check_mode(dry_run: bool, run: bool, timings: Path | None) -> None:
    """`ait ablate`'s three modes exclude each other; only --run measures rows."""
    if dry_run and run:
        raise ConfigError("--dry-run and --run exclude each other")
    if timings is not None and not run:
        raise ConfigError("--timings: only --run measures rows (queued rows run later, under dvc queue)")


def check_keys(exps: Iterable[Experiment], extra: Sequence[str], params: dict) -> None:
    """Fail before queueing anything when an override names a key params.yaml lacks (a typo or stale key)."""
    known = param_paths(params)
    flags = [f"{k}=" for e in exps for k in e.set] + list(extra)
    for flag in flags:
        if not flag.lstrip().startswith("+") and flag_key(flag) not in known:
            raise ConfigError(f"-S {flag_key(flag)}: not a key of params.yaml (prefix '+' to add a new one)")


def check_values(exps: Iterable[Experiment], extra: Sequence[str], params: Path) -> None:
    """Fail before queueing anything when a row's overrides, applied to a copy of params the way DVC
    applies them (its own Hydra merge), give params the schema refuses: the error would otherwise appear
    only in that row's `dvc queue logs`, after the rows before it were queued."""
    from dvc.utils.hydra import apply_overrides

    for exp in exps:
        argv = command(exp, extra, "temp")
        flags = [argv[i + 1] for i, word in enumerate(argv) if word == "-S"]
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "params.yaml"
            shutil.copyfile(params, copy)
            try:
                apply_overrides(copy, flags)
            except Exception as e:  # DVC's InvalidArgumentError, with Hydra's reason
                raise ConfigError(f"{exp.name}: dvc cannot apply its -S overrides ({one_line(e)})") from None
            try:
                load_all(copy)
            except ConfigError as e:
                where = f"{params} with its -S"
                raise ConfigError(f"{exp.name}: {str(e).replace(str(copy), where)}") from None


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def command(exp: Experiment, extra: Sequence[str], mode: Literal["queue", "temp"]) -> list[str]:
    """`dvc exp run --queue|--temp -n NAME -S ... TARGETS`; the row's own keys win over `extra`."""
    own = {k.lstrip("+") for k in exp.set}
    flags = [f"{k}={render_value(v)}" for k, v in exp.set.items()]
    flags += [f for f in extra if flag_key(f) not in own]
    return ["dvc", "exp", "run", f"--{mode}", "-n", exp.name,
            *(w for f in flags for w in ("-S", f)), *exp.targets]


def shell_line(argv: Sequence[str]) -> str:
    """A command to copy into a shell (Hydra's quotes and braces survive it)."""
    return shlex.join(argv)


def dvc_executable() -> str:
    """The dvc of this interpreter's environment (a venv's bin/ need not be on PATH), else PATH's."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.is_file() else (shutil.which("dvc") or "dvc")


def run_dvc(argv: Sequence[str]) -> str:
    """Run a dvc command to completion; its output, or an ExperimentError with DVC's own error line."""
    try:
        proc = subprocess.run([dvc_executable(), *argv[1:]], capture_output=True, text=True)
    except OSError as e:
        raise ExperimentError(f"cannot run dvc: {e}") from None
    if proc.returncode != 0:
        raise ExperimentError(f"`{' '.join(argv[:6])}` failed: {_dvc_error(proc.stderr + proc.stdout)}")
    return proc.stdout + proc.stderr


def _dvc_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "no output")
    if conflict := re.search(r"conflicts with existing experiment '([^']+)'", first):
        name = conflict.group(1)
        return f"experiment {name!r} exists on this commit: `dvc exp remove {name}`, or commit, and rerun"
    return first.removeprefix("ERROR:").strip()


# --------------------------------------------------------------------------------------------------
# foreground runs


STAGE_LINES = {
    "ran": re.compile(r"^Running stage '([^']+)'"),
    "cached": re.compile(r"^Stage '([^']+)' is cached - skipping run"),
    "unchanged": re.compile(r"^Stage '([^']+)' didn't change, skipping"),
}


@dataclass(frozen=True)
class RowTiming:
    """What one foreground row cost, and how much of it DVC's caches saved."""

    exp: str
    seconds: float
    ran: int  # stages DVC executed
    cached: int  # stages restored from the run-cache
    unchanged: int  # stages whose lock already matched
    returncode: int


def count_stages(lines: Iterable[str]) -> dict[str, int]:
    """Distinct stages per outcome, from DVC 3's `exp run` log lines."""
    seen: dict[str, set[str]] = {key: set() for key in STAGE_LINES}
    for line in lines:
        for key, pattern in STAGE_LINES.items():
            if match := pattern.match(line.strip()):
                seen[key].add(match.group(1))
    return {key: len(names) for key, names in seen.items()}


def run_streaming(argv: Sequence[str], name: str, echo: Callable[[str], None]) -> RowTiming:
    """Run one `dvc exp run --temp`, passing each output line to `echo` as it comes, and time it."""
    start, lines = time.monotonic(), []
    try:
        proc = subprocess.Popen([dvc_executable(), *argv[1:]], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as e:
        raise ExperimentError(f"cannot run dvc: {e}") from None
    with proc:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            echo(lines[-1])
    return RowTiming(name, round(time.monotonic() - start, 2), **count_stages(lines),
                     returncode=proc.returncode)


def run_rows(commands: Sequence[Sequence[str]], names: Sequence[str], echo: Callable[[str], None],
             timings: Path | None = None) -> list[RowTiming]:
    """`dvc exp run --temp` each row in turn (stopping at the first failure), echoing its output; with
    `timings`, write each row's seconds and stage counts as JSON. A failed row raises after the write."""
    done: list[RowTiming] = []
    for argv, name in zip(commands, names, strict=True):
        echo(f"$ {shell_line(argv)}")
        done.append(run_streaming(argv, name, echo))
        if done[-1].returncode != 0:
            break
    if timings:
        timings.parent.mkdir(parents=True, exist_ok=True)
        timings.write_text(json.dumps([asdict(t) for t in done], indent=2) + "\n")
    return done


def check_rows(done: Sequence[RowTiming]) -> None:
    """Refuse a run whose last row failed (its output has been echoed)."""
    if done and done[-1].returncode != 0:
        raise ExperimentError(f"{done[-1].exp}: `dvc exp run --temp` exited with {done[-1].returncode} "
                              "(its output is above)")


def queue_rows(commands: Sequence[Sequence[str]], names: Sequence[str], echo: Callable[[str], None]) -> None:
    """`dvc exp run --queue` each row."""
    for argv, name in zip(commands, names, strict=True):
        run_dvc(argv)
        echo(f"queued {name}")


def timing_table(done: Sequence[RowTiming]) -> SummaryTable:
    """The stage counts per row of `run_rows`: where shared-solver rows saved their time."""
    rows = tuple((t.exp, f"{t.seconds:.1f}", str(t.ran), str(t.cached), str(t.unchanged)) for t in done)
    columns = ("experiment", "seconds", "ran", "cached", "unchanged")
    return SummaryTable("ablation rows: DVC stages per row", columns, rows,
                        "cached: restored from DVC's run-cache; unchanged: dvc.lock already matched")
