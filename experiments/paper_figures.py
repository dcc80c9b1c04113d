"""Figures of the AllNC paper that :mod:`nctools.report.plots` does not draw (for
:mod:`experiments.reproduce_paper`).

Like :mod:`nctools.report.plots`, these build a ``matplotlib.figure.Figure`` and write nothing:

- :func:`eta_curves`: the generalised bilateral-branch weight eta(t) = 1 - (t/T)^gamma and 1 - eta(t)
  for several gamma (the paper's Fig. 5b), optionally with the eta a run actually logged;
- :func:`methods_by_ratio`: one column per imbalance ratio, one row per quantity, one line per
  method over epochs (CE on balanced data, CE on long-tailed data, AllNC on long-tailed data: the
  layout of the paper's Figs. 3 and 4).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["eta_curves", "methods_by_ratio"]

Line = tuple[Sequence[float], Sequence[float | None]]
# One fixed style per method slot (order of first appearance): the balanced reference dashed grey, then
# distinct hues; the classifier-only fixes (slots 2, 3 in the paper figures) dotted, so that colour and dash
# both tell the methods apart in print.
_STYLE = {0: dict(color="0.3", ls="--"), 1: dict(color="tab:red"), 2: dict(color="tab:orange", ls=":"),
          3: dict(color="tab:green", ls=":"), 4: dict(color="tab:blue"), 5: dict(color="tab:purple", ls="-."),
          6: dict(color="tab:brown", ls="-.")}


def eta_curves(total_epochs: int, gammas: Sequence[float],
               measured: Mapping[str, Line] | None = None, title: str | None = None) -> Figure:
    """eta(t) (left) and 1 - eta(t) (right) against the epoch t = 0 .. T for each gamma.

    ``measured`` maps a label to (epochs, eta values) read from a run's log; those are drawn as
    markers on the left panel so that the schedule the trainer used can be checked against the formula.
    """
    from allnc_train.schedules import gbbn_eta

    t = np.linspace(0, total_epochs, 201)
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    for gamma in gammas:
        eta = np.array([gbbn_eta(x, total_epochs, gamma) for x in t])
        left.plot(t, eta, label=f"gamma = {gamma:g}")
        right.plot(t, 1 - eta, label=f"gamma = {gamma:g}")
    for label, (x, y) in (measured or {}).items():  # hollow, so the formula's curve shows through
        left.plot(np.asarray(x, float), np.asarray(y, float), ls="none", marker="o", ms=4, mfc="none", mew=0.8,
                  color="k", label=label)
    left.set_title("eta(t): conventional branch", fontsize=10)
    right.set_title("1 - eta(t): re-balancing branch", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch t")
        ax.set_ylim(-0.03, 1.03)
    left.set_ylabel("weight")
    # One legend below both panels (the curves cross every corner of the panels).
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(title or f"GBBN schedule eta(t) = 1 - (t/T)^gamma, T = {total_epochs}")
    return fig


def methods_by_ratio(panels: Mapping[tuple[str, float], dict[str, Line]], rows: Sequence[str],
                     ratios: Sequence[float], title: str, xlabel: str = "epoch",
                     hlines: Mapping[str, float] | None = None, logy: Sequence[str] = ()) -> Figure:
    """A grid: row = quantity (``rows``, used as y label), column = imbalance ratio; each cell maps a
    method label to (x, y). Lines keep their colour across cells (by order of first appearance);
    ``None`` values are gaps."""
    width = max(5.0, 3.6 * len(ratios))
    fig = Figure(figsize=(width, 3.0 * len(rows) + 0.6), layout="constrained")
    axes = np.array(fig.subplots(len(rows), len(ratios), squeeze=False))
    order: dict[str, int] = {}
    for (row, ratio), lines in panels.items():
        for label in lines:
            order.setdefault(label, len(order))
    for i, row in enumerate(rows):
        for j, ratio in enumerate(ratios):
            ax = axes[i, j]
            lines = panels.get((row, ratio), {})
            plotted = False
            for label, (x, y) in lines.items():
                yy = np.array([np.nan if v is None else float(v) for v in y])
                if np.isfinite(yy).any():
                    ax.plot(np.asarray(x, float), yy, label=label, lw=1.5,
                            **_STYLE.get(order[label], {}))
                    plotted = True
            if hlines and row in hlines:
                ax.axhline(hlines[row], color="0.5", lw=0.8, ls=":")
            if not plotted:
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
            elif row in logy:
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(f"imbalance ratio {ratio:g}", fontsize=10)
            if j == 0:
                ax.set_ylabel(row, fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel(xlabel)
    if order:  # one legend below the grid, where it covers no curve
        handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
        # as many columns as fit the figure's width (about 1.6 inch per entry), so no label is cut
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=max(1, min(len(handles), int(width // 1.6))), fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig
