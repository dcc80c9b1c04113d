"""How accumulated state combines: chunk into pass, accumulator into accumulator, process into process.

Each pass declares its state as named per-class tensors, each with its reduction (torchmetrics'
``add_state(..., dist_reduce_fx=...)``). Every reduction is a sum: the order in which chunks, twin
accumulators and processes are combined then changes nothing but float64 rounding, so the data
may be split any way at all (docs/DEFINITIONS.md). Under an initialised ``torch.distributed``
with more than one process the sums are all-reduced; every process must join each collective,
including one that saw no data (it brings zeros).

>>> import torch
>>> spec = StateSpec(Entry("counts", torch.long), Entry("sums", per_feature=True))
>>> total = spec.zeros(3, 2, torch.device("cpu"))
>>> for chunk in ({"counts": torch.tensor([1, 0, 2])}, {"counts": torch.tensor([0, 4, 1])}):
...     total = spec.merge_(total, chunk)
>>> total["counts"].tolist(), tuple(total["sums"].shape)
([1, 4, 3], (3, 2))
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["Entry", "StateSpec", "State", "distributed", "comm_device", "join", "zeros_like"]

State = dict[str, torch.Tensor]
_F64 = torch.float64
# How two copies of an entry combine, locally and across processes (every entry is a sum today).
_MERGE = {"sum": torch.Tensor.add_}
_DIST_OP = {"sum": "SUM"}


@dataclass(frozen=True)
class Entry:
    """One piece of state: (C,) per class, or (C, d) with ``per_feature``, reduced by ``reduction``."""

    name: str
    dtype: torch.dtype = _F64
    per_feature: bool = False
    reduction: str = "sum"

    def __post_init__(self):
        if self.reduction not in _MERGE:
            raise ValueError(f"reduction must be one of {tuple(_MERGE)}, got {self.reduction!r}")


class StateSpec:
    """The declared state of one pass: zeros to start from, merging, and the all-reduce."""

    def __init__(self, *entries: Entry):
        self.entries = entries
        self._by_name = {e.name: e for e in entries}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def zeros(self, num_classes: int, dim: int, device: torch.device) -> State:
        """Fresh state: every entry zero, on ``device``."""
        return {e.name: torch.zeros((num_classes, dim) if e.per_feature else (num_classes,), dtype=e.dtype,
                                    device=device) for e in self.entries}

    def merge_(self, total: State, part: Mapping[str, torch.Tensor]) -> State:
        """Combine ``part`` (a chunk's partial sums, or another accumulator's state) into ``total``,
        in place, on ``total``'s device."""
        for name, value in part.items():
            _MERGE[self._by_name[name].reduction](total[name], value.to(total[name].device))
        return total

    def all_reduce(self, state: State, device: torch.device) -> State:
        """The state reduced over processes (a copy), or the state itself in one process."""
        if not distributed():
            return state
        dist, comm = torch.distributed, comm_device(device)
        out = {}
        for name, value in state.items():
            reduced = value.to(comm, copy=True)
            dist.all_reduce(reduced, op=getattr(dist.ReduceOp, _DIST_OP[self._by_name[name].reduction]))
            out[name] = reduced.to(value.device)
        return out


def zeros_like(state: State) -> State:
    """Zero state of the same entries (a twin's starting point)."""
    return {name: torch.zeros_like(value) for name, value in state.items()}


def distributed() -> bool:
    """Whether sums are to be all-reduced: ``torch.distributed`` is initialised with several processes."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def comm_device(device: torch.device) -> torch.device:
    """Where a collective runs for statistics on ``device``."""
    # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def join(state: State, spec: StateSpec, num_classes: int, dim: int | None, compute_dtype: torch.dtype | None,
         device: torch.device) -> tuple[State, int | None, torch.dtype | None]:
    """The ``(state, dim, compute_dtype)`` this process brings to a reduction: zeros of ``spec`` for
    a process or twin that saw no data, so that it still takes part in the all-reduce (every process
    must); the dimension and product dtype then come from the others. Under ``torch.distributed``
    this is a collective. Raises ``RuntimeError`` when no data was seen at all."""
    if distributed():
        seen_dim, seen_float32 = _seen_by_all(dim, compute_dtype, device)
        if not state and seen_dim > 0:
            dim, compute_dtype = seen_dim, torch.float32 if seen_float32 else _F64
    if not state and dim is not None and (compute_dtype or distributed()):
        compute_dtype = compute_dtype or torch.float32
        state = spec.zeros(num_classes, dim, device)
    if not state:
        raise RuntimeError("no data was seen: call update() first")
    return state, dim, compute_dtype


def _seen_by_all(dim: int | None, compute_dtype: torch.dtype | None, device: torch.device) -> tuple[int, bool]:
    """The largest feature dimension any process knows (0: none) and whether any uses float32 products."""
    dist = torch.distributed
    seen = torch.tensor([dim or 0, int(compute_dtype == torch.float32)], device=comm_device(device))
    dist.all_reduce(seen, op=dist.ReduceOp.MAX)
    return int(seen[0]), bool(int(seen[1]))
