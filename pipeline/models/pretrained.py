"""Start a solver from a local pretrained checkpoint, whatever layout it was saved in (PAPER_NOTES §4.1, §4.6).

The paper's runs never start from random weights: depth starts from a SimMIM-pretrained SwinV2, the
instance and joint runs from a detection-pretrained backbone *and* transformer encoder (random decoder).
Researchers hold those weights in other projects' layouts, so the layout is read off the keys (after
unwrapping a `model` / `state_dict` / `module` entry and a DDP `module.` prefix):

| layout | recognised by | backbone keys | also loaded |
|---|---|---|---|
| `timm` | patch merging at the start of stages 1-3 | as saved | - |
| `swin` | official Swin Transformer V2: patch merging at the END of stages 0-2, `head.*`, persistent relative-position buffers | converted by timm | - |
| `simmim` | `encoder.*` + `mask_token` + pixel `decoder.*` | `encoder.*`, converted by timm | - |
| `detector` | `backbone.*` among other modules (mmdet, official AiT) | `backbone.*`, converted by timm | - |
| `ait-pipeline` | this project's solver: `backbone.body.*` + `solver.*` | `backbone.body.*` | the solver's encoder |

The conversion of the official layout is timm's own `checkpoint_filter_fn` (it moves the patch merging
to timm's place, renames the classifier and resamples a patch embedding of another size). The window-
dependent tables (`relative_coords_table`, `relative_position_index`, `attn_mask`) are never loaded:
timm rebuilds them for the run's own windows, normalised by `pretrained_window_sizes` (SwinV2's log-spaced
continuous position bias is a small MLP over those coordinates, so a 12-window checkpoint serves a
30-window run without resizing any weight). Every backbone tensor of the model must come from the file
(one `DataError` line otherwise); every key of the file that is not used is reported by group.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.core.errors import DataError

KEY = "solver.backbone.weights"  # the params key named by every error (a run may override it)
WINDOW_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask")
# The solver modules that make up the transformer encoder (models/solver.py): loaded with the backbone
# from a checkpoint that carries them (the paper's detection-pretrained "backbone + encoder").
ENCODER_MODULES = ("input_proj", "stem_ln", "encoder", "encout_ln", "proj", "proj_ln", "proj_mlp_ln", "proj_mlp")


@dataclass(frozen=True)
class InitReport:
    """What one initialisation loaded, rebuilt and left out."""

    path: str
    layout: str
    backbone_tensors: int
    encoder_tensors: int
    rebuilt: int  # window-dependent buffers in the file, recomputed by timm for the run's windows
    unused: dict[str, int]  # key group -> number of keys of the file that nothing loaded

    def lines(self) -> list[str]:
        head = (f"backbone init: {self.path} ({self.layout} layout): {self.backbone_tensors} backbone tensors"
                + (f", {self.encoder_tensors} encoder tensors" if self.encoder_tensors else "")
                + (f"; {self.rebuilt} window buffers rebuilt for the run's windows" if self.rebuilt else ""))
        unused = [f"  not used: {group} ({n} keys)" for group, n in sorted(self.unused.items())]
        return [head, *unused]


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local checkpoint (safetensors or torch), unwrapped from training wrappers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: backbone checkpoint not found ({KEY})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip readers each raise their own types
        hint = ("; it holds Python objects beyond tensors: re-save only its state dict"
                if "weights_only" in str(e) else "")
        raise DataError(f"{path}: unreadable backbone checkpoint ({type(e).__name__}){hint}") from None
    while isinstance(state, Mapping):
        inner = next((state[k] for k in ("model", "state_dict", "module") if isinstance(state.get(k), Mapping)),
                     None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise DataError(f"{path}: not a state dict ({KEY})")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise DataError(f"{path}: holds no tensors ({KEY})")
    if all(k.startswith("module.") for k in tensors):  # saved from a DDP-wrapped model
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def split_layout(state: dict[str, Tensor]) -> tuple[str, dict[str, Tensor], dict[str, Tensor], list[str]]:
    """(layout, backbone subtree, this project's encoder subtree, keys of no use) of a checkpoint."""
    encoder: dict[str, Tensor] = {}
    if any(k.startswith("backbone.body.") for k in state):
        layout, prefix = "ait-pipeline", "backbone.body."
        encoder = {k: v for k, v in _subtree(state, "solver.").items() if k.split(".")[0] in ENCODER_MODULES}
    elif any(k.startswith("backbone.") for k in state):
        layout, prefix = "detector", "backbone."
    elif any(k.startswith("encoder.") for k in state):
        layout, prefix = "simmim", "encoder."
    else:
        layout, prefix = ("swin" if "layers.0.downsample.reduction.weight" in state else "timm"), ""
    backbone = _subtree(state, prefix)
    if layout == "simmim":
        backbone.pop("mask_token", None)  # SimMIM's masked-patch embedding: not part of the backbone
    used = {prefix + k for k in backbone} | {"solver." + k for k in encoder}
    return layout, backbone, encoder, [k for k in state if k not in used]


def _subtree(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _group(key: str) -> str:
    """A report group: the first two key components, numbers folded ("layers.N.blocks")."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", ".".join(key.split(".")[:3]))


def convert_backbone(body: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], int, list[str]]:
    """timm's conversion of a Swin state dict to `body`'s keys -> (tensors for body, rebuilt buffers, unused)."""
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn  # heavy import: only when loading

    rebuilt = sum(any(b in k for b in WINDOW_BUFFERS) for k in state)
    converted = checkpoint_filter_fn(dict(state), body)
    expected = body.state_dict()
    unused = [k for k in converted if k not in expected]  # the classifier, or keys of another model
    return {k: v for k, v in converted.items() if k in expected}, rebuilt, unused


def _check_complete(what: str, path: Path, got: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                    layout: str) -> None:
    missing = sorted(set(expected) - set(got))
    wrong = [f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in got and got[k].shape != v.shape]
    if missing or wrong:
        raise DataError(f"{path}: does not initialise the {what} (read as the {layout} layout): "
                        f"{len(missing)} tensors missing (e.g. {missing[:3]}), {len(wrong)} of another shape "
                        f"(e.g. {wrong[:2]}) ({KEY})")


def initialise(backbone: nn.Module, path: str | Path, solver: nn.Module | None = None) -> InitReport:
    """Load `backbone.body` (a timm SwinV2) and, when the file carries it, `solver`'s transformer encoder
    from the checkpoint at `path`; every backbone tensor must arrive. Returns what was loaded."""
    path = Path(path)
    layout, state, encoder, unused = split_layout(read_state(path))
    tensors, rebuilt, extra = convert_backbone(backbone.body, state)
    _check_complete("backbone", path, tensors, backbone.body.state_dict(), layout)
    backbone.body.load_state_dict(tensors)
    loaded_encoder = 0
    if encoder and solver is not None:
        expected = {k: v for k, v in solver.state_dict().items() if k.split(".")[0] in ENCODER_MODULES}
        _check_complete("transformer encoder", path, encoder, expected, layout)
        solver.load_state_dict(encoder, strict=False)
        loaded_encoder = len(encoder)
    elif encoder:
        unused += ["solver." + k for k in encoder]
    skipped = [k for k in unused if not any(b in k for b in WINDOW_BUFFERS)]
    skipped += [f"(backbone) {k}" for k in extra]
    return InitReport(str(path), layout, len(tensors), loaded_encoder, rebuilt,
                      dict(Counter(_group(k) for k in skipped)))
