"""Semseg tokenizer pieces: the one-hot VQ-VAE mode, its CE loss and the label interpolation baseline."""

from __future__ import annotations

import torch

from pipeline.core.config import VQVAEConfig
from pipeline.models.vqvae import VQVAE, labels_from_logits, onehot_labels
from pipeline.tasks.semseg.interp import label_interp_reconstruct
from pipeline.tasks.semseg.losses import label_ce_loss

ONEHOT = VQVAEConfig(hidden_dim=8, downsample_ratio=4, num_embeddings=16, embedding_dim=8, channels=3,
                     num_res_blocks=1, input_scale="onehot")

# Hand-made 16x16 map: one class per 4x4 block (aligned with the r = 4 token grid), plus 0 pixels.
BLOCKS = torch.tensor([[1, 2, 3, 1], [3, 1, 2, 2], [2, 3, 1, 3], [1, 1, 3, 2]])


def _hand_map() -> torch.Tensor:
    labels = BLOCKS.repeat_interleave(4, 0).repeat_interleave(4, 1).clone()  # (16, 16)
    labels[0, :3] = 0
    labels[5:7, 9] = 0
    labels[15, 15] = 0
    return labels


def _model(seed: int = 0, **kwargs) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(ONEHOT, **kwargs)


def test_normalize_is_onehot_of_id_minus_one_and_zero_for_unlabelled():
    x = torch.tensor([[0, 1], [2, 3]]).float()[None, None]  # (1, 1, 2, 2)

    planes = _model().normalize(x)

    assert planes.shape == (1, 3, 2, 2)
    assert planes.dtype == torch.float32
    assert torch.equal(planes[0, :, 0, 0], torch.zeros(3))  # unlabelled -> zero vector
    assert torch.equal(planes[0, :, 0, 1], torch.tensor([1.0, 0.0, 0.0]))  # id 1 -> plane 0
    assert torch.equal(planes[0, :, 1, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(planes[0, :, 1, 1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(onehot_labels(x.long(), 3), planes)  # integer maps work too


def test_onehot_shapes_decode_returns_logits():
    model = _model().eval()
    x = torch.randint(0, 4, (2, 1, 16, 16), generator=torch.Generator().manual_seed(1)).float()

    logits, indices, _ = model(x)

    assert logits.shape == (2, 3, 16, 16)
    assert indices.shape == (2, 4, 4)
    assert torch.equal(model.encode(x), indices)
    assert torch.equal(model.decode(indices), logits)  # denormalize leaves logits unchanged
    labels = labels_from_logits(logits)
    assert labels.shape == (2, 16, 16) and labels.dtype == torch.int64
    assert labels.min() >= 1 and labels.max() <= 3


def test_label_ce_loss_ignores_unlabelled_pixels():
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, :, 0, 0] = torch.tensor([5.0, 0.0, 0.0])  # pixel 0: confident class 1
    logits[0, :, 0, 2] = torch.tensor([0.0, 0.0, 9.0])  # pixel 2: anything, it is unlabelled
    labels = torch.tensor([[[1, 2, 0]]])  # (1, 1, 3)

    loss = label_ce_loss(logits, labels)

    # By hand, pixel 2 ignored: pixel 0 CE = log(e^5 + 2) − 5; pixel 1 (uniform) CE = log 3.
    expected = (torch.log(torch.tensor(5.0).exp() + 2) - 5 + torch.log(torch.tensor(3.0))) / 2
    assert torch.allclose(loss, expected)
    assert torch.allclose(label_ce_loss(logits, labels[:, None].float()), expected)  # (B, 1, H, W) float
    none = label_ce_loss(logits.requires_grad_(), torch.zeros(1, 1, 3, dtype=torch.long))
    assert none.item() == 0.0  # no labelled pixel: 0, not NaN, and still differentiable
    none.backward()


def _random_block_maps(g: torch.Generator, batch: int) -> torch.Tensor:
    """`(batch, 1, 16, 16)` float maps built like the hand-made one: 4x4 blocks of 1..3, ~10 % zeros."""
    blocks = torch.randint(1, 4, (batch, 4, 4), generator=g)
    maps = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
    return maps.masked_fill(torch.rand(batch, 16, 16, generator=g) < 0.1, 0)[:, None].float()


def _train_tiny_onehot(steps: int = 400) -> VQVAE:
    """The tiny onehot VQ-VAE after `steps` seeded Adam steps of CE + commitment, in eval mode."""
    # Trained on random maps of the same recipe, never on the hand-made one: a single training map
    # can be memorised through the zero-padded borders even by a collapsed codebook (1 code used).
    # Dead-code restarts (0.5, as test_vqvae) avoid that collapse in 400 steps.
    model = _model(dead_code_threshold=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = _random_block_maps(g, 8)
        logits, _, commit = model(x)
        loss = label_ce_loss(logits, x) + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tiny_onehot_vqvae_round_trips_a_hand_made_map():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order whatever the machine; ~2.5 s on one core
    try:
        model = _train_tiny_onehot()
    finally:
        torch.set_num_threads(threads)
    labels = _hand_map()
    x = labels[None, None].float()
    indices = model.encode(x)
    recon = labels_from_logits(model.decode(indices))[0]

    labelled = labels != 0
    assert torch.equal(recon[labelled], labels[labelled])
    assert indices.unique().numel() >= 3  # the tokens carry the classes, not the decoder alone


def test_label_interp_reconstruct_by_hand():
    # 4x6 map, 2x3 grid: 2x2 cells; each cell takes the pixel at row 2i+1, column 2j+1
    # (floor((i + ½)·4/2) = 1, 3 and floor((j + ½)·6/3) = 1, 3, 5).
    labels = torch.tensor([[[1, 1, 2, 2, 3, 3],
                            [1, 4, 2, 2, 3, 0],
                            [5, 5, 0, 6, 7, 7],
                            [5, 5, 6, 6, 7, 2]]])

    recon = label_interp_reconstruct(labels, (2, 3))

    # Samples: cell (0,0) -> 4, (0,1) -> 2, (0,2) -> 0, (1,0) -> 5, (1,1) -> 6, (1,2) -> 2.
    expected = torch.tensor([[[4, 4, 2, 2, 0, 0],
                              [4, 4, 2, 2, 0, 0],
                              [5, 5, 6, 6, 2, 2],
                              [5, 5, 6, 6, 2, 2]]])
    assert torch.equal(recon, expected)
    assert recon.dtype == torch.int64


def test_label_interp_reconstruct_is_exact_on_cell_aligned_blocks():
    labels = BLOCKS.repeat_interleave(4, 0).repeat_interleave(4, 1)[None]  # (1, 16, 16)

    assert torch.equal(label_interp_reconstruct(labels, (4, 4)), labels)
    coarse = label_interp_reconstruct(labels, (2, 2))  # 8x8 cells sample pixel (4 + 8i, 4 + 8j)
    assert torch.equal(coarse[0, ::8, ::8], BLOCKS[1::2, 1::2])
