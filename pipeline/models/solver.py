"""The AiT task-solver transformer: encoder over backbone features + token decoder with a tied vocabulary.

Follows PAPER_NOTES §4.2 (official `ARTransformer`, `ait/code/model/transformer.py`), §3.1 (soft token as the
next decoder input) and §4.4 (parallel decoder "AiT-P"). Paper: §3.2-3.3.
- Encoder: stage-4 features -> Dropout, Linear, LayerNorm, + fixed 2-D sine positions -> N pre-LN blocks
  -> LayerNorm, Linear, LayerNorm, + the sine positions again -> residual MLP = memory.
- Decoder input: [task embedding, embeddings of the shifted targets] + a learned positional table per
  task; N pre-LN blocks (causal self-attn, cross-attn, MLP); final LayerNorm; logits tied to the token
  embeddings plus a bias. Training CE over the full vocabulary is the caller's business (PAPER_NOTES §4.3).
- Parallel (AiT-P): one learned `mask_embed` replaces EVERY token input embedding, in training and at
  inference; the causal mask is kept, so one forward pass equals the step-by-step loop.
Deliberate deviations: inference caches self-attention keys/values and computes the memory keys/values
once; the parallel decoder is one pass at inference (the official code loops, PAPER_NOTES §4.4); sampling uses an
explicit generator. Parameter names map to the official ones: task_embed=det_embed, token_embed=voc_embed,
pos_embed=dec_embed, out_bias=outp_bias (num_tasks=4 reproduces the official 4-slot tables).

Shapes: B batch, C backbone channels, h x w feature grid, S = h*w, L sequence length, D dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.config import SolverModelConfig
from pipeline.core.vocab import Vocab
from pipeline.models.sampling import GREEDY, Nucleus, choose, decoding_plan, restrict_logits
from pipeline.models.solver_layers import (
    DecoderBlock,
    DropPath,
    EncoderBlock,
    KVCache,
    Mlp,
    sine_positions_2d,
)


@dataclass(frozen=True)
class SolverConfig(SolverModelConfig):
    """The full architecture: the user's choices, the run's decoder and numbers derived from the data."""

    parallel: bool = False  # AiT-P (paper Table 9): one learned input embedding, one-pass inference
    max_seq_len: int = 2100  # 100 objects x 21 tokens (PAPER_NOTES §4.5); depth uses 225
    # task embedding / position table slots: the registry's task ids + 1 (`tasks.registry.TASK_SLOTS`: det 0,
    # insseg 1, depth 2 as PAPER_NOTES §9, semseg 3), as many as the official tables have
    num_tasks: int = 4


class Solver(nn.Module):
    """Encoder-decoder of PAPER_NOTES §4.2; `encode` once per image, then `forward` / `generate`."""

    def __init__(self, cfg: SolverConfig, vocab_size: int, backbone_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        dim, blocks = cfg.dim, (cfg.num_heads, cfg.ffn_dim, cfg.dropout, cfg.drop_path)
        # encoder (PAPER_NOTES §4.2 encoder steps 2-7; official attribute names)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.input_proj = nn.Linear(backbone_channels, dim)
        self.stem_ln = nn.LayerNorm(dim)
        self.encoder = nn.ModuleList(EncoderBlock(dim, *blocks) for _ in range(cfg.num_encoder_layers))
        self.encout_ln = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_ln = nn.LayerNorm(dim)
        self.proj_mlp_ln = nn.LayerNorm(dim)
        self.proj_mlp = Mlp(dim, cfg.ffn_dim, cfg.dropout)
        self.proj_mlp_drop_path = DropPath(cfg.drop_path)
        # decoder
        self.task_embed = nn.Parameter(torch.empty(cfg.num_tasks, dim))
        self.token_embed = nn.Parameter(torch.empty(vocab_size, dim))
        self.pos_embed = nn.Parameter(torch.empty(cfg.num_tasks, cfg.max_seq_len, dim))
        self.mask_embed = nn.Parameter(torch.empty(dim)) if cfg.parallel else None
        self.decoder = nn.ModuleList(DecoderBlock(dim, *blocks) for _ in range(cfg.num_decoder_layers))
        self.norm = nn.LayerNorm(dim)
        self.out_bias = nn.Parameter(torch.empty(vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: trunc-normal(0.02) embeddings, output bias, Linear weights; zero Linear biases."""
        for p in (self.task_embed, self.token_embed, self.pos_embed, self.mask_embed, self.out_bias):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Embedding tables exempt from weight decay (PAPER_NOTES §4.6); 1-D params are the optimizer's rule."""
        names = ("task_embed", "token_embed", "pos_embed", "mask_embed")
        return {n for n in names if getattr(self, n) is not None}

    def num_params(self) -> int:
        """Number of parameters of the transformer (the backbone is a separate module)."""
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------------------------------------
    # encoder

    def encode(self, features: Tensor) -> Tensor:
        """(B, C, h, w) stage-4 features -> (B, h*w, D) memory."""
        _, _, h, w = features.shape
        x = self.stem_ln(self.input_proj(self.input_dropout(features.flatten(2).transpose(1, 2))))
        pos = sine_positions_2d(h, w, self.cfg.dim, device=x.device).to(x.dtype)  # (S, D)
        x = x + pos  # added once at the input (qk_pos=False)
        for block in self.encoder:
            x = block(x)
        x = self.proj_ln(self.proj(self.encout_ln(x))) + pos  # the sine positions again (PAPER_NOTES §4.2 step 6)
        return x + self.proj_mlp_drop_path(self.proj_mlp(self.proj_mlp_ln(x)))

    # ---------------------------------------------------------------------------------------------
    # decoder

    def forward(
        self,
        memory: Tensor,
        task_id: int | Tensor,
        tokens_in: Tensor | None = None,
        input_embeds: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: memory (B, S, D), tokens_in (B, L-1) = targets shifted right -> logits (B, L, V).

        Position 0 is the task embedding. `input_embeds` (B, L-1, D) replaces the token embeddings (soft
        inputs); in parallel mode every input is `mask_embed` and only the length of tokens_in is used.
        """
        if (tokens_in is None) == (input_embeds is None):
            raise ValueError("pass exactly one of tokens_in / input_embeds")
        if self.mask_embed is not None:  # AiT-P: inputs carry position only (PAPER_NOTES §4.4)
            batch, steps = (tokens_in if tokens_in is not None else input_embeds).shape[:2]
            embeds = self.mask_embed.expand(batch, steps, -1)
        else:
            embeds = self.token_embed[tokens_in] if input_embeds is None else input_embeds
        return self._teacher_forced(memory, task_id, embeds)

    def generate_parallel(self, memory: Tensor, task_id: int | Tensor, length: int) -> Tensor:
        """AiT-P inference in ONE forward pass: memory (B, S, D) -> logits (B, length, V)."""
        if self.mask_embed is None:
            raise ValueError("generate_parallel needs a parallel solver (SolverConfig.parallel=True)")
        embeds = self.mask_embed.expand(memory.shape[0], length - 1, -1)
        return self._teacher_forced(memory, task_id, embeds)

    @torch.no_grad()
    def generate(
        self,
        memory: Tensor,
        task_id: int | Tensor,
        length: int,
        kinds: Sequence[tuple[str, ...] | str] | Tensor,
        vocab: Vocab | None = None,
        soft_kinds: Set[str] = frozenset(),
        draw: Nucleus = GREEDY,
        soft_positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Auto-regressive decoding with a KV cache -> tokens (B, length) int64, raw logits (B, length, V).

        `kinds` is a per-position pattern of token kinds (tiled to `length`, needs `vocab`; positions whose
        kinds are all in `soft_kinds` feed the soft token, PAPER_NOTES §3.1) or a (P, V) bool legal mask tiled to
        `length` with optional (P,) bool `soft_positions`. Each step restricts the logits to the legal
        tokens, then chooses as `draw` says: greedily (the default) or by nucleus sampling.
        """
        legal, soft = self._plan(kinds, vocab, soft_kinds, soft_positions, length, memory.device)
        batch, device = memory.shape[0], memory.device
        task_ids = self._task_ids(task_id, batch, device)
        memory_kv = [block.memory_kv(memory) for block in self.decoder]  # once per sequence
        head_dim = self.cfg.dim // self.cfg.num_heads
        caches = [KVCache(batch, self.cfg.num_heads, length, head_dim, memory) for _ in self.decoder]
        tokens = torch.empty(batch, length, dtype=torch.long, device=device)
        logits = memory.new_empty(batch, length, self.vocab_size)
        x = self.task_embed[task_ids] + self.pos_embed[task_ids, 0]  # (B, D)
        for i in range(length):
            h = x[:, None]
            for block, kv, cache in zip(self.decoder, memory_kv, caches, strict=True):
                h = block(h, kv, cache)
            logits[:, i] = self._logits(h[:, 0])
            restricted = restrict_logits(logits[:, i], legal[i])
            tokens[:, i] = choose(restricted, draw.top_p, draw.generator)
            if i + 1 < length:
                x = self._next_input(tokens[:, i], restricted, soft[i]) + self.pos_embed[task_ids, i + 1]
        return tokens, logits

    # ---------------------------------------------------------------------------------------------
    # helpers

    def _teacher_forced(self, memory: Tensor, task_id: int | Tensor, embeds: Tensor) -> Tensor:
        """memory (B, S, D), token-input embeddings (B, L-1, D) -> logits (B, L, V)."""
        batch, length = embeds.shape[0], embeds.shape[1] + 1
        if length > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len {self.cfg.max_seq_len}")
        if memory.shape[0] != batch:
            raise ValueError(f"memory batch {memory.shape[0]} != token batch {batch}")
        task_ids = self._task_ids(task_id, batch, memory.device)
        x = torch.cat((self.task_embed[task_ids][:, None], embeds), dim=1) + self.pos_embed[task_ids, :length]
        for block in self.decoder:
            x = block(x, block.memory_kv(memory))
        return self._logits(x)

    def _logits(self, x: Tensor) -> Tensor:
        """(..., D) decoder states -> (..., V): final LayerNorm, then the TIED token embeddings + bias."""
        return self.norm(x) @ self.token_embed.t() + self.out_bias

    def _next_input(self, token: Tensor, restricted: Tensor, soft: bool) -> Tensor:
        """Embedding (B, D) fed next: mask_embed (AiT-P), the soft token, or the chosen token's row."""
        if self.mask_embed is not None:
            return self.mask_embed.expand(token.shape[0], -1)
        if soft:
            # softmax over the legal sub-range only (-inf elsewhere gives exact zeros) @ embeddings (PAPER_NOTES §3.1)
            return restricted.softmax(dim=-1) @ self.token_embed
        return self.token_embed[token]

    def _task_ids(self, task_id: int | Tensor, batch: int, device: torch.device) -> Tensor:
        """int or (B,) task ids -> (B,) int64 on device."""
        ids = torch.as_tensor(task_id, dtype=torch.long, device=device)
        return ids.expand(batch) if ids.ndim == 0 else ids

    def _plan(
        self,
        kinds: Sequence[tuple[str, ...] | str] | Tensor,
        vocab: Vocab | None,
        soft_kinds: Set[str],
        soft_positions: Tensor | None,
        length: int,
        device: torch.device,
    ) -> tuple[Tensor, list[bool]]:
        """Resolve the decoding plan -> legal (length, V) bool on device, soft flags as a host list."""
        if length > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len {self.cfg.max_seq_len}")
        if isinstance(kinds, Tensor):
            if soft_kinds:
                raise ValueError("soft_kinds needs token kinds; with a legal mask pass soft_positions")
            period = kinds.shape[0]
            soft = torch.zeros(period, dtype=torch.bool) if soft_positions is None else soft_positions
            if length % period or soft.shape != (period,):
                shapes = f"legal mask {tuple(kinds.shape)} / soft {tuple(soft.shape)}"
                raise ValueError(f"{shapes} does not tile length {length}")
            legal, soft = kinds.to(device).repeat(length // period, 1), soft.repeat(length // period)
        else:
            if vocab is None:
                raise ValueError("token kinds need the vocabulary to resolve their ranges")
            legal, soft = decoding_plan(vocab, kinds, length, soft_kinds, device=device)
        if legal.shape[-1] != self.vocab_size:
            raise ValueError(f"legal mask has {legal.shape[-1]} entries, solver vocabulary {self.vocab_size}")
        return legal, soft.tolist()
