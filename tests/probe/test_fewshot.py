"""Few-shot draws: exactly n per class, from the candidates, seeded; --shots parsing."""

from __future__ import annotations

import numpy as np
import pytest

from volseg.errors import VolsegError
from volseg.probe.fewshot import parse_shots, sample_shots

CLASSES = ["a", "b", "c"]
LABELS = np.repeat([0, 1, 2], [11, 7, 12])
CANDIDATES = np.arange(3, LABELS.size)  # rows 0-2 are not training rows


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_exactly_n_per_class_from_the_candidates(n):
    rows = sample_shots(LABELS, CANDIDATES, n, seed=0, classes=CLASSES)
    assert np.bincount(LABELS[rows], minlength=3).tolist() == [n, n, n]
    assert set(rows) <= set(CANDIDATES) and len(set(rows)) == rows.size


def test_same_seed_same_rows_other_seeds_other_rows():
    first = sample_shots(LABELS, CANDIDATES, 4, seed=5, classes=CLASSES)
    np.testing.assert_array_equal(first, sample_shots(LABELS, CANDIDATES, 4, 5, CLASSES))
    others = {tuple(sample_shots(LABELS, CANDIDATES, 4, s, CLASSES)) for s in range(6)}
    assert len(others) == 6


def test_too_few_rows_of_a_class_is_one_line_naming_the_most_possible():
    with pytest.raises(VolsegError, match=r"--shots 8 .* class 'b' has 7; .* up to 7") as e:
        sample_shots(LABELS, CANDIDATES, 8, 0, CLASSES)
    assert "\n" not in str(e.value)


def test_parse_shots():
    assert parse_shots("4,1,2,2") == [1, 2, 4]
    for bad in ["", "0", "1,x", "-2", "1.5"]:
        with pytest.raises(VolsegError, match="--shots"):
            parse_shots(bad)
