"""Backbone (and encoder) initialisation from checkpoints saved the way other projects save them.

Each foreign layout is written from a randomly initialised model exactly as its own code saves it (the
official Swin/SimMIM: patch merging at the end of a stage, `head.*`, persistent relative-position buffers
and attention masks, a `model` wrapper, SimMIM's `encoder.` prefix, mask token and pixel decoder; a
detector: `backbone.*` among other modules under `state_dict`, with `meta`), then loaded through
`models/pretrained.py`: every backbone tensor must arrive, equal to the source's.
"""

from __future__ import annotations

import re

import pytest
import torch

from pipeline.core.config import BackboneConfig, BackboneInit, ConfigError, SolverModelConfig
from pipeline.core.errors import DataError
from pipeline.core.vocab import Vocab
from pipeline.models.ait import build_ait, solver_config
from pipeline.models.backbone import build_backbone
from pipeline.models.pretrained import WINDOW_BUFFERS, initialise

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), img_size=64, window_size=4,
            normalize=False)


def official_layout(body: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm SwinV2's weights as the official Swin Transformer V2 code saves them: patch merging at the
    end of stage s (timm: start of s+1), classifier `head.*`, and the window buffers kept persistent."""
    state = {}
    for key, value in body.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key)
        state[key.replace("head.fc.", "head.")] = value.clone()
    for key, value in body.named_buffers():
        if any(b in key for b in WINDOW_BUFFERS) and value is not None:
            state[key] = value.clone()
    state["head.weight"], state["head.bias"] = torch.randn(10, body.num_features), torch.zeros(10)
    return state


def _source(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(**{**TINY, **overrides})).eval()


def _fresh(**overrides) -> torch.nn.Module:
    torch.manual_seed(99)  # another random init, which loading must overwrite
    return build_backbone(BackboneConfig(**{**TINY, **overrides})).eval()


def _assert_same_tensors(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    got, want = loaded.body.state_dict(), source.body.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _same_forward(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_timm_state_dict_loads_every_tensor(tmp_path, suffix):
    source, path = _source(), tmp_path / f"timm{suffix}"
    state = {k: v.contiguous() for k, v in source.body.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = _fresh()
    report = initialise(loaded, path)
    assert report.layout == "timm" and report.backbone_tensors == len(state) and report.unused == {}
    _assert_same_tensors(loaded, source)
    assert _same_forward(loaded, source)


@pytest.mark.parametrize("simmim", [False, True])
def test_official_swin_and_simmim_checkpoints_load_every_tensor(tmp_path, simmim):
    source = _source()
    state = official_layout(source.body)
    if simmim:  # SimMIM: the Swin encoder under `encoder.`, a mask token and a pixel-shuffle decoder
        state = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("head.")}
        state |= {"encoder.mask_token": torch.zeros(1, 1, 16), "decoder.0.weight": torch.randn(48, 128, 1, 1),
                  "decoder.0.bias": torch.zeros(48)}
    torch.save({"model": state, "epoch": 99}, tmp_path / "official.pth")
    loaded = _fresh()
    report = initialise(loaded, tmp_path / "official.pth")
    assert report.layout == ("simmim" if simmim else "swin")
    assert report.backbone_tensors == len(source.body.state_dict())
    assert report.rebuilt > 0  # the saved window tables were not loaded: timm rebuilt them
    unused = {"encoder.mask_token": 1, "decoder.N.weight": 1, "decoder.N.bias": 1} if simmim else {"(backbone) head.fc.weight": 1,
                                                                           "(backbone) head.fc.bias": 1}
    assert report.unused == unused
    _assert_same_tensors(loaded, source)
    assert _same_forward(loaded, source)


def test_a_pretraining_window_other_than_the_runs_rebuilds_the_position_tables(tmp_path):
    """Pretrained at window 4 (as SimMIM's 12/12/12/6), run at window 8 (as the paper's 30/30/30/15): every
    weight is the source's (SwinV2's position bias is an MLP over coordinates, not a table of the window's
    size) and the coordinate table is the run's own, normalised by the pretraining window."""
    source = _source()
    torch.save({"model": official_layout(source.body)}, tmp_path / "w4.pth")
    run = dict(img_size=128, window_size=8, pretrained_window_sizes=(4, 4, 4, 2))
    loaded = _fresh(**run)
    initialise(loaded, tmp_path / "w4.pth")
    _assert_same_tensors(loaded, source)
    key = "layers.0.blocks.0.attn.relative_coords_table"
    table, reference = dict(loaded.body.named_buffers())[key], dict(_fresh(**run).body.named_buffers())[key]
    assert table.shape == (1, 15, 15, 2) != dict(source.body.named_buffers())[key].shape
    assert torch.equal(table, reference)


def test_a_detector_checkpoint_gives_its_backbone_and_reports_the_rest(tmp_path):
    source = _source()
    state = {f"backbone.{k}": v for k, v in official_layout(source.body).items() if not k.startswith("head.")}
    state |= {"neck.conv.weight": torch.randn(4, 4), "roi_head.fc.weight": torch.randn(4, 4),
              "roi_head.fc.bias": torch.randn(4)}
    torch.save({"meta": {"epoch": 12, "config": "model = dict(...)"}, "state_dict": state}, tmp_path / "det.pth")
    loaded = _fresh()
    report = initialise(loaded, tmp_path / "det.pth")
    assert report.layout == "detector" and report.encoder_tensors == 0
    assert report.unused == {"neck.conv.weight": 1, "roi_head.fc.weight": 1, "roi_head.fc.bias": 1}
    _assert_same_tensors(loaded, source)


def _ait(seed: int):
    torch.manual_seed(seed)
    model_cfg = SolverModelConfig(dim=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1)
    return build_ait(BackboneConfig(**TINY), solver_config(model_cfg, 16), Vocab.build(8, 0, None, 16))


def test_this_projects_solver_checkpoint_gives_backbone_and_encoder_but_not_the_decoder(tmp_path):
    """The paper's instance runs start from a detection-pretrained backbone + encoder and a random
    decoder (PAPER_NOTES §4.6): a solver checkpoint of this project, DDP-prefixed, loads exactly that."""
    from safetensors.torch import save_file

    source, target = _ait(0), _ait(1)
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "m.safetensors"))
    report = initialise(target.backbone, tmp_path / "m.safetensors", target.solver)
    assert report.layout == "ait-pipeline" and report.encoder_tensors > 0
    want, got = source.state_dict(), target.state_dict()
    encoder = [k for k in want if k.startswith(("solver.encoder.", "solver.input_proj.", "solver.proj_mlp."))]
    assert encoder and all(torch.equal(got[k], want[k]) for k in encoder)
    assert all(torch.equal(got[k], want[k]) for k in want if k.startswith("backbone."))
    assert not torch.equal(got["solver.token_embed"], want["solver.token_embed"])  # the decoder stays random
    assert report.unused and all(g.startswith("solver.") for g in report.unused)


def test_a_checkpoint_of_another_model_fails_in_one_line_naming_the_file(tmp_path):
    torch.save(_source(embed_dim=32, num_heads=(1, 2, 4, 8)).body.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(DataError, match=r"wide.pt: does not initialise the backbone .* of another shape") as e:
        initialise(_fresh(), tmp_path / "wide.pt")
    assert "\n" not in str(e.value)
    swin_v1 = {k.replace("cpb_mlp", "relative_position_bias_mlp"): v for k, v in _source().body.state_dict().items()}
    torch.save(swin_v1, tmp_path / "v1.pt")
    with pytest.raises(DataError, match=r"tensors missing \(e.g. \['layers.0.blocks.0.attn.cpb_mlp"):
        initialise(_fresh(), tmp_path / "v1.pt")
    with pytest.raises(DataError, match="absent.pt: backbone checkpoint not found"):
        initialise(_fresh(), tmp_path / "absent.pt")


def test_a_run_must_say_where_its_backbone_starts(tmp_path):
    shared = BackboneConfig(name="swinv2_base_window12_192")
    with pytest.raises(ConfigError, match="solver.backbone.init: not set and no solver.backbone.weights"):
        shared.check_initialised("solver.backbone")
    BackboneConfig(init="scratch").check_initialised("solver.backbone")  # said explicitly: fine
    with pytest.raises(ConfigError, match="solver.runs.depth.backbone.weights: models/none.pth not found"):
        BackboneInit(weights="models/none.pth").apply(shared).check_initialised("solver.runs.depth.backbone")
    (tmp_path / "w.pth").write_bytes(b"")
    run = BackboneInit(weights=str(tmp_path / "w.pth"), drop_path_rate=0.3).apply(BackboneConfig(init="scratch"))
    assert (run.init, run.drop_path_rate) == ("checkpoint", 0.3)
    run.check_initialised("solver.runs.insseg.backbone")
    assert BackboneInit(init="scratch").apply(run).weights is None  # a run may opt out of a shared file
    with pytest.raises(ConfigError, match="contradicts init: scratch"):
        BackboneConfig(init="scratch", weights="w.pth")
