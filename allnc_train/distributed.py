"""Training across processes: ``torchrun`` + DistributedDataParallel, as small hooks for the loop.

Launch (one process per GPU; on CPU the gloo backend, e.g. for CI)::

    torchrun --nproc-per-node 4 -m allnc_train.cli --config cifar10_lt_r100_allnc --out runs/c10_r100_allnc
    torchrun --nproc-per-node 4 -m allnc_train.cli --out runs/c10_r100_allnc --resume

Every helper here is the identity on one process, so a plain run is untouched. With N > 1 processes:

- the process group comes from torchrun's environment (``WORLD_SIZE`` > 1): nccl with one CUDA device
  per local rank, gloo on the CPU; a group the caller already initialised is used as it is;
- ``optim.batch_size`` stays the *global* batch: each rank takes batch_size / N per step;
- every rank draws the same global index sequence from its sampler's (seed, stream, epoch) generator
  (instance, class-balanced, square-root and reversed alike) and takes ``indices[rank::N]``, padded by
  wrapping round so that every rank has the same number of batches; step i's ranks together see
  the single-process batch i;
- the loss goes through DistributedDataParallel (gradients averaged over ranks); logged losses are
  averaged over ranks; running statistics (BatchNorm, P2P class means, HyCon prototypes) are rank 0's,
  broadcast at each forward (DDP's ``broadcast_buffers``) and again before evaluation;
- evaluation: each rank runs a contiguous block of the evaluation sets; accuracies are merged with
  ``all_reduce`` of per-class counts; features are gathered to rank 0 in rank order, which writes the
  same single-file dump (same sample order) as a one-process run, so ``nctools track`` reads it;
- rank 0 alone writes checkpoints, run.json and dumps (atomically, as always); all ranks meet at a
  barrier after each epoch's writes;
- rank 0 alone checks and locks the run directory (:mod:`allnc_train.rundir`) and tells every rank
  the outcome (``from_main``), so a refused run ends on every rank at once.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler, Subset

from .evaluate import accuracy_by_group as local_accuracy_by_group

# ---------------------------------------------------------------------------------------------
# Process group and ranks
# ---------------------------------------------------------------------------------------------

def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself on one process): a decision rank 0 made
    alone, e.g. whether the run directory is free. Collective: every rank must call it."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    index = int(os.environ.get("LOCAL_RANK", rank() % max(torch.cuda.device_count(), 1)))
    if index >= torch.cuda.device_count():
        # torchrun --nproc-per-node larger than the GPUs this node shows: say so instead of CUDA's
        # "invalid device ordinal" traceback.
        raise ValueError(f"process {index} of this node needs GPU {index}, but only {torch.cuda.device_count()} "
                         "GPU(s) are visible; start no more processes per node than GPUs, or set run.device=cpu")
    local = torch.device("cuda", index)
    torch.cuda.set_device(local)
    return local


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Yield the device this process trains on; under torchrun join the group first (and leave it after).

    Single process (no ``WORLD_SIZE`` > 1, no group initialised): ``device`` as given, nothing else.
    """
    created = False
    if not (dist.is_available() and dist.is_initialized()) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.type == "cuda":
            device = _local_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # env:// from torchrun
        created = True
    elif is_distributed():
        device = _local_device(device)
    try:
        yield device
    finally:
        if created:
            dist.destroy_process_group()


def describe() -> dict:
    """What run.json's environment records about the processes ({} for a single process)."""
    return {"world_size": world_size(), "backend": dist.get_backend()} if is_distributed() else {}


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Data: sharded samplers and evaluation blocks
# ---------------------------------------------------------------------------------------------

class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s strided share ``indices[rank::world]`` of ``base``'s per-epoch sequence.

    The sequence is padded (wrapping round to its start) to a multiple of ``world``, so every rank
    gets ``ceil(len(base) / world)`` indices; interleaving the ranks' shares gives back the base
    sequence, followed by the padding. ``set_epoch`` is passed on to ``base``.
    """

    def __init__(self, base: Sampler[int], rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}.")
        self.base, self.rank, self.world = base, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.world)

    def draw(self) -> torch.Tensor:
        """This rank's share of the epoch as an int64 CPU tensor (the base's ``draw()`` where it has one)."""
        idx = self.base.draw() if hasattr(self.base, "draw") else torch.as_tensor(list(self.base), dtype=torch.int64)
        total = len(self) * self.world
        while len(idx) and len(idx) < total:  # wrap round to a multiple of world
            idx = torch.cat([idx, idx[: total - len(idx)]])
        return idx[self.rank:: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())


def shard_sampler(sampler: Sampler[int]) -> Sampler[int]:
    """This rank's share of ``sampler`` (the sampler itself on one process)."""
    return ShardedSampler(sampler, rank(), world_size()) if is_distributed() else sampler


def block(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``; the blocks in rank order cover it once."""
    return range(rank * n // world, (rank + 1) * n // world)


def shard_dataset(dataset: Dataset) -> Dataset:
    """This rank's contiguous block of an evaluation set (the set itself on one process)."""
    if not is_distributed():
        return dataset
    return Subset(dataset, block(len(dataset), rank(), world_size()))


def local_batch_size(batch_size: int) -> int:
    """Per-rank batch for a global ``optim.batch_size``."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"optim.batch_size {batch_size} is the global batch and must be divisible by the "
                         f"{world} processes.")
    return batch_size // world


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class _LossForward(nn.Module):
    """The run's objective as a module's forward, so DistributedDataParallel sees one forward (and syncs
    gradients in the backward) per step, however many model methods the loss calls."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch):
        return self.objective.loss(self.model, batch)


def wrap(model: nn.Module, objective, device: torch.device) -> nn.Module | None:
    """The loss forward wrapped in DistributedDataParallel, or None on one process (plain loop)."""
    if not is_distributed():
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_LossForward(model, objective), device_ids=ids, output_device=None if ids is None
                                   else ids[0])


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics, class means, prototypes)."""
    if is_distributed():
        for buf in model.buffers():
            moved = buf.to(_comm_device())
            dist.broadcast(moved, src=0)
            buf.copy_(moved)


# ---------------------------------------------------------------------------------------------
# Merging results
# ---------------------------------------------------------------------------------------------

def mean_over_ranks(sums: dict) -> dict:
    """Scalar tensors averaged over ranks (the same dict on one process)."""
    if not is_distributed():
        return sums
    keys = list(sums)
    stacked = torch.stack([sums[k].float() for k in keys]).to(_comm_device())
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked = stacked / world_size()
    return {k: v for k, v in zip(keys, stacked)}


def accuracy_by_group(logits: torch.Tensor, labels: torch.Tensor, groups: Sequence[str]) -> dict[str, float | None]:
    """``evaluate.accuracy_by_group`` over the samples of every rank (its own result on one process).

    Per-class sample and hit counts are summed with ``all_reduce``; accuracy = 100 * hits / samples,
    the same float64 division the single-process mean does, so the numbers are equal, not close.
    """
    if not is_distributed():
        return local_accuracy_by_group(logits, labels, groups)
    C = len(groups)
    hit = logits.argmax(1) == labels
    counts = torch.stack([torch.bincount(labels, minlength=C), torch.bincount(labels[hit], minlength=C)])
    counts = counts.double().to(_comm_device())  # (2, C): samples, hits per class
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    total, right = counts.cpu()

    def pct(mask: torch.Tensor) -> float | None:
        n = total[mask].sum()
        return 100.0 * (right[mask].sum() / n).item() if n > 0 else None

    out = {"top1": pct(torch.ones(C, dtype=torch.bool))}
    for g in ("many", "medium", "few"):
        out[g] = pct(torch.tensor([x == g for x in groups], dtype=torch.bool))
    return out


def gather_to_main(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Rank 0: each tensor's rows from every rank, concatenated in rank order (on the CPU); other
    ranks: None. On one process the tensors themselves. Every rank must call it with the same tensors
    (same trailing shapes and dtypes); only rank 0 ever holds the whole set."""
    if not is_distributed():
        return tensors
    comm, world, me = _comm_device(), world_size(), rank()
    rows = torch.tensor([len(tensors[0])], dtype=torch.int64, device=comm)
    every = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(every, rows)
    rows_of = [int(r.item()) for r in every]
    if me != 0:
        if rows_of[me]:
            for tag, t in enumerate(tensors):
                dist.send(t.contiguous().to(comm), dst=0, tag=tag)
        return None
    parts: list[list[torch.Tensor]] = [[t.cpu()] for t in tensors]
    for src in range(1, world):
        if not rows_of[src]:
            continue
        for tag, t in enumerate(tensors):
            buf = torch.empty((rows_of[src], *t.shape[1:]), dtype=t.dtype, device=comm)
            dist.recv(buf, src=src, tag=tag)
            parts[tag].append(buf.cpu())
    return tuple(torch.cat(p) for p in parts)
