"""Feature matrices that stay on disk: rows are read only when sliced.

``nctools.analyze`` reads its features one chunk of rows at a time (``features[start:stop]``), so
a row source lets it measure dumps larger than memory: a ``.safetensors`` file read slice by
slice, or the ``part-*.safetensors`` shards of one epoch read as one matrix.

>>> import tempfile, torch
>>> from safetensors.torch import save_file
>>> with tempfile.TemporaryDirectory() as tmp:
...     save_file({"features": torch.arange(12.0).reshape(6, 2)}, f"{tmp}/a.safetensors")
...     rows = SafetensorsRows(f"{tmp}/a.safetensors")
...     rows.shape, rows.dtype, rows[4:6].tolist()
((6, 2), torch.float32, [[8.0, 9.0], [10.0, 11.0]])
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from ..core.rows import RowSource

__all__ = ["RowSource", "SafetensorsRows", "ConcatRows", "shard_paths"]


class SafetensorsRows(RowSource):
    """One 2-D tensor of a ``.safetensors`` file, read slice by slice.

    The file is opened for each read, so the pages of a slice are unmapped again right after it
    is copied: resident memory stays at about one chunk, whatever the file's size.
    """

    def __init__(self, path, key: str = "features"):
        self.path, self.key = str(path), key
        with safe_open(self.path, framework="pt", device="cpu") as f:
            part = f.get_slice(key)
            shape = tuple(part.get_shape())
            # An empty slice gives the torch dtype without reading any data.
            self.dtype = part[0:0].dtype if len(shape) == 2 else None
        if len(shape) != 2:
            raise ValueError(f"{key} must be 2-D (num_samples, dim), got shape {shape}")
        self.shape = shape

    def read(self, start: int, stop: int) -> torch.Tensor:
        with safe_open(self.path, framework="pt", device="cpu") as f:
            return f.get_slice(self.key)[start:stop]


class ConcatRows(RowSource):
    """Several row sources (or tensors) stacked along the rows, read lazily."""

    def __init__(self, parts: Sequence):
        if not parts:
            raise ValueError("ConcatRows needs at least one part")
        dims = {p.shape[1] for p in parts}
        dtypes = {p.dtype for p in parts}
        if len(dims) != 1 or len(dtypes) != 1:
            raise ValueError(f"the parts disagree on dim or dtype: dims {sorted(dims)}, "
                             f"dtypes {sorted(map(str, dtypes))}")
        self.parts = list(parts)
        self.offsets = [0]
        for p in self.parts:
            self.offsets.append(self.offsets[-1] + p.shape[0])
        self.shape = (self.offsets[-1], dims.pop())
        self.dtype = dtypes.pop()

    def read(self, start: int, stop: int) -> torch.Tensor:
        pieces = []
        for part, lo, hi in zip(self.parts, self.offsets, self.offsets[1:]):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                pieces.append(part[a - lo:b - lo])
        if not pieces:
            return torch.empty(0, self.shape[1], dtype=self.dtype)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def shard_paths(directory: Path) -> list:
    """The ``part-*.safetensors`` shards of one dump folder, in name order."""
    return sorted(Path(directory).glob("part-*.safetensors"))
