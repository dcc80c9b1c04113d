"""Pass 1: per-class counts and float64 sums of the features, hence the class means.

:func:`chunk_sums` turns one chunk into its partial sums (torchmetrics' ``_update``); adding the
partial sums of every chunk (:data:`PASS1`, a sum-reduced state) gives the pass-1 statistics.
The finiteness check of the features rides on these sums: a NaN or Inf anywhere in a chunk makes
its class sums non-finite, so clean data costs no extra scan.
"""
from __future__ import annotations

import torch

from .reducer import Entry, State, StateSpec
from .validation import check_finite

__all__ = ["PASS1", "Scratch", "chunk_sums", "on_device"]

_F64 = torch.float64

PASS1 = StateSpec(Entry("counts", torch.long), Entry("sums", _F64, per_feature=True))


class Scratch:
    """Reusable chunk-sized tensors on one device, by name: fresh chunk-sized allocations cost a
    page fault per 4 KB on every chunk, a sizeable share of pass 2 on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self._tensors: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """A (rows, cols) tensor of ``dtype`` (contents undefined), reused while it fits."""
        buf = self._tensors.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype:
            buf = torch.empty(rows, cols, dtype=dtype, device=self.device)
            self._tensors[name] = buf
        return buf[:rows]

    def gather(self, name: str, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``table[index]`` written into the scratch tensor ``name``."""
        out = self.get(name, index.shape[0], table.shape[1], table.dtype)
        return torch.index_select(table, 0, index, out=out)

    def clear(self) -> None:
        self._tensors = {}


def on_device(features: torch.Tensor, labels: torch.Tensor,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk, detached, on the statistics' device, with int64 labels."""
    # Non-blocking only towards a GPU: a non-blocking copy to the CPU may be read too early.
    to_gpu = device.type == "cuda"
    return (features.detach().to(device, non_blocking=to_gpu),
            labels.to(device, non_blocking=to_gpu).long())


def chunk_sums(h: torch.Tensor, y: torch.Tensor, num_classes: int, scratch: Scratch, *,
               check: bool = True, row_offset: int = 0) -> State:
    """The partial pass-1 state of one chunk: ``counts`` (C,) and float64 ``sums`` (C, d).

    ``h`` (n, d) and ``y`` (n,) int64 lie on the scratch's device; ``sums`` is a scratch tensor,
    valid until the next call. With ``check``, non-finite features raise ``ValueError`` naming the
    first bad entry, counted from ``row_offset`` (the rows before this chunk).
    """
    # float64 sums of the float32 values are exact to ~eps64 * sqrt(n) of the features' size:
    # far below any within-class spread, however collapsed (float32 partial sums are not).
    h64 = scratch.get("h64", h.shape[0], h.shape[1], _F64).copy_(h)
    part = scratch.get("part", num_classes, h.shape[1], _F64).zero_().index_add_(0, y, h64)
    if check and not bool(torch.isfinite(part).all()):
        check_finite(h, "features", row_offset=row_offset)
    return {"counts": torch.bincount(y, minlength=num_classes), "sums": part}
