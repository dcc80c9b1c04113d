"""A run's data as the loop iterates it: the batched on-device pipeline, or torch DataLoaders.

Both paths draw the same samples from the same samplers (:mod:`allnc_train.data.samplers`), and
across processes each rank takes its share (:mod:`allnc_train.distributed`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from .. import distributed
from ..schema import Config
from .datasets import DataBundle
from .pipeline import channels_last_views, make_batched_loaders, pipeline_kind, use_channels_last
from .samplers import ClassAwareSampler
from .seeds import CONVENTIONAL, REBALANCING

__all__ = ["Loaders", "make_loaders", "set_epoch", "to_device"]


class Loaders(NamedTuple):
    """The data of one run, on this rank's share: DataLoaders or the batched pipeline's loaders,
    each an iterable of (x, y) batches with ``len()`` = batches per pass."""

    conventional: Iterable  # instance-balanced training batches
    rebalancing: Iterable | None  # GBBN's re-balancing branch (None without GBBN)
    train_eval: Iterable  # the training set in order, plain transform: evaluation and dumps
    test: Iterable | None  # the evaluation set (test split or held-out samples), when the data has one
    channels_last: bool = False  # image batches (and the model) channels-last


def make_loaders(cfg: Config, data: DataBundle, device: torch.device) -> Loaders:
    """The run's loaders: the batched pipeline or DataLoaders, as ``data.pipeline`` says."""
    channels_last = use_channels_last(cfg, device)
    if pipeline_kind(cfg) == "batched":
        return Loaders(*make_batched_loaders(cfg, data, device), channels_last=channels_last)
    pin = device.type == "cuda"
    common = dict(batch_size=distributed.local_batch_size(cfg.optim.batch_size), num_workers=cfg.data.num_workers,
                  pin_memory=pin, persistent_workers=False)
    shard, block = distributed.shard_sampler, distributed.shard_dataset  # this rank's share; identity on one
    conv = ClassAwareSampler(data.train_labels, data.class_counts, "instance", cfg.seed, stream=CONVENTIONAL)
    rebalancing = None
    if cfg.gbbn.enabled:
        rebal = ClassAwareSampler(data.train_labels, data.class_counts, cfg.gbbn.sampler, cfg.seed, stream=REBALANCING)
        rebalancing = DataLoader(data.train, sampler=shard(rebal), **common)
    return Loaders(
        conventional=DataLoader(data.train, sampler=shard(conv), **common),
        rebalancing=rebalancing,
        train_eval=DataLoader(block(data.train_eval), shuffle=False, **common),
        test=DataLoader(block(data.test), shuffle=False, **common) if data.test is not None else None,
        channels_last=channels_last,
    )


def set_epoch(loader, epoch: int) -> None:
    """The epoch's sampler draw (and, for the batched pipeline, its augmentation seed)."""
    (loader.set_epoch if hasattr(loader, "set_epoch") else loader.sampler.set_epoch)(epoch)


def to_device(batch: tuple | None, device: torch.device, channels_last: bool = False) -> tuple | None:
    """A batch of tensors on ``device`` (a no-op for the batched pipeline's); image batches channels-last
    when asked."""
    if batch is None:
        return None
    x, *rest = (t.to(device, non_blocking=True) for t in batch)
    if channels_last and x.is_floating_point():
        x = channels_last_views(x)
    return (x, *rest)
