"""The inter-class angle matrix of very many classes, made a block of rows at a time when it is read.

A (C, C) float32 angle matrix is 1.6 GB at C = 20,000 and 10 GB at C = 50,000 (a language-model head),
and :class:`~nctools.NCResult` holds two of them. Above :data:`KEEP_ANGLES_UP_TO` classes it holds a
:class:`PairAngles` instead: the unit class vectors, from which any rows of the matrix are computed
when indexed. Everything nctools reads from the matrix (the audit's group angles, the pooled heatmaps,
the cosine histogram) reads it that way, a block of rows at a time.

>>> import torch
>>> from nctools.core.geometry import icpa_degrees, simplex_etf
>>> etf = simplex_etf(5, 8)
>>> angles = PairAngles(etf)
>>> angles.shape, round(float(angles[0, 1]), 4)
((5, 5), 104.4775)
>>> bool(torch.allclose(angles.full(), icpa_degrees(etf)))
True
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["KEEP_ANGLES_UP_TO", "PairAngles"]

# Up to this many classes the angle matrices are made whole (iNaturalist's 8,142 classes: 265 MB each in
# float32); above it they are PairAngles.
KEEP_ANGLES_UP_TO = 8192


class PairAngles:
    """(C, C) angles in degrees between the rows of ``vectors`` (C, d), computed in float64 on indexing.

    Reads like the matrix it stands for: ``shape``, ``len``, ``angles[rows]`` and ``angles[rows, cols]``
    with an int, a slice, an index array or tensor, or a boolean mask; the diagonal is 0, and rows of NaN
    (classes with no samples) give NaN angles. ``full()`` (or ``torch.as_tensor``-style use through
    ``np.asarray``) makes the whole matrix: C * C * 8 bytes.
    """

    def __init__(self, vectors: torch.Tensor):
        if vectors.ndim != 2:
            raise ValueError(f"PairAngles needs (C, d) vectors, got shape {tuple(vectors.shape)}")
        v = vectors.detach().double()
        self._unit = v / v.norm(dim=1, keepdim=True)  # a zero or NaN row gives NaN: its angles are undefined
        self._present = torch.isfinite(v).all(dim=1)  # NaN rows: absent classes, NaN on the diagonal too

    @property
    def shape(self) -> tuple[int, int]:
        n = self._unit.shape[0]
        return (n, n)

    @property
    def device(self) -> torch.device:
        return self._unit.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    def cpu(self) -> PairAngles:
        """The same angles, made on the host (a result's matrices live there, whatever device analysed)."""
        if self.device.type == "cpu":
            return self
        host = PairAngles.__new__(PairAngles)
        host._unit, host._present = self._unit.cpu(), self._present.cpu()
        return host

    def __len__(self) -> int:
        return self._unit.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        cols = None
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"PairAngles takes [rows] or [rows, cols], got {len(key)} indices")
            key, cols = key
        rows = torch.arange(len(self), device=self.device)[_as_index(key, self.device)]
        single = rows.ndim == 0
        block = self._rows(rows.reshape(-1))
        if cols is not None:
            block = block[:, _as_index(cols, self.device)]
        return block[0] if single else block

    def _rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(b, C) angles of the classes ``rows`` to every class."""
        block = (self._unit[rows] @ self._unit.T).clamp_(-1.0, 1.0).arccos_().rad2deg_()
        here = torch.arange(len(rows), device=block.device)
        # cos(v, v) rounds to 1 - eps, an angle of ~1e-6 degrees: the diagonal is exactly 0, NaN when absent
        block[here, rows] = torch.where(self._present[rows], 0.0, float("nan")).to(block.dtype)
        return block

    def full(self) -> torch.Tensor:
        """The whole (C, C) float64 matrix (C * C * 8 bytes)."""
        return self[:]

    def __array__(self, dtype=None, copy=None):
        out = self.full().cpu().numpy()
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        c = len(self)
        return (f"PairAngles({c} x {c} angles in degrees, made a block of rows at a time when indexed; "
                f"full() makes all of them: {c * c * 8 / 2**30:.1f} GiB)")


def _as_index(key, device):
    """A row or column key as torch indexes it (numpy arrays and lists become tensors on ``device``)."""
    if isinstance(key, (np.ndarray, list)):
        return torch.as_tensor(np.asarray(key), device=device)
    if isinstance(key, torch.Tensor):
        return key.to(device)
    return key
