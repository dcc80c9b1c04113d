"""Class-aware samplers: instance-balanced, class-balanced, square-root and reversed.

Each kind is a law over classes, p(c) proportional to n_c^q with q = 1 (instance), 0 (class-balanced),
1/2 (square root) and -1 (reversed: p(c) proportional to n_max / n_c, BBN's re-balancing branch);
within a class every sample is equally likely. Instance-balanced sampling is a plain shuffle
(without replacement); the others draw with replacement. Every epoch's draw comes from its own
generator seeded by (seed, stream, epoch) (:mod:`allnc_train.data.seeds`), so a resumed run draws the
same batches.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from .seeds import epoch_seed

KINDS = ("instance", "class_balanced", "sqrt", "reversed")
_EXPONENT = {"instance": 1.0, "class_balanced": 0.0, "sqrt": 0.5, "reversed": -1.0}


def class_probabilities(counts: Sequence[int], kind: str) -> np.ndarray:
    """Probability of drawing each class, shape (C,).

    >>> class_probabilities([400, 100], "reversed").round(2).tolist()
    [0.2, 0.8]
    """
    if kind not in _EXPONENT:
        raise ValueError(f"sampler kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every class needs at least one sample to be sampled, got counts {list(counts)}.")
    p = n ** _EXPONENT[kind]
    return p / p.sum()


def sample_weights(labels: Sequence[int], counts: Sequence[int], kind: str) -> torch.Tensor:
    """Per-sample weights (N,) whose class totals follow :func:`class_probabilities`."""
    y = np.asarray(labels, dtype=np.int64)
    p = class_probabilities(counts, kind)
    return torch.from_numpy(p[y] / np.asarray(counts, dtype=np.float64)[y])


class ClassAwareSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch by ``kind``; call :meth:`set_epoch` before each epoch."""

    def __init__(self, labels: Sequence[int], counts: Sequence[int], kind: str, seed: int = 0, stream: int = 0,
                 num_samples: int | None = None):
        self.kind = kind
        self.weights = sample_weights(labels, counts, kind)
        self.num_samples = len(self.weights) if num_samples is None else num_samples
        self.seed, self.stream, self.epoch = seed, stream, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def draw(self) -> torch.Tensor:
        """This epoch's indices as an int64 CPU tensor, from the (seed, stream, epoch) generator: what both
        the DataLoader path (``__iter__``) and the batched pipeline take."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.stream, self.epoch))
        if self.kind == "instance" and self.num_samples == len(self.weights):
            return torch.randperm(len(self.weights), generator=g)  # a shuffle: every sample once
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())
