"""The batched data pipeline: in-memory datasets on the training device, one gather per batch.

For CIFAR (and the labels-only ``synthetic`` data) the whole training set lives on the device as
one uint8 tensor (N, 3, H, W) (for ``synthetic``: the index tensor, nothing to augment). Each step
takes the next ``batch_size`` indices of the sampler's epoch draw (the same
:class:`~allnc_train.data.samplers.ClassAwareSampler` as the DataLoader path, drawn as one tensor, so the
same samples in the same order; across processes this rank's share, ``distributed.shard_sampler``),
gathers the images on the device, augments them as a batch (:mod:`allnc_train.data.augment`), normalises
them and yields ``(x, y)``:

- ``x``: (B, V, 3, H, W) float32, view 0 by the standard crop + flip, views 1..V-1 by
  ``data.view_augment`` (``simclr`` or ``standard``); ``data.augment: none`` leaves every view
  plain. For ``synthetic``: (B, V) int64 sample indices.
- ``y``: (B,) int64 labels, on the device.

The augmentation randomness of a loader comes from a generator on the device seeded by
``epoch_seed(seed, augment_stream(stream, rank), epoch)``, so an epoch is a function of (seed, rank,
epoch) alone and a resumed run repeats epochs exactly (bitwise on the CPU; on CUDA the generator is
CUDA's, reproducible there but not equal to the CPU's draws). ``len(loader)`` is the number of
steps per epoch, ``ceil(len(sampler) / batch_size)`` as the DataLoader's (``drop_last`` false).

Evaluation passes (:class:`OrderedBatches`) run over this rank's contiguous block of a device-resident
set in order, with the plain transform (normalisation only).

With channels-last on (CUDA), every image batch is laid out channels-last per image: x (B, V, 3, H,
W) has strides such that ``x.flatten(0, 1)`` is a channels-last (B * V, 3, H, W) view.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from .. import distributed
from ..schema import Config, ConfigError, conventional_views
from .augment import normalization_tensors, normalize, random_crop_flip, simclr_view
from .datasets import DataBundle, IndexSamples, TensorImages, simclr_params
from .samplers import ClassAwareSampler
from .seeds import CONVENTIONAL, REBALANCING, augment_stream, epoch_seed

IN_MEMORY = ("cifar10", "cifar100", "synthetic")  # the datasets build_data holds in memory


def pipeline_kind(cfg: Config) -> str:
    """``batched`` or ``loader``: what ``data.pipeline`` means for this config (``auto``: batched for
    in-memory data, the DataLoader for file-backed data)."""
    kind = cfg.data.pipeline
    if kind == "auto":
        return "batched" if cfg.data.dataset in IN_MEMORY else "loader"
    if kind == "batched" and cfg.data.dataset not in IN_MEMORY:
        raise ConfigError(f"data.pipeline 'batched' needs a dataset held in memory ({', '.join(IN_MEMORY)}); "
                          f"{cfg.data.dataset!r} is read from files: use 'loader' or 'auto'.")
    return kind


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    """Whether the model and its image batches are channels-last: ``run.channels_last`` on CUDA, for images."""
    return device.type == "cuda" and cfg.run.channels_last and cfg.data.dataset != "synthetic"


# ---------------------------------------------------------------------------------------------
# Sampler draws as tensors
# ---------------------------------------------------------------------------------------------

def sampler_indices(sampler: Sampler[int]) -> torch.Tensor:
    """One epoch of ``sampler`` as an int64 CPU tensor, equal to ``list(sampler)``: its ``draw()`` (a
    :class:`ClassAwareSampler`, or a :class:`~allnc_train.distributed.ShardedSampler` of one), else
    the sampler iterated."""
    if hasattr(sampler, "draw"):
        return sampler.draw()
    return torch.as_tensor(list(sampler), dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# A dataset on the device
# ---------------------------------------------------------------------------------------------

@dataclass
class DeviceSamples:
    """A dataset on the device: ``images`` uint8 (N, 3, H, W), or None for labels-only data whose
    input of sample i is ``inputs[i]``; ``labels`` (N,) int64."""

    images: torch.Tensor | None
    inputs: torch.Tensor | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_dataset(cls, dataset: Dataset, device: torch.device, size: int | None = None) -> DeviceSamples:
        """The samples of an in-memory dataset (``TensorImages`` or ``IndexSamples``) on ``device``;
        images resized to ``size`` x ``size`` when they are another size."""
        labels = torch.as_tensor(dataset.labels, dtype=torch.int64).to(device)
        if isinstance(dataset, IndexSamples):
            return cls(None, torch.arange(len(labels), device=device), labels)
        if not isinstance(dataset, TensorImages):
            raise TypeError(f"the batched pipeline needs images held in memory, got a {type(dataset).__name__}.")
        images = dataset.images.to(device)
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = resize_images(images, size)
        return cls(images, None, labels)


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, 3, H, W) resized to (size, size), bilinear with antialiasing, rounded back to uint8
    (once, before training: the batched twin of the loader path's ``v2.Resize``)."""
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8, device=images.device)
    for s in range(0, len(images), chunk):
        x = F.interpolate(images[s:s + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out[s:s + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channels_last_views(x: torch.Tensor) -> torch.Tensor:
    """Image batch (B, V, C, H, W) or (B, C, H, W) laid out channels-last per image (a copy unless
    already so); the shape is unchanged, and (B, V, ...) flattens to a channels-last 4-d view."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


def _empty_views(b: int, v: int, c: int, h: int, w: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    if channels_last:
        return torch.empty((b, v, h, w, c), device=device).permute(0, 1, 4, 2, 3)
    return torch.empty((b, v, c, h, w), device=device)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

class BatchedLoader:
    """Training batches of one epoch, gathered and augmented on the device (see the module docstring).

    ``sampler``: a ClassAwareSampler, or this rank's ShardedSampler of one. ``augment``: ``standard``
    or ``none`` (``data.augment``); ``view_augment``: ``simclr`` or ``standard`` for views 1..V-1.
    ``seed`` / ``stream`` / ``rank`` seed the augmentation generator (:func:`~allnc_train.data.seeds.augment_stream`).
    """

    def __init__(self, samples: DeviceSamples, sampler: Sampler[int], batch_size: int, views: int = 1, *,
                 augment: str = "standard", view_augment: str = "simclr", dataset: str = "cifar10", seed: int = 0,
                 stream: int = 0, rank: int = 0, channels_last: bool = False, drop_last: bool = False):
        self.samples, self.sampler, self.batch_size, self.views = samples, sampler, batch_size, views
        self.augment, self.view_augment, self.simclr = augment, view_augment, simclr_params(dataset)
        self.seed, self.stream, self.rank, self.epoch = seed, stream, rank, 0
        self.channels_last, self.drop_last = channels_last, drop_last
        self.device = samples.labels.device
        self.mean, self.std = normalization_tensors(dataset, self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the sampler's draw and the augmentation generator's seed."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def generator(self) -> torch.Generator:
        """This epoch's augmentation generator, freshly seeded (on the samples' device)."""
        seed = epoch_seed(self.seed, augment_stream(self.stream, self.rank), self.epoch)
        return torch.Generator(device=self.device).manual_seed(seed)

    def view_kinds(self) -> list[str]:
        """How each view is made: ``plain``, ``standard`` or ``simclr``."""
        if self.augment != "standard":
            return ["plain"] * self.views
        return ["standard"] + [self.view_augment] * (self.views - 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = sampler_indices(self.sampler).to(self.device)
        g = self.generator()
        kinds = self.view_kinds()
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.batch(idx, g, kinds), self.samples.labels.index_select(0, idx)

    def batch(self, idx: torch.Tensor, generator: torch.Generator, kinds: list[str] | None = None) -> torch.Tensor:
        """The inputs of the samples ``idx`` (on the device): (B, V, 3, H, W) views, or (B, V) indices."""
        s = self.samples
        if s.images is None:
            return s.inputs.index_select(0, idx).unsqueeze(1).expand(len(idx), self.views).contiguous()
        src = s.images.index_select(0, idx)  # uint8 (B, 3, H, W)
        out = _empty_views(len(idx), self.views, *src.shape[1:], device=self.device, channels_last=self.channels_last)
        for v, kind in enumerate(kinds or self.view_kinds()):  # a handful of views, each a whole batch
            if kind == "standard":
                view = random_crop_flip(src, generator)
            elif kind == "simclr":
                view = simclr_view(src, generator, self.simclr)
            else:
                view = src
            normalize(view, self.mean, self.std, out=out[:, v])
        return out


class OrderedBatches:
    """An evaluation pass: the samples ``rows`` (default: all) of a device-resident set, in order, in
    batches, plain (normalised, no augmentation); yields (x (B, 3, H, W) or (B,) indices, y (B,))."""

    def __init__(self, samples: DeviceSamples, batch_size: int, *, dataset: str = "cifar10",
                 rows: range | None = None, channels_last: bool = False):
        self.samples, self.batch_size, self.channels_last = samples, batch_size, channels_last
        self.rows = range(len(samples)) if rows is None else rows
        self.mean, self.std = normalization_tensors(dataset, samples.labels.device)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.samples
        for start in range(self.rows.start, self.rows.stop, self.batch_size):
            part = slice(start, min(start + self.batch_size, self.rows.stop))
            if s.images is None:
                x = s.inputs[part]
            else:
                x = normalize(s.images[part], self.mean, self.std)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            yield x, s.labels[part]


def make_batched_loaders(cfg: Config, data: DataBundle, device: torch.device
                         ) -> tuple[BatchedLoader, BatchedLoader | None, OrderedBatches, OrderedBatches | None]:
    """(conventional, re-balancing or None, training set in order, evaluation set or None) of this
    rank, with the same samplers, streams, batch sizes and shards as the DataLoader path."""
    batch = distributed.local_batch_size(cfg.optim.batch_size)
    channels_last = use_channels_last(cfg, device)
    size = None if cfg.data.dataset == "synthetic" else cfg.data.image_size
    train = DeviceSamples.from_dataset(data.train, device, size)
    views = conventional_views(cfg)
    common = dict(augment=cfg.data.augment, view_augment=cfg.data.view_augment, dataset=cfg.data.dataset,
                  seed=cfg.seed, rank=distributed.rank(), channels_last=channels_last)
    conv = ClassAwareSampler(data.train_labels, data.class_counts, "instance", cfg.seed, stream=CONVENTIONAL)
    conventional = BatchedLoader(train, distributed.shard_sampler(conv), batch, views, stream=CONVENTIONAL, **common)
    rebalancing = None
    if cfg.gbbn.enabled:
        rebal = ClassAwareSampler(data.train_labels, data.class_counts, cfg.gbbn.sampler, cfg.seed, stream=REBALANCING)
        rebalancing = BatchedLoader(train, distributed.shard_sampler(rebal), batch, 1, stream=REBALANCING, **common)

    def ordered(samples: DeviceSamples) -> OrderedBatches:
        rows = distributed.block(len(samples), distributed.rank(), distributed.world_size())
        return OrderedBatches(samples, batch, dataset=cfg.data.dataset, rows=rows, channels_last=channels_last)

    test = None if data.test is None else ordered(DeviceSamples.from_dataset(data.test, device, size))
    return conventional, rebalancing, ordered(train), test
