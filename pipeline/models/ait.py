"""The whole task-solver: a timm SwinV2 backbone feeding the AiT encoder-decoder (paper §3.2).

`AiT` only composes `Backbone` and `Solver`; it adds the optimiser parameter groups of the paper's
recipe (PAPER_NOTES §4.6): layer-wise lr decay over the Swin blocks (everything outside the backbone
has scale 1) and no weight decay for 1-D parameters, biases, relative-position tables, the
continuous position-bias MLP, logit scales and the token / task / position embeddings.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from torch import Tensor, nn

from pipeline.core import checkpoint
from pipeline.core.vocab import Vocab
from pipeline.models.backbone import Backbone, BackboneConfig, build_backbone, layer_id, num_lr_layers
from pipeline.models.solver import Solver, SolverConfig

# Backbone parameter names exempt from weight decay (official `skip_keywords`; timm calls the
# continuous relative-position MLP `cpb_mlp`).
_NO_DECAY_KEYWORDS = ("relative_position_bias_table", "cpb_mlp", "rpe_mlp", "logit_scale", "absolute_pos_embed")


class AiT(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> memory -> per-task token logits."""

    def __init__(self, backbone: Backbone, solver: Solver) -> None:
        super().__init__()
        self.backbone = backbone
        self.solver = solver

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, h·w, D) encoder memory."""
        return self.solver.encode(self.backbone(images))

    def forward(self, images: Tensor, task_id: int | Tensor, tokens_in: Tensor) -> Tensor:
        """Teacher forcing: images + (B, L-1) shifted targets -> (B, L, V) logits."""
        return self.solver(self.encode(images), task_id, tokens_in)


def solver_config(model_cfg, max_seq_len: int, parallel: bool = False, num_tasks: int = 4) -> SolverConfig:
    """The solver architecture from the params' model section, the run's decoder and the derived length and
    task slots."""
    return SolverConfig(**asdict(model_cfg), parallel=parallel, max_seq_len=max_seq_len, num_tasks=num_tasks)


def build_ait(backbone_cfg: BackboneConfig, cfg: SolverConfig, vocab: Vocab) -> AiT:
    backbone = build_backbone(backbone_cfg)
    return AiT(backbone, Solver(cfg, vocab.size, backbone.out_channels))


def param_groups(model: AiT, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups with a layer-decayed `lr` and a `weight_decay` per parameter (PAPER_NOTES §4.6).

    The group lr already carries the layer scale, so a LambdaLR schedule multiplies it as it should.
    """
    depths = model.backbone.depths
    last = num_lr_layers(depths) - 1
    solver_no_decay = {f"solver.{n}" for n in model.solver.no_weight_decay()}
    groups: dict[tuple[float, float], list[Tensor]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = layer_decay ** (last - layer_id(name, depths, prefix="backbone.body."))
        no_decay = (param.ndim <= 1 or name.endswith(".bias") or name in solver_no_decay
                    or any(k in name for k in _NO_DECAY_KEYWORDS))
        groups.setdefault((scale, 0.0 if no_decay else weight_decay), []).append(param)
    return [{"params": ps, "lr": lr * scale, "lr_scale": scale, "weight_decay": wd}
            for (scale, wd), ps in sorted(groups.items(), key=lambda kv: kv[0])]


SOLVER_PRODUCER = "`dvc repro train_solver`"


def _build_from_config(config: dict):
    backbone = dict(config["backbone"])
    for key in ("depths", "num_heads", "pretrained_window_sizes"):
        if backbone.get(key) is not None:
            backbone[key] = tuple(backbone[key])
    # The weights come from the checkpoint: never download or read backbone weights here.
    backbone.pop("pretrained", None)  # the flag of checkpoints written before `init`
    backbone |= {"init": "scratch", "weights": None}
    vocab = Vocab(**config["vocab"])
    return build_ait(BackboneConfig(**backbone), SolverConfig(**config["architecture"]), vocab), vocab


def load_solver(directory: Path):
    """Rebuild a trained task-solver from its checkpoint dir; returns `(model, vocab, config)`.

    config.json holds the solver architecture, the backbone config, the vocabulary layout, the task
    settings and the tokenizer hashes the model was trained against.
    """
    config = checkpoint.read_config(directory, SOLVER_PRODUCER)
    model, vocab = checkpoint.build_from_config(directory, _build_from_config, config, SOLVER_PRODUCER)
    checkpoint.load_weights(directory, model, producer=SOLVER_PRODUCER)
    return model.eval(), vocab, config
