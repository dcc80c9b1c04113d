"""The claims of the evidence study as one picture (for :mod:`experiments.evidence`, ``--figure``).

:func:`claims_figure` draws every claim that has runs as a row: its per-seed paired differences d (dots),
their mean (a filled diamond when the claim holds, a cross when it fails, a hollow diamond when it is open
or pending) and, from two seeds on, the 95 % Student-t interval of the mean (a bar). One panel per unit
(degrees from the simplex angle, NC1, NC3, NC4 mismatch, accuracy points), since the claims' d are not
comparable across units. A claim is claimed in the direction d > 0: it holds when its whole bar lies right
of the zero line. The colour says what the claim is measured on; a claim whose measured quantity a loss of
ours optimises (``optimised by`` in RESULTS.md) is grey and marked, because it is a check of the code, not
evidence. Like :mod:`experiments.paper_figures` it builds a ``matplotlib.figure.Figure`` and writes nothing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from experiments.paired_stats import interval, verdict
from nctools.io.atomic import atomic_write

__all__ = ["claims_figure", "save_figure"]

# What a claim is measured on -> its colour; the circular ones are drawn grey whatever they are on.
ON_COLOUR = {"test": "tab:blue", "train, sample centre": "tab:green", "train": "tab:orange", "accuracy": "black"}
CIRCULAR_COLOUR = "0.6"
# The mean's marker by verdict (shape, size, filled), so that the shape tells a verdict without reading the bar
# against the zero line.
MARKER = {"holds": ("D", 6, True), "fails": ("X", 8, True), "open": ("D", 6, False), "pending": ("D", 6, False)}
UNITS = ("degrees", "NC1", "NC3", "NC4 mismatch", "accuracy points", "accuracy")


def _panels(pairs: Sequence[tuple[Any, list[float]]]) -> dict[str, list[tuple[Any, list[float]]]]:
    """{unit: [(claim, d)]}, the units in :data:`UNITS` order, the claims in the order given."""
    panels: dict[str, list[tuple[Any, list[float]]]] = {}
    for claim, d in pairs:
        panels.setdefault(claim.measure.unit, []).append((claim, d))
    order = {u: i for i, u in enumerate(UNITS)}
    return dict(sorted(panels.items(), key=lambda kv: order.get(kv[0], len(order))))


def claims_figure(pairs: Sequence[tuple[Any, list[float]]], title: str = "") -> Figure:
    """The per-seed differences d, their mean and 95 % interval, of each (claim, d) of ``pairs``
    (:func:`experiments.evidence.claim_differences`: a claim has ``key``, ``on``, ``circular`` and
    ``measure.unit``); raises ValueError when ``pairs`` is empty (an empty or unrelated results CSV)."""
    panels = _panels(pairs)
    if not panels:
        raise ValueError("no claim has a run in this results CSV: nothing to draw")
    heights = [len(rows) + 1.2 for rows in panels.values()]
    fig = Figure(figsize=(8.5, 0.32 * sum(heights) + 1.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (unit, rows) in zip(axes, panels.items()):
        for y, (claim, d) in enumerate(rows):
            colour = CIRCULAR_COLOUR if claim.circular else ON_COLOUR[claim.on]
            ax.plot(d, np.full(len(d), y), "o", ms=3.5, color=colour, alpha=0.45, mec="none")
            if len(d) >= 2:
                mean, low, high = interval(d)
                if math.isfinite(low):
                    ax.plot([low, high], [y, y], "-", lw=2.2, color=colour, solid_capstyle="butt")
            else:
                mean = d[0]
            marker, size, filled = MARKER[verdict(d)]
            ax.plot([mean], [y], marker, ms=size, color=colour, mfc=colour if filled else "white", mew=1.5)
        ax.axvline(0.0, color="0.2", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([c.key + (" *" if c.circular else "") for c, _ in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -0.6)  # the first claim on top
        ax.set_xlabel(f"d = A - B, {unit} (claimed > 0)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    handles = [Line2D([], [], marker="D", ls="-", color=c, label=on) for on, c in ON_COLOUR.items()]
    handles += [Line2D([], [], marker="D", ls="-", color=CIRCULAR_COLOUR, label="* optimised by our losses"),
                Line2D([], [], marker="D", ls="none", color="0.2", label="holds (filled)"),
                Line2D([], [], marker="X", ls="none", color="0.2", ms=8, label="fails (cross)"),
                Line2D([], [], marker="D", ls="none", color="0.2", mfc="white", label="open or pending (hollow)"),
                Line2D([], [], marker="o", ls="none", color="0.2", alpha=0.45, ms=3.5, label="d of each seed")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig: Figure, path: Path) -> list[Path]:
    """``fig`` as a PDF at ``path`` and a PNG twin beside it, each written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for target, extra in ((path.with_suffix(".pdf"), {}), (path.with_suffix(".png"), {"dpi": 130})):
        written.append(atomic_write(target, lambda tmp, extra=extra, fmt=target.suffix[1:]:
                                    fig.savefig(tmp, format=fmt, **extra)))
    return written
