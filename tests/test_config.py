"""Config integrity: the real params.yaml loads strictly, and dvc.yaml only names keys that exist."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import ConfigError, sections
from pipeline.core.params import from_dict, load_all, load_section, load_value, read_params
from pipeline.core.sources import DemoConfig

ROOT = Path(__file__).resolve().parents[1]


def _stages():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return list(repo.index.stages)


def _plain(node):
    """A loaded config as YAML would hold it: dataclasses -> dicts, tuples -> lists."""
    if dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    return [_plain(v) for v in node] if isinstance(node, (list, tuple)) else node


def _leaves(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, node


def test_real_params_load_into_every_section_with_every_value_kept():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    loaded = _plain(load_all(ROOT / "params.yaml"))
    assert set(loaded) == set(sections()) == set(raw)
    leaves = list(_leaves(raw))
    assert len(leaves) > 100
    for path, value in leaves:  # no value replaced by a default, renamed or mistyped on the way
        node = loaded
        for key in path:
            node = node[key]
        assert node == value and type(node) in (type(value), float), ".".join(map(str, path))


def test_every_dvc_param_key_exists_in_params_yaml():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = [key for stage in _stages() for dep in stage.deps if hasattr(dep, "params")
            for key in dep.params]
    assert keys, "dvc.yaml declares no params"
    for key in keys:
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml names missing param {key}"
            node = node[part]


def test_every_stage_cmd_is_an_ait_command_that_imports():
    from stages.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    for stage in _stages():
        words = stage.cmd.split()
        assert words[0] == "ait", stage.cmd
        assert words[1] in names, f"{stage.addressing}: `ait {words[1]}` does not exist"
    for module in ("stages.data", "stages.prepare", "stages.summary"):
        importlib.import_module(module)


def test_unknown_key_names_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  demo:\n    heigth: 10\n")
    with pytest.raises(ConfigError, match=r"data\.demo\.heigth: unknown key"):
        load_section(p, "data", sections()["data"])


@pytest.mark.parametrize("value, expected", [("'12'", "expected int, got str"),
                                              ("true", "expected int, got bool"),
                                              ("1.5", "expected int, got float")])
def test_wrong_type_names_the_key(tmp_path, value, expected):
    p = tmp_path / "params.yaml"
    p.write_text(f"data:\n  demo:\n    height: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_section(p, "data", sections()["data"])
    assert "data.demo.height" in str(err.value) and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_literal_and_unknown_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  tasks:\n    depth:\n      layout: hdf5\n")
    with pytest.raises(ConfigError, match=r"data\.tasks\.depth\.layout: expected one of"):
        load_section(p, "data", sections()["data"])
    p.write_text("base: {seed: 1}\nsolverr: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'solverr'"):
        load_all(p)


def test_int_is_accepted_for_float_and_configs_are_frozen(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  max_bad_fraction: 0\n  demo: {max_range: 5}\n")
    cfg = load_section(p, "data", sections()["data"])
    assert cfg.demo.max_range == 5.0 and isinstance(cfg.demo.max_range, float)
    assert load_value(p, "data.max_bad_fraction") == 0.0
    with pytest.raises(AttributeError):
        cfg.demo.height = 1  # type: ignore[misc]


@dataclass(frozen=True)
class Inner:
    sizes: tuple[int, ...] = ()
    pair: tuple[int, float] = (1, 1.0)
    name: str | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    table: dict[str, int] = field(default_factory=dict)


def test_nested_collections_are_checked():
    cfg = from_dict(Outer, {"inner": {"sizes": [1, 2], "pair": [3, 4], "name": None}, "table": {"a": 1}}, "x")
    assert cfg.inner.sizes == (1, 2) and cfg.inner.pair == (3, 4.0) and cfg.table == {"a": 1}
    with pytest.raises(ConfigError, match=r"x\.inner\.sizes\[1\]: expected int"):
        from_dict(Outer, {"inner": {"sizes": [1, "b"]}}, "x")
    with pytest.raises(ConfigError, match=r"x\.table\.a: expected int"):
        from_dict(Outer, {"table": {"a": 1.5}}, "x")
    with pytest.raises(ConfigError, match=r"x\.inner\.pair: expected 2 items"):
        from_dict(Outer, {"inner": {"pair": [1]}}, "x")


@pytest.mark.parametrize(("text", "match"), [
    ("base: {seed: on}\n", "line 1: base.seed: 'on' reads as a boolean in YAML 1.1 .the stages. but as "
                            "text in YAML 1.2 .DVC."),
    ("base:\n  seed: 010\n", "line 2: base.seed: '010' reads as an octal number in YAML 1.1"),
    ("base: {seed: 1_000}\n", "'1_000' reads as an integer in YAML 1.1 .* but as text"),
    ("base: {seed: 1:30}\n", "'1:30' reads as an integer"),
    ("solver: {depth: {lr: 5e-05}}\n", "'5e-05' reads as text in YAML 1.1 .* but as a number in YAML 1.2 .*"
                                        "5.0e-05"),
    ("base: {seed: 1}\nbase: {seed: 2}\n", "line 2: base: the key is written twice in one mapping"),
    ("base: {seed: 1, seed: 2}\n", "base.seed: the key is written twice"),
])
def test_yaml_that_two_readers_see_differently_is_refused(tmp_path, text, match):
    """PyYAML (the stages, YAML 1.1) and ruamel (DVC, YAML 1.2) must read the same document: a plain
    scalar they resolve differently, or a key written twice, is one line naming the file and line."""
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as error:
        read_params(p)
    assert str(error.value).startswith(f"{p}: line ")


def test_yaml_both_readers_agree_on_is_read_as_written(tmp_path):
    from ruamel.yaml import YAML

    text = ("a: [true, false, null, ~, 0, -7, 0x1F, 1.5, .5, 1., 5.0e-05, -.inf, text, 'on', '010', "
            "2001-12-14x]\n")
    p = tmp_path / "params.yaml"
    p.write_text(text)
    assert read_params(p) == dict(YAML(typ="safe", pure=True).load(text))


def test_variant_and_run_names_are_checked_against_what_they_become(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tokenizer"]["variants"]["Depth A"] = params["tokenizer"]["variants"]["depth_mask0"]
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="tokenizer.variants: 'Depth A' is not a usable name .it becomes a "
                                          "DVC stage name"):
        load_all(p)
    del params["tokenizer"]["variants"]["Depth A"]
    params["solver"]["runs"]["joint;rm"] = params["solver"]["runs"]["joint"]
    p.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="solver.runs: 'joint;rm' is not a usable name"):
        load_all(p)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "data", sections()["data"])
    p = tmp_path / "bad.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section(p, "data", sections()["data"])


def test_defaults_match_params_yaml():
    # The dataclass defaults are the demo defaults: a params.yaml that omits a key behaves the same.
    assert load_section(ROOT / "params.yaml", "data.demo", DemoConfig) == DemoConfig()


def test_record_reads_reports_each_leaf_read_with_its_dotted_key(tmp_path):
    from pipeline.core.config import sections
    from pipeline.core.params import load_section, load_value, record_reads

    path = tmp_path / "params.yaml"
    path.write_text("base: {seed: 3}\nsolver:\n  num_bins: 8\n  depth: {aux_weight: 0.5}\n"
                    "  runs: {a: {tasks: [depth], batch_size: {depth: 2}}}\n")
    with record_reads() as reads:
        cfg = load_section(path, "solver", sections()["solver"])
        assert cfg.depth.aux_weight == 0.5 and cfg.runs["a"].batch_size == {"depth": 2}
        assert load_value(path, "base.seed") == 3
    assert reads == {"solver.depth.aux_weight", "solver.runs.a.batch_size", "base.seed"}
    assert cfg.num_bins == 8 and "solver.num_bins" not in reads  # read after the block: not recorded
    SolverConfig = sections()["solver"]
    untracked = load_section(path, "solver", SolverConfig)
    fields = ("backbone", "model", "num_bins", "spare_codes", "depth", "insseg", "runs")
    assert type(untracked) is SolverConfig and untracked == SolverConfig(**{
        f: getattr(untracked, f) for f in fields})


def test_a_task_section_is_checked_by_its_own_class_and_by_the_whole_file_check(tmp_path):
    from pipeline.core.params import load_all
    from pipeline.tasks.insseg.config import InssegInferConfig

    path = tmp_path / "params.yaml"
    path.write_text("evaluate:\n  insseg: {top_p: 2.0}\n")
    for load in (lambda: load_section(path, "evaluate.insseg", InssegInferConfig), lambda: load_all(path)):
        with pytest.raises(ConfigError, match=r"evaluate\.insseg\.top_p: must be in \[0, 1\], got 2.0"):
            load()
