"""Figures of many classes (a 1,000-class ImageNet head, a 50,000-token language-model head): what the
report draws instead of one cell or bar per class, read a block of rows at a time.

Above :data:`MAX_HEATMAP_CLASSES` classes a (C, C) heatmap is pooled into that many cells a side
(the mean angle of each cell's pairs), per-class bars become bars of consecutive classes by size, and
the pairwise-cosine histogram is counted block by block. None of them copies a (C, C) matrix or lists
the C(C-1)/2 pairs, so the report's memory stays near the analysis' own (its two angle matrices).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_HEATMAP_CLASSES", "grouped_classes", "pair_cosine_counts", "pooled", "pooled_note"]

MAX_HEATMAP_CLASSES = 200  # above: heatmaps pooled to this many cells a side, per-class bars grouped


def pooled_note(classes: int, cells: int) -> str:
    return (f"{classes} classes pooled into {cells} x {cells} cells of about {classes / cells:.0f} classes a side "
            "(each cell: the mean angle of its pairs)")


def pooled(matrix, order: np.ndarray | None = None, cells: int = MAX_HEATMAP_CLASSES) -> np.ndarray:
    """The (C, C) ``matrix`` (rows and columns in ``order``) as a (cells, cells) matrix of cell means, the
    diagonal left out; read a block of rows at a time, so no (C, C) copy is ever made.

    >>> m = np.arange(16.0).reshape(4, 4)
    >>> pooled(m, cells=2).tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    c = matrix.shape[0]
    order = np.arange(c) if order is None else np.asarray(order)
    edges = np.linspace(0, c, min(cells, c) + 1).astype(int)
    out = np.full((len(edges) - 1, len(edges) - 1), np.nan)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        rows = matrix[order[lo:hi]]  # (b, C): a tensor and an array both take an index array
        block = rows.detach().cpu().double().numpy() if hasattr(rows, "detach") else np.array(rows, dtype=float)
        block = block[:, order]  # (b, C) in the display order
        block[np.arange(hi - lo), np.arange(lo, hi)] = np.nan  # an angle to itself says nothing
        finite = np.isfinite(block)
        sums = np.add.reduceat(np.where(finite, block, 0.0).sum(0), edges[:-1])
        seen = np.add.reduceat(finite.sum(0), edges[:-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(seen > 0, sums / np.maximum(seen, 1), np.nan)
    return out


def grouped_classes(table, size_col: str) -> tuple:
    """``table`` (sorted by size) as at most :data:`MAX_HEATMAP_CLASSES` rows, the means of consecutive
    classes, the group the most common one; and their tick labels ``ranks a-b (sizes)``."""
    bins = np.arange(len(table)) * MAX_HEATMAP_CLASSES // len(table)
    frame = table.assign(_bin=bins)
    numeric = [col for col in ("mean_norm", "classifier_norm", "self_duality_cos", size_col) if col in frame]
    out = frame.groupby("_bin")[numeric].mean()
    out["group"] = frame.groupby("_bin")["group"].agg(lambda g: g.mode().iloc[0])
    edges = frame.groupby("_bin")[size_col].agg(["max", "min"])
    first = np.searchsorted(bins, out.index.to_numpy())
    last = np.append(first[1:], len(table)) - 1
    ticks = [f"{a + 1}-{b + 1} ({int(hi)}-{int(lo)})" for a, b, hi, lo in zip(first, last, edges["max"], edges["min"])]
    return out.reset_index(drop=True), ticks


def pair_cosine_counts(icpa, bins: np.ndarray) -> np.ndarray:
    """Histogram counts of the pairwise cosines (unordered pairs) in ``icpa``, a block of rows at a time
    (both triangles are read, each pair twice, and the counts halved): no list of the C(C-1)/2 pairs."""
    c = icpa.shape[0]
    counts = np.zeros(len(bins) - 1)
    step = max(1, (1 << 22) // max(c, 1))
    for start in range(0, c, step):
        block = icpa[start:start + step]
        block = block.detach().cpu().double().numpy() if hasattr(block, "detach") else np.array(block, dtype=float)
        block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = np.nan
        values = block[np.isfinite(block)]
        counts += np.histogram(np.cos(np.radians(values)), bins=bins)[0]
    return counts / 2
