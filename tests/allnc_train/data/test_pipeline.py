"""The batched on-device pipeline (allnc_train.data.pipeline): the sampler's samples, views, seeds, shards."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from allnc_train.config import load_config
from allnc_train.data import DataBundle, IndexSamples, TensorImages, image_transform, lt_class_counts
from allnc_train.data import augment as A
from allnc_train.data.pipeline import (
    BatchedLoader,
    DeviceSamples,
    OrderedBatches,
    make_batched_loaders,
    pipeline_kind,
    sampler_indices,
)
from allnc_train.data.samplers import KINDS, ClassAwareSampler
from allnc_train.distributed import ShardedSampler
from allnc_train.schema import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = [40, 17, 9, 3, 2]  # 71 samples: uneven batches and shards
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)


def _index_samples() -> DeviceSamples:
    return DeviceSamples.from_dataset(IndexSamples(LABELS), torch.device("cpu"))


def _image_samples(n: int = len(LABELS)) -> DeviceSamples:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return DeviceSamples(images, None, torch.as_tensor(LABELS[:n]))


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_indices_are_the_samplers_own_draw(kind):
    base = ClassAwareSampler(LABELS, COUNTS, kind, seed=3, stream=1)
    for epoch in (1, 2, 7):
        base.set_epoch(epoch)
        assert sampler_indices(base).tolist() == list(base)
        for world in (2, 3):
            for rank in range(world):
                shard = ShardedSampler(base, rank, world)
                assert sampler_indices(shard).tolist() == list(shard)
    assert sampler_indices(range(5)).tolist() == [0, 1, 2, 3, 4]  # any other sampler: iterated


@pytest.mark.parametrize("kind", ["instance", "reversed"])
def test_batched_loader_yields_exactly_the_samplers_indices_and_labels(kind):
    sampler = ClassAwareSampler(LABELS, COUNTS, kind, seed=5, stream=0)
    loader = BatchedLoader(_index_samples(), sampler, batch_size=16, views=2, stream=0)
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == math.ceil(71 / 16) and len(batches[-1][1]) == 71 % 16
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        assert x.shape == (71, 2) and x.dtype == torch.int64 and y.dtype == torch.int64
        assert x[:, 0].tolist() == list(sampler) and torch.equal(x[:, 0], x[:, 1])
        assert torch.equal(y, torch.as_tensor(LABELS)[x[:, 0]])
    assert len(BatchedLoader(_index_samples(), sampler, 16, drop_last=True)) == 71 // 16


def test_two_simulated_ranks_take_interleaved_shares_of_the_single_process_stream():
    base = ClassAwareSampler(LABELS, COUNTS, "reversed", seed=1, stream=1)
    single = BatchedLoader(_index_samples(), base, batch_size=8)
    single.set_epoch(3)
    whole = torch.cat([x[:, 0] for x, _ in single])
    shares = []
    for rank in range(2):
        loader = BatchedLoader(_index_samples(), ShardedSampler(base, rank, 2), batch_size=4, rank=rank)
        loader.set_epoch(3)
        assert len(loader) == len(single)  # half the batch, half the samples: the same number of steps
        shares.append(torch.cat([x[:, 0] for x, _ in loader]))
    merged = torch.stack(shares, 1).flatten()  # rank 0, rank 1, rank 0, ...
    assert torch.equal(merged[:71], whole) and torch.equal(merged[71:], whole[:1])  # padded by wrapping round


def test_image_views_are_the_documented_augmentations_of_the_gathered_images():
    samples = _image_samples()
    sampler = ClassAwareSampler(LABELS, COUNTS, "instance", seed=0)
    loader = BatchedLoader(samples, sampler, batch_size=32, views=3, stream=0)
    loader.set_epoch(2)
    batches = list(loader)
    x, y = batches[0]
    assert x.shape == (32, 3, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    idx = torch.tensor(list(sampler)[:32])
    assert torch.equal(y, samples.labels[idx])
    g = loader.generator()  # epoch 2's generator, replayed: view 0 standard, views 1, 2 SimCLR, in order
    src = samples.images[idx]
    mean, std = A.normalization_tensors("cifar10")
    assert torch.equal(x[:, 0], A.normalize(A.random_crop_flip(src, g), mean, std))
    assert torch.equal(x[:, 1], A.normalize(A.simclr_view(src, g), mean, std))
    assert torch.equal(x[:, 2], A.normalize(A.simclr_view(src, g), mean, std))
    assert not torch.equal(x[:, 1], x[:, 2])
    again = next(iter(loader))[0]
    assert torch.equal(again, x)  # an epoch is a function of (seed, rank, epoch)
    loader.set_epoch(3)
    assert not torch.equal(next(iter(loader))[0][:, 0], x[:, 0])
    other_rank = BatchedLoader(samples, sampler, 32, 3, stream=0, rank=1)
    other_rank.set_epoch(2)
    assert not torch.equal(next(iter(other_rank))[0], x)  # the sampler agrees, the augmentation does not


def test_view_kinds_follow_augment_and_view_augment():
    samples = _image_samples()
    sampler = ClassAwareSampler(LABELS, COUNTS, "instance", seed=0)
    assert BatchedLoader(samples, sampler, 8, 2).view_kinds() == ["standard", "simclr"]
    assert BatchedLoader(samples, sampler, 8, 2, view_augment="standard").view_kinds() == ["standard"] * 2
    plain = BatchedLoader(samples, sampler, 8, 2, augment="none")
    assert plain.view_kinds() == ["plain"] * 2
    x, _ = next(iter(plain))
    idx = torch.tensor(list(sampler)[:8])
    mean, std = A.normalization_tensors("cifar10")
    assert torch.equal(x[:, 0], A.normalize(samples.images[idx], mean, std)) and torch.equal(x[:, 0], x[:, 1])


def test_channels_last_batches_hold_the_same_values():
    samples = _image_samples()
    sampler = ClassAwareSampler(LABELS, COUNTS, "instance", seed=0)
    plain, cl = (BatchedLoader(samples, sampler, 16, 2, channels_last=c) for c in (False, True))
    (a, _), (b, _) = next(iter(plain)), next(iter(cl))
    assert torch.equal(a, b) and b.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(OrderedBatches(samples, 16, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_ordered_batches_equal_the_dataloaders_plain_transform():
    samples = _image_samples()
    dataset = TensorImages(samples.images, LABELS, image_transform("cifar10", False, "standard", 32))
    ref = list(DataLoader(dataset, batch_size=16, shuffle=False))
    ours = list(OrderedBatches(samples, 16))
    assert len(ours) == len(ref) == 5
    for (x, y), (rx, ry) in zip(ours, ref):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    block = list(OrderedBatches(samples, 16, rows=range(35, 71)))
    assert torch.equal(torch.cat([y for _, y in block]), samples.labels[35:])


def test_pipeline_choice():
    assert pipeline_kind(load_config(None, [])) == "batched"
    assert pipeline_kind(load_config(None, ["data.pipeline=loader"])) == "loader"
    lt = ["data.dataset=imagenet_lt", "data.source=splits", "data.train_split=a", "data.test_split=b"]
    assert pipeline_kind(load_config(None, lt)) == "loader"
    with pytest.raises(ConfigError, match="data.pipeline 'batched' needs a dataset held in memory"):
        pipeline_kind(load_config(None, [*lt, "data.pipeline=batched"]))


def test_make_batched_loaders_for_allnc_on_in_memory_images():
    counts = lt_class_counts(20, 10, 10)
    labels = np.repeat(np.arange(10), counts)
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8)
    test_images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    data = DataBundle(TensorImages(images, labels), TensorImages(images, labels),
                      TensorImages(test_images, np.arange(30) % 10), labels, counts, [str(c) for c in range(10)], 10.0)
    cfg = load_config(None, ["method.name=allnc", "optim.batch_size=16"])
    conv, rebal, train_eval, test = make_batched_loaders(cfg, data, torch.device("cpu"))
    conv.set_epoch(1)
    rebal.set_epoch(1)
    (x, y), (xr, yr) = next(iter(conv)), next(iter(rebal))
    assert x.shape == (16, 2, 3, 32, 32) and xr.shape == (16, 1, 3, 32, 32)
    assert len(conv) == len(rebal) == math.ceil(len(labels) / 16)
    assert yr.float().mean() > y.float().mean()  # the reversed sampler favours the tail (high labels)
    assert sum(len(y) for _, y in train_eval) == len(labels) and sum(len(y) for _, y in test) == 30
    assert conv.view_kinds() == ["standard", "simclr"] and rebal.view_kinds() == ["standard"]
