"""Class-aware samplers: class frequencies, determinism per epoch."""
from __future__ import annotations

import numpy as np
import pytest

from allnc_train.data import lt_class_counts
from allnc_train.data.samplers import ClassAwareSampler, class_probabilities

COUNTS = lt_class_counts(500, 10, 100)  # 500 ... 5
LABELS = np.repeat(np.arange(10), COUNTS)


@pytest.mark.parametrize("kind, expected", [
    ("instance", np.array(COUNTS, float)),
    ("class_balanced", np.ones(10)),
    ("sqrt", np.sqrt(COUNTS)),
    ("reversed", max(COUNTS) / np.array(COUNTS, float)),
])
def test_sampler_class_frequencies(kind, expected):
    expected = expected / expected.sum()
    assert np.allclose(class_probabilities(COUNTS, kind), expected)
    draws = []
    sampler = ClassAwareSampler(LABELS, COUNTS, kind, seed=3, num_samples=40_000)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    freq = np.bincount(LABELS[draws], minlength=10) / len(draws)
    # 40,000 draws: the standard error of each frequency is below 0.0025.
    assert np.abs(freq - expected).max() < 0.01, (freq, expected)


def test_within_class_uniform_and_reversed_favours_the_tail():
    sampler = ClassAwareSampler(LABELS, COUNTS, "reversed", seed=0, num_samples=50_000)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    head = np.bincount(draws[LABELS[draws] == 0], minlength=COUNTS[0])[: COUNTS[0]]
    tail = np.bincount(LABELS[draws], minlength=10)
    assert tail[9] > 50 * tail[0]
    assert head.min() >= 0 and head.std() / head.mean() < 2  # no sample of the head class is starved entirely


def test_instance_sampler_is_a_shuffle_and_epochs_differ():
    s = ClassAwareSampler(LABELS, COUNTS, "instance", seed=0)
    first = list(s)
    assert sorted(first) == list(range(len(LABELS)))
    assert list(s) == first  # same epoch, same order
    s.set_epoch(1)
    assert list(s) != first
    other_stream = ClassAwareSampler(LABELS, COUNTS, "instance", seed=0, stream=1)
    assert list(other_stream) != first


def test_sampler_errors():
    with pytest.raises(ValueError, match="sampler kind"):
        class_probabilities([1, 2], "weird")
    with pytest.raises(ValueError, match="at least one sample"):
        class_probabilities([3, 0], "reversed")
