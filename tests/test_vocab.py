"""Vocabulary layout (PAPER_NOTES §4.3): paper sizes, disjoint covering ranges, inverse conversions, coords."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.vocab import Vocab

CONFIGS = [
    Vocab.paper(with_insseg=False),
    Vocab.paper(with_insseg=True),
    Vocab.build(10, 3, None, 4, spare_codes=2),
    Vocab.build(0, 0, 5, None),
    Vocab.build(7, 2, None, None),
]


def test_paper_layout_matches_reference_table():
    depth_only, insseg = Vocab.paper(with_insseg=False), Vocab.paper(with_insseg=True)
    assert depth_only.size == 2339 and insseg.size == 2467
    # offsets of the official ARTransformer (PAPER_NOTES §4.3 table)
    assert (insseg.class_offset, insseg.reserved_token, insseg.noise_token) == (2001, 2081, 2082)
    assert insseg.task_range("mask") == range(2083, 2211)
    assert insseg.task_range("depth") == range(2211, 2339)
    assert insseg.task_range("spare") == range(2339, 2467)
    assert depth_only.task_range("coord") == range(0, 2001)


@pytest.mark.parametrize("vocab", CONFIGS, ids=str)
def test_ranges_are_disjoint_and_cover_the_vocabulary(vocab):
    ids = [t for r in vocab.ranges.values() for t in r]
    assert ids == list(range(vocab.size))  # in layout order, no gap, no overlap


@pytest.mark.parametrize("vocab", CONFIGS, ids=str)
def test_local_and_global_conversions_invert(vocab):
    g = torch.Generator().manual_seed(0)
    for kind, r in vocab.ranges.items():
        local = torch.randint(0, len(r), (3, 5), generator=g)
        tokens = vocab.to_global(local, kind)
        assert int(tokens.min()) >= r.start and int(tokens.max()) < r.stop
        assert torch.equal(vocab.to_local(tokens, kind), local)
        every = torch.tensor(list(r))
        assert torch.equal(vocab.to_global(vocab.to_local(every, kind), kind), every)


def test_conversions_reject_ids_of_another_kind():
    vocab = Vocab.paper(with_insseg=False)
    with pytest.raises(ValueError, match="depth"):
        vocab.to_global(torch.tensor([0, 128]), "depth")
    with pytest.raises(ValueError, match="mask"):
        vocab.to_local(torch.tensor([2211]), "mask")  # first depth token is not a mask token


def test_absent_task_and_bad_sizes_raise():
    vocab = Vocab.build(2000, 80, None, 128)
    assert vocab.size == 2339 - 128 and "mask" not in vocab.ranges
    with pytest.raises(KeyError, match="absent"):
        vocab.task_range("mask")
    with pytest.raises(KeyError, match="absent"):
        vocab.task_range("boxes")
    with pytest.raises(ValueError, match="absent task"):
        Vocab.build(10, 3, 0, None)
    with pytest.raises(ValueError, match="repeat"):
        Vocab(10, 3, (("mask", 4), ("mask", 4)))
    with pytest.raises(ValueError, match="non-negative"):
        Vocab.build(-1, 3, None, None)


def test_legal_mask_is_the_union_of_ranges():
    vocab = Vocab.paper(with_insseg=True)
    mask = vocab.legal_mask(("class", "noise"))
    assert mask.shape == (2467,) and mask.dtype == torch.bool
    assert mask.sum() == 81  # the paper's "81 class tokens including background"
    assert mask[2001:2081].all() and mask[2082] and not mask[2081] and not mask[2000]
    assert torch.equal(vocab.legal_mask("depth").nonzero().squeeze(1), torch.arange(2211, 2339))


def test_coordinate_quantisation_hand_values_and_round_trip():
    vocab = Vocab.paper(with_insseg=True)
    coords = torch.tensor([0.0, 320.0, 640.0, 700.0, -5.0, 100.1])
    # 100.1 / 640 * 2000 = 312.8125 -> 313; out-of-image values clamp (PAPER_NOTES §4.5)
    assert vocab.coord_to_token(coords, 640.0).tolist() == [0, 1000, 2000, 2000, 0, 313]
    c = torch.rand(1000, generator=torch.Generator().manual_seed(1)) * 640
    back = vocab.token_to_coord(vocab.coord_to_token(c, 640.0), 640.0)
    assert (back - c).abs().max() <= 640 / 2000 / 2 + 1e-4  # half a bin, ~0.16 px


def test_task_code_ranges_come_from_the_manifests_in_registry_order():
    from pipeline.tasks.registry import vocab_for

    manifests = {"semseg": {"tokenizer": {"num_embeddings": 32}},
                 "depth": {"tokenizer": {"num_embeddings": 64}},
                 "insseg": {"tokenizer": {"num_embeddings": 16}, "categories": [{"id": 3}, {"id": 9}]}}
    vocab = vocab_for(20, manifests, spare_codes=5)
    # coords 21 | classes 2 | reserved, noise | mask 16 | depth 64 | semseg 32 | spare 5, whatever the order
    # of the run's tasks: the registry's (mask before depth as the official layout, then later tasks)
    assert vocab.ranges == {"coord": range(0, 21), "class": range(21, 23), "reserved": range(23, 24),
                            "noise": range(24, 25), "mask": range(25, 41), "depth": range(41, 105),
                            "semseg": range(105, 137), "spare": range(137, 142)}
    assert vocab.size == 142
    alone = vocab_for(20, {"semseg": manifests["semseg"]})
    assert alone.ranges["semseg"] == range(23, 55) and "class" not in alone.ranges
    with pytest.raises(Exception, match="unknown task"):
        vocab_for(20, {"boxes": {}})
