"""Long-tailed subsets and splits, as pure functions of label arrays.

The long-tailed CIFAR subsets follow LDAM-DRW (Cao et al. 2019, ``imbalance_cifar.py``), which
every long-tailed paper reuses: n_c = int(n_max * (1/beta)^(c/(C-1))); numpy's legacy generator
seeded with ``data.subset_seed`` (LDAM: 0); for each class in label order the class's indices are
shuffled and the first n_c kept; the test set is untouched. Because each class's shuffle does not
depend on beta, the subsets for different beta are nested. (On the JPEG image-folder copy the
indices enumerate the files in sorted order, so the counts match the literature exactly and the
chosen images differ from a torchvision-ordered run.)

Held-out evaluation (``data.val_fraction`` f > 0): from each class's training samples (after the
long-tailed subset) max(1, round(f * n_c)) are drawn without replacement (:func:`holdout_split`)
and held out as the evaluation set.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nctools.core.audit import DEFAULT_GROUPS, assign_groups

from ..schema import ConfigError
from .seeds import holdout_rng, subset_rng

__all__ = ["first_per_class", "holdout_split", "lt_class_counts", "lt_subset_indices", "lt_unused_indices",
           "shot_groups"]

MANY_ABOVE, FEW_BELOW = DEFAULT_GROUPS


def lt_class_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """LDAM's per-class sizes n_c = int(n_max * (1/beta)^(c/(C-1))).

    >>> sum(lt_class_counts(5000, 10, 100))
    12406
    """
    if num_classes == 1:
        return [int(n_max)]
    factor = 1.0 / imbalance_ratio
    return [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def _class_shuffles(labels: Sequence[int], num_classes: int, seed: int):
    """Each class's sample indices (in label order), shuffled by LDAM's stream (:func:`seeds.subset_rng`)."""
    y = np.asarray(labels, dtype=np.int64)
    rng = subset_rng(seed)
    for c in range(num_classes):
        idx = np.where(y == c)[0]
        rng.shuffle(idx)
        yield c, idx


def lt_subset_indices(labels: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset: per class (in label order) shuffle, keep the first n_c."""
    keep = []
    for c, idx in _class_shuffles(labels, len(counts), seed):
        if counts[c] > len(idx):
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than the {counts[c]} the subset asks for.")
        keep.append(idx[:counts[c]])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def lt_unused_indices(labels: Sequence[int], n_max: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Per class, the samples at positions n_max .. n_max + per_class - 1 of its LDAM shuffle.

    No LDAM subset with this ``n_max`` and ``seed`` holds them, whatever beta (the subsets keep a
    prefix of the same shuffle), so on CIFAR they are a balanced validation set drawn from the
    training split: hyper-parameters can be chosen on them without reading the test split.

    >>> labels = [0] * 6 + [1] * 6
    >>> unused = lt_unused_indices(labels, n_max=4, per_class=2)
    >>> sorted(set(unused) & set(lt_subset_indices(labels, [4, 1])))
    []
    >>> np.bincount(np.asarray(labels)[unused]).tolist()
    [2, 2]
    """
    num_classes = int(np.max(labels)) + 1 if len(labels) else 0
    keep = []
    for c, idx in _class_shuffles(labels, num_classes, seed):
        if n_max + per_class > len(idx):
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than n_max {n_max} + {per_class} unused ones.")
        keep.append(idx[n_max:n_max + per_class])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def shot_groups(counts: Sequence[int], many_above: int = MANY_ABOVE, few_below: int = FEW_BELOW) -> list[str]:
    """'many' / 'medium' / 'few' for each class from its training count (nctools' class groups).

    >>> shot_groups([500, 100, 20, 19])
    ['many', 'medium', 'medium', 'few']
    """
    return assign_groups(torch.as_tensor(list(counts)), (many_above, few_below)).tolist()


def holdout_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): sorted positions of ``labels`` split per class, max(1, round(fraction * n_c))
    of each class held out, drawn by :func:`seeds.holdout_rng` class by class in label order.

    >>> kept, held = holdout_split([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 0.25, seed=0)
    >>> len(held), sorted(np.bincount(np.asarray([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[held]).tolist())
    (3, [1, 2])
    """
    y = np.asarray(labels, dtype=np.int64)
    if not 0 < fraction < 1:
        raise ConfigError(f"data.val_fraction must lie in (0, 1) to hold samples out, got {fraction!r}.")
    rng = holdout_rng(seed)
    held = []
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = np.flatnonzero(y == c)
        if not len(idx):
            continue
        k = max(1, int(np.floor(fraction * len(idx) + 0.5)))
        if k >= len(idx):
            raise ConfigError(f"data.val_fraction {fraction} holds out all {len(idx)} training sample(s) of class "
                              f"{c}; lower it or use more samples per class.")
        held.append(rng.choice(idx, size=k, replace=False))
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(y)), held_out), held_out


def first_per_class(labels: Sequence[int], k: int) -> np.ndarray:
    """Indices of the first ``k`` samples of each class, in their original order."""
    y = np.asarray(labels, dtype=np.int64)
    seen: dict[int, int] = {}
    keep = []
    for i, c in enumerate(y.tolist()):
        if seen.get(c, 0) < k:
            seen[c] = seen.get(c, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)
