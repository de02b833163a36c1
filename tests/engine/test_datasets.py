"""Sampling order, sharding, resume offsets, label mapping and batching of uneven volumes."""

from __future__ import annotations

import pytest
import torch

from volseg.engine.datasets import (
    EpochSampler,
    apply_lut,
    balanced_weights,
    label_lut,
    sample_seed,
    stack_groups,
)
from volseg.errors import VolsegError


def test_epochs_are_shuffled_reproducibly():
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    assert a.order(0) == b.order(0) != a.order(1)
    assert sorted(a.order(0)) == list(range(10))
    assert EpochSampler(10, seed=4).order(0) != a.order(0)


def test_ranks_get_disjoint_equal_shares():
    shares = [EpochSampler(7, seed=0, rank=r, world_size=2).order(5) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 4  # padded by wrapping, as DistributedSampler
    assert set(shares[0]) | set(shares[1]) == set(range(7))
    assert len(set(shares[0]) & set(shares[1])) <= 1


def test_resume_skips_the_samples_already_seen():
    sampler = EpochSampler(9, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip=4)
    assert list(sampler) == full[4:] and len(sampler) == 5
    assert all(epoch == 2 for epoch, _ in full)


def test_balanced_sampling_draws_classes_equally():
    targets = [0] * 18 + [1] * 2
    sampler = EpochSampler(20, seed=0, weights=balanced_weights(targets))
    drawn = [targets[i] for e in range(20) for i in sampler.order(e)]
    assert abs(sum(drawn) / len(drawn) - 0.5) < 0.06


def test_sample_seeds_differ_per_epoch_index_and_stream():
    seeds = {sample_seed(0, e, i, s) for e in range(3) for i in range(3) for s in range(2)}
    assert len(seeds) == 18


def test_brats_labels_map_to_contiguous_classes():
    lut = label_lut({0: "bg", 1: "necrosis", 2: "oedema", 4: "enhancing"}, [0, 1, 2, 4])
    label = torch.tensor([[0, 1, 2, 4]])
    assert apply_lut(label, lut, "c").tolist() == [[0, 1, 2, 3]]
    subset = label_lut({0: "bg", 1: "necrosis", 2: "oedema", 4: "enhancing"}, [0, 4])
    assert apply_lut(label, subset, "c").tolist() == [[0, 0, 0, 1]]
    with pytest.raises(VolsegError, match="case c: label values \\[3\\]"):
        apply_lut(torch.tensor([3]), lut, "c")


def test_volumes_of_equal_shape_are_stacked_together():
    def sample(i, x):
        return {
            "id": str(i),
            "image": torch.full((1, x, 5, 4), float(i)),
            "target": torch.tensor(i),
        }

    groups = stack_groups([sample(0, 6), sample(1, 7), sample(2, 6)])
    assert [g["ids"] for g in groups] == [["0", "2"], ["1"]]
    assert groups[0]["image"].shape == (2, 1, 6, 5, 4) and groups[0]["target"].tolist() == [0, 2]
