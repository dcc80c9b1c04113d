"""Every random stream of a run, named in one place.

A run's randomness comes from two seeds: ``data.subset_seed`` picks the data (the long-tailed
subset, the held-out split) and ``seed`` everything that trains (model initialisation, sampling
order, augmentation). Each training stream is seeded per epoch from (seed, stream, epoch), so an
epoch is a function of the run's seed, the rank and the epoch alone and a resumed run repeats
epochs exactly (bitwise on the CPU). The streams:

    CONVENTIONAL                    the conventional branch's sampler (instance-balanced)
    REBALANCING                     GBBN's re-balancing branch's sampler
    augment_stream(stream, rank)    the batched pipeline's augmentation of a sampler's batches
    loop_stream(rank)               python / numpy / torch reseeded each epoch (the DataLoader path's
                                    transforms draw from torch's global generator)

>>> epoch_seed(0, CONVENTIONAL, 1) == epoch_seed(0, CONVENTIONAL, 1) != epoch_seed(0, REBALANCING, 1)
True
"""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["CONVENTIONAL", "HOLDOUT", "REBALANCING", "augment_stream", "epoch_seed", "holdout_rng", "loop_stream",
           "seed_everything", "subset_rng"]

CONVENTIONAL = 0
REBALANCING = 1
HOLDOUT = 1  # the held-out split's stream beside data.subset_seed: default_rng([subset_seed, HOLDOUT])


def epoch_seed(seed: int, stream: int, epoch: int) -> int:
    """A 63-bit seed for one (run seed, stream, epoch) triple; streams keep branches independent."""
    return int(np.random.SeedSequence([seed, stream, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def augment_stream(stream: int, rank: int) -> int:
    """The stream of the batched pipeline's augmentation of sampler ``stream`` on ``rank``: apart from the
    samplers' and the loop's."""
    return 100 + stream + 1000 * rank


def loop_stream(rank: int) -> int:
    """The stream of the per-epoch reseed of python, numpy and torch on ``rank``."""
    return 99 + 1000 * rank


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def subset_rng(subset_seed: int) -> np.random.RandomState:
    """The long-tailed subset's generator: numpy's legacy ``RandomState``, the generator behind LDAM-DRW's
    ``np.random.seed(0)``."""
    return np.random.RandomState(subset_seed)


def holdout_rng(subset_seed: int) -> np.random.Generator:
    """The held-out split's generator, a stream apart from the subset's own."""
    return np.random.default_rng([subset_seed, HOLDOUT])
