"""Synthetic feature sets for the tests: class means, per-sample spread, a classifier."""
from __future__ import annotations

import numpy as np
import torch


def lt_counts(n_max: int, num_classes: int, ratio: float):
    """CIFAR-LT counts: n_c = int(n_max * (1/ratio)^(c/(C-1)))."""
    return [int(n_max * (1.0 / ratio) ** (c / (num_classes - 1))) for c in range(num_classes)]


def make_features(counts, dim, *, spread=0.5, seed=0, dtype=torch.float64, offset=0.0, classifier=True):
    """Features around random class means (one row per sample, classes in order), a classifier
    near the centred means, and a bias."""
    gen = torch.Generator().manual_seed(seed)
    c = len(counts)
    means = torch.randn(c, dim, generator=gen, dtype=torch.float64) * 3.0 + offset
    labels = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(counts)])
    noise = torch.randn(len(labels), dim, generator=gen, dtype=torch.float64)
    features = (means[labels] + spread * noise).to(dtype)
    perm = torch.randperm(len(labels), generator=gen)
    features, labels = features[perm], labels[perm]
    if not classifier:
        return features, labels, None, None
    weight = (means - means.mean(0)) + 0.3 * torch.randn(c, dim, generator=gen, dtype=torch.float64)
    bias = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
    return features, labels, weight.to(dtype), bias.to(dtype)


def random_orthogonal(dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q


def as_numpy64(t):
    return None if t is None else np.asarray(t.double().numpy())


def two_passes(acc, feats, labels, step=13):
    """Feed an accumulator both passes in chunks of ``step`` rows; return its result."""
    for _ in range(2):
        for start in range(0, len(labels), step):
            acc.update(feats[start:start + step], labels[start:start + step])
        if acc.pass_index == 1:
            acc.next_pass()
    return acc.compute()
