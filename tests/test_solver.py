"""Task-solver transformer: KV-cache decoding vs teacher forcing, soft tokens, AiT-P, sampling, size."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.core.vocab import Vocab
from pipeline.models.sampling import Nucleus, choose, decoding_plan, restrict_logits
from pipeline.models.solver import Solver, SolverConfig
from pipeline.models.solver_layers import sine_positions_2d
from pipeline.tasks.registry import TASK_SLOTS

VOCAB = Vocab.build(20, 5, 8, 8)  # V = 21 + 5 + 2 + 8 + 8 = 44
INSSEG = [("coord",)] * 4 + [("class", "noise")] + [("mask",)] * 2  # a 7-token "object"
TINY = SolverConfig(
    dim=32, num_heads=4, ffn_dim=64, num_encoder_layers=2, num_decoder_layers=2, max_seq_len=64
)


def _solver(seed=0, **overrides) -> Solver:
    torch.manual_seed(seed)
    return Solver(replace(TINY, **overrides), VOCAB.size, backbone_channels=16).eval()


def _memory(model: Solver, batch=3, h=2, w=3, seed=0) -> torch.Tensor:
    features = torch.randn(batch, 16, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.encode(features)


def test_sine_positions_hand_values():
    pos = sine_positions_2d(2, 3, 8)  # half = 4 channels per axis, frequencies (1, 1, 100, 100)
    assert pos.shape == (6, 8)
    torch.testing.assert_close(pos[0], torch.tensor([0.0, 1.0, 0.0, 1.0] * 2))
    y, x = 1.0, 2.0  # row-major index 1 * 3 + 2
    expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
    expected += [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    torch.testing.assert_close(pos[5], torch.tensor(expected))


def test_encode_accepts_any_grid():
    model = _solver()
    assert _memory(model, batch=2, h=2, w=3).shape == (2, 6, 32)
    assert _memory(model, batch=1, h=3, w=5).shape == (1, 15, 32)


def test_kv_cache_logits_equal_teacher_forcing_at_every_step():
    model = _solver()
    memory = _memory(model)
    tokens, logits = model.generate(memory, 1, 14, INSSEG, VOCAB)
    assert tokens.shape == (3, 14) and logits.shape == (3, 14, VOCAB.size)
    with torch.no_grad():
        forced = model(memory, 1, tokens[:, :-1])
    torch.testing.assert_close(logits, forced, atol=1e-5, rtol=0)
    legal, _ = decoding_plan(VOCAB, INSSEG, 14)
    assert legal.gather(1, tokens.t()).all()  # every chosen token is legal for its position


def test_soft_inputs_match_teacher_forcing_with_soft_embeddings_and_differ_from_hard():
    model = _solver()
    memory = _memory(model)
    hard_tokens, hard = model.generate(memory, 1, 14, INSSEG, VOCAB)
    tokens, soft = model.generate(memory, 1, 14, INSSEG, VOCAB, soft_kinds={"mask"})
    legal, is_soft = decoding_plan(VOCAB, INSSEG, 14, soft_kinds={"mask"})
    embeds = []
    for i in range(13):  # rebuild the inputs: softmax over the mask codes @ embeddings, else the token row
        p = soft[:, i].masked_fill(~legal[i], float("-inf")).softmax(-1)
        embeds.append(p @ model.token_embed if is_soft[i] else model.token_embed[tokens[:, i]])
    with torch.no_grad():
        forced = model(memory, 1, input_embeds=torch.stack(embeds, dim=1))
    torch.testing.assert_close(soft, forced, atol=1e-5, rtol=0)
    first_soft = 5  # positions up to and including the first mask position see only hard inputs
    torch.testing.assert_close(soft[:, : first_soft + 1], hard[:, : first_soft + 1], atol=1e-6, rtol=0)
    assert (soft[:, first_soft + 1 :] - hard[:, first_soft + 1 :]).abs().max() > 1e-3


def test_generate_with_a_legal_mask_tensor_equals_token_kinds():
    model = _solver()
    memory = _memory(model)
    legal, soft = decoding_plan(VOCAB, INSSEG, 7, soft_kinds={"mask"})
    by_mask = model.generate(memory, 1, 14, legal, soft_positions=soft)
    by_kinds = model.generate(memory, 1, 14, INSSEG, VOCAB, soft_kinds={"mask"})
    assert torch.equal(by_mask[0], by_kinds[0]) and torch.equal(by_mask[1], by_kinds[1])


def test_batch_of_n_equals_n_batches_of_one():
    model = _solver()
    memory = _memory(model, batch=3)
    tokens, logits = model.generate(memory, 2, 12, [("depth",)], VOCAB, soft_kinds={"depth"})
    for b in range(3):
        t, lg = model.generate(memory[b : b + 1], 2, 12, [("depth",)], VOCAB, soft_kinds={"depth"})
        assert torch.equal(t, tokens[b : b + 1])
        torch.testing.assert_close(lg, logits[b : b + 1], atol=1e-5, rtol=0)


def test_seeded_nucleus_sampling_is_reproducible_and_legal():
    model = _solver()
    memory = _memory(model)
    runs = [
        model.generate(memory, 1, 14, INSSEG, VOCAB, draw=Nucleus(0.9, torch.Generator().manual_seed(s)))[0]
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    legal, _ = decoding_plan(VOCAB, INSSEG, 14)
    assert legal.gather(1, runs[2].t()).all()


def test_parallel_one_pass_equals_prefix_forwards_and_the_step_loop():
    model = _solver(parallel=True)
    memory = _memory(model)
    with torch.no_grad():
        one_pass = model.generate_parallel(memory, 2, 12)
        for length in range(1, 13):
            junk = torch.randint(0, VOCAB.size, (3, length - 1))  # inputs are ignored: all mask_embed
            torch.testing.assert_close(model(memory, 2, junk), one_pass[:, :length], atol=1e-5, rtol=0)
    _, looped = model.generate(memory, 2, 12, [("depth",)], VOCAB)
    torch.testing.assert_close(looped, one_pass, atol=1e-5, rtol=0)


def test_task_id_per_sample_equals_scalar_task_ids():
    model = _solver()
    memory = _memory(model, batch=2)
    tokens = torch.randint(0, VOCAB.size, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mixed = model(memory, torch.tensor([0, 2]), tokens)
        torch.testing.assert_close(mixed[:1], model(memory[:1], 0, tokens[:1]))
        torch.testing.assert_close(mixed[1:], model(memory[1:], 2, tokens[1:]))


def test_output_layer_is_tied_to_the_token_embeddings():
    model = _solver()
    memory = _memory(model, batch=1)
    with torch.no_grad():
        before = model(memory, 2, torch.zeros(1, 0, dtype=torch.long))  # position 0: no token input
        # A random direction: adding a constant would change the logit by sum(LayerNorm(x)) = 0.
        g = torch.Generator().manual_seed(1)
        model.token_embed[30] += torch.randn(model.token_embed.shape[1], generator=g)
        after = model(memory, 2, torch.zeros(1, 0, dtype=torch.long))
    changed = (after - before).abs()[0, 0] > 1e-6
    assert changed.nonzero().squeeze(1).tolist() == [30]


def test_length_limits_and_plan_errors():
    model = _solver()
    memory = _memory(model, batch=1)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(memory, 0, torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="tile"):
        model.generate(memory, 1, 10, INSSEG, VOCAB)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(memory, 1, 7, INSSEG)


def test_restrict_and_choose():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    legal = torch.tensor([True, False, True, True])
    restricted = restrict_logits(logits, legal)
    assert restricted[0, 1] == float("-inf") and torch.equal(restricted[0, legal], logits[0, legal])
    assert choose(restricted).tolist() == [3]  # greedy over the legal tokens only
    # nucleus: probs (0.5, 0.3, 0.15, 0.05), top_p 0.6 keeps tokens {0, 1} (mass before 1 is 0.5 <= 0.6)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = probs.log().expand(4000, 4)
    picks = choose(rows, top_p=0.6, generator=torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    top1 = choose(rows[:5], top_p=1e-6, generator=torch.Generator())
    assert torch.equal(top1, torch.zeros(5, dtype=torch.long))


def test_decoding_plan_tiles_the_pattern():
    legal, soft = decoding_plan(VOCAB, INSSEG, 14, soft_kinds={"mask"})
    assert legal.shape == (14, VOCAB.size)
    assert soft.tolist() == ([False] * 5 + [True] * 2) * 2
    assert torch.equal(legal[4], VOCAB.legal_mask(("class", "noise"))) and torch.equal(legal[11], legal[4])


def test_paper_size_parameter_count():
    """PAPER_NOTES §4.2: ~14.7 M with the official 4 task slots and SwinV2-B's 1024 channels, counted on meta."""
    d, f, v, c, t, n = 256, 1024, Vocab.paper(with_insseg=True).size, 1024, 4, 2100
    attn, mlp, ln = 4 * (d * d + d), d * f + f + f * d + d, 2 * d
    encoder = (c * d + d) + ln + 6 * (attn + mlp + 2 * ln) + ln + (d * d + d) + ln + ln + mlp
    decoder = 6 * (2 * attn + mlp + 3 * ln) + ln + v * d + v + t * d + t * n * d
    with torch.device("meta"):
        official = Solver(SolverConfig(num_tasks=4), v, c).num_params()
        ours = Solver(SolverConfig(num_tasks=TASK_SLOTS), v, c).num_params()
        three = Solver(SolverConfig(num_tasks=3), v, c).num_params()
    assert official == encoder + decoder == 14_700_963
    assert abs(official - 14.7e6) < 0.05e6  # the reference rounds to 0.1 M
    assert ours == official  # the registry's four task ids fill the official four slots
    assert official - three == n * d + d  # each slot is one positional table and one task vector


@pytest.fixture
def one_thread():
    # ~100 tiny steps: a second intra-op thread only adds OpenMP contention on a shared 2-core box (8x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_solver_overfits_a_fixed_sequence_through_encoder_and_decoder(one_thread):
    torch.manual_seed(0)
    cfg = replace(TINY, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0, drop_path=0.0)
    model = Solver(cfg, VOCAB.size, 16)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 2, 2, generator=g)
    targets = VOCAB.to_global(torch.randint(0, 8, (2, 16), generator=g), "depth")  # one sequence per image
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        logits = model(model.encode(features), 2, targets[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        assert model.input_proj.weight.grad.abs().sum() > 0  # gradients reach the encoder stem
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(model.encode(features), 2, targets[:, :-1]).argmax(-1) == targets).float().mean()
    assert accuracy >= 0.9, accuracy
