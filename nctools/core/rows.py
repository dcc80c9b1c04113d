"""The interface of a feature matrix that stays on disk: rows are read only when sliced.

``analyze`` reads features one chunk of rows at a time (``features[start:stop]``), so anything
with this interface can be measured without being held in memory; :mod:`nctools.io.rows` has
the readers (a ``.safetensors`` tensor, a folder of shards).
"""
from __future__ import annotations

import torch

__all__ = ["RowSource"]


class RowSource:
    """A read-only (N, d) matrix whose rows are read on demand: ``shape``, ``dtype``,
    ``rows[start:stop]`` -> tensor, ``len(rows)``."""

    shape: tuple[int, int]
    dtype: torch.dtype
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _bounds(self, item) -> tuple[int, int]:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError(f"{type(self).__name__} supports contiguous row slices only, got {item!r}")
        start, stop, _ = item.indices(self.shape[0])
        return start, max(start, stop)

    def __getitem__(self, item) -> torch.Tensor:
        start, stop = self._bounds(item)
        return self.read(start, stop)

    def read(self, start: int, stop: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def materialize(self) -> torch.Tensor:
        """All rows as one in-memory tensor."""
        return self.read(0, self.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"
