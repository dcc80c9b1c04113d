"""Figure builders: data in, a matplotlib ``Figure`` out (docs/DEFINITIONS.md, "Beside the summary").

Nothing here writes files or shows windows: figures are made with ``matplotlib.figure.Figure``
directly (no pyplot state, no GUI backend), so they are safe in scripts, tests and threads;
:mod:`nctools.report.writer` saves them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["Panel", "icpa_heatmaps", "icpa_grid", "per_class_bars", "cosine_histogram", "curves",
           "PAGE_SIZE"]

PAGE_SIZE = (11.0, 5.0)  # inches: every single-row figure, so that report.pdf pages match
_CMAP = "RdBu_r"  # diverging: blue below the optimum (squeezed), red above it
_MEANS_COLOUR, _ROWS_COLOUR = "tab:blue", "tab:orange"
_GROUP_COLOURS = {"many": "tab:green", "medium": "tab:olive", "few": "tab:red"}


def literal(text) -> str:
    r"""``text`` as matplotlib must receive it to be drawn as written: every ``$`` escaped, so that
    user text (class names, run labels, file names) is never parsed as mathtext.

    >>> print(literal(r"$\frac{$ costs $5"))
    \$\frac{\$ costs \$5
    """
    return str(text).replace("$", r"\$")


_TICK_CHARS = 32  # longer class names are shortened on the axes (the CSV and JSON keep them whole)


def _tick(name) -> str:
    """A class name as a tick label: drawn as written, shortened when very long so that the axes
    keep their room."""
    text = str(name)
    return literal(text if len(text) <= _TICK_CHARS else text[:_TICK_CHARS - 3] + "...")


def _as_numpy(matrix) -> np.ndarray | None:
    if matrix is None:
        return None
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().double().numpy()
    return np.array(matrix, dtype=float)


def _off_diagonal(matrix: np.ndarray) -> np.ndarray:
    m = matrix.copy()
    np.fill_diagonal(m, np.nan)  # a vector's angle to itself says nothing
    return m


def _icpa_norm(matrices: Sequence[np.ndarray | None], optimum: float) -> Normalize:
    """One symmetric colour range centred on the optimum, shared by every matrix drawn together,
    so that equal colours mean equal angles across panels."""
    devs = [np.nanmax(np.abs(m - optimum)) for m in matrices if m is not None and np.isfinite(m).any()]
    span = max([1.0, *devs])
    return Normalize(vmin=optimum - span, vmax=optimum + span)


def _heatmap(ax, matrix: np.ndarray, norm: Normalize, title: str, names: Sequence[str] | None):
    import matplotlib

    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad="0.85")  # grey diagonal and absent classes
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, interpolation="nearest")
    c = matrix.shape[0]
    ticks = np.arange(c)
    labels = [_tick(n) for n in names] if names is not None and len(names) == c else [str(i) for i in ticks]
    if c <= 20:
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
    if c <= 12:  # few enough cells to print every angle
        dark = 0.6 * (norm.vmax - norm.vmin) / 2  # white text where the colour is deep
        centre = (norm.vmax + norm.vmin) / 2
        for i in range(c):
            for j in range(c):
                if np.isfinite(matrix[i, j]):
                    colour = "white" if abs(matrix[i, j] - centre) > dark else "black"
                    ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", fontsize=6, color=colour)
    ax.set_title(title, fontsize=10)  # the callers pass it through literal()
    return image


def icpa_heatmaps(icpa_means, icpa_classifier, optimum: float, class_names: Sequence[str] | None = None,
                  title: str | None = None) -> Figure:
    """ICPA of centred means | classifier rows (degrees), colour centred on the ETF optimum."""
    means, rows = _off_diagonal(_as_numpy(icpa_means)), _as_numpy(icpa_classifier)
    rows = None if rows is None else _off_diagonal(rows)
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    axes = fig.subplots(1, 2)
    norm = _icpa_norm([means, rows], optimum)
    image = _heatmap(axes[0], means, norm, "centred class means", class_names)
    if rows is None:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no classifier in the input", ha="center", va="center")
    else:
        _heatmap(axes[1], rows, norm, "classifier rows", class_names)
    fig.colorbar(image, ax=list(axes), label=f"angle (degrees); ETF optimum {optimum:.2f}", shrink=0.9)
    fig.suptitle(literal(title or "Inter-class pairwise angles (ICPA)"))
    return fig


def icpa_grid(runs: Sequence[tuple[str, object, object]], optimum: float,
              class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Runs x {means, classifier rows} ICPA heatmaps on one colour scale (``runs``: (label, means, rows))."""
    mats = [(label, _off_diagonal(_as_numpy(m)), None if w is None else _off_diagonal(_as_numpy(w)))
            for label, m, w in runs]
    norm = _icpa_norm([m for _, a, b in mats for m in (a, b)], optimum)
    fig = Figure(figsize=(8.0, 3.6 * len(mats) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(mats), 2))
    image = None
    for (label, means, rows), (ax_m, ax_w) in zip(mats, axes):
        label = label if len(label) <= 28 else "..." + label[-25:]  # keep long run paths from eating the axes
        image = _heatmap(ax_m, means, norm, literal(f"{label}: means"), class_names)
        if rows is None:
            ax_w.axis("off")
        else:
            _heatmap(ax_w, rows, norm, literal(f"{label}: classifier"), class_names)
    fig.colorbar(image, ax=axes.ravel().tolist(), label=f"angle (degrees); ETF optimum {optimum:.2f}", shrink=0.6)
    fig.suptitle(literal(title or "ICPA at the last epoch"))
    return fig


def per_class_bars(per_class, class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Norms of centred means and classifier rows, and self-duality cosines, per class by training size."""
    table = per_class.copy()
    size_col = "train_count" if "train_count" in table else "count"
    table = table.sort_values(size_col, ascending=False, kind="stable")
    x = np.arange(len(table))
    names = [class_names[c] if class_names is not None else str(c) for c in table["class"]]
    ticks = [f"{_tick(n)} ({int(k)})" for n, k in zip(names, table[size_col])]
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    ax_norm, ax_dual = fig.subplots(1, 2)
    has_rows = "classifier_norm" in table
    width = 0.4 if has_rows else 0.8
    ax_norm.bar(x - (width / 2 if has_rows else 0), table["mean_norm"], width, color=_MEANS_COLOUR,
                label="||mu_c - mu_G||")
    if has_rows:
        ax_norm.bar(x + width / 2, table["classifier_norm"], width, color=_ROWS_COLOUR, label="||w_c||")
    ax_norm.set_ylabel("norm")
    ax_norm.set_title("norms by class (largest class first)", fontsize=10)
    ax_norm.legend(fontsize=8)
    if has_rows:
        colours = [_GROUP_COLOURS.get(g, "0.5") for g in table["group"]]
        ax_dual.bar(x, table["self_duality_cos"], 0.8, color=colours)
        ax_dual.axhline(1.0, color="0.3", lw=0.8, ls="--")
        handles = [Patch(color=c, label=g) for g, c in _GROUP_COLOURS.items() if g in set(table["group"])]
        ax_dual.legend(handles=handles, fontsize=8, loc="lower left")
        cosines = table["self_duality_cos"].to_numpy(dtype=float)
        cosines = cosines[np.isfinite(cosines)]  # NaN where a class or its row has no direction
        ax_dual.set_ylim(min(-0.05, float(cosines.min()) - 0.05 if cosines.size else -0.05), 1.05)
    else:
        ax_dual.text(0.5, 0.5, "no classifier in the input", ha="center", va="center", transform=ax_dual.transAxes)
    ax_dual.set_ylabel("cos(w_c, mu_c - mu_G)")
    ax_dual.set_title("self-duality by class (1 = aligned)", fontsize=10)
    for ax in (ax_norm, ax_dual):
        ax.set_xticks(x, ticks, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("class (training samples)")
    fig.suptitle(literal(title or "Per-class norms and self-duality against class size"))
    return fig


def _pair_cosines(icpa) -> np.ndarray:
    m = _as_numpy(icpa)
    values = m[np.triu_indices(m.shape[0], k=1)]
    return np.cos(np.radians(values[np.isfinite(values)]))


def cosine_histogram(icpa_means, icpa_classifier, num_classes: int, title: str | None = None) -> Figure:
    """Histogram of pairwise cosines of centred means and of classifier rows, with the ETF's -1/(C-1)."""
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(-1, 1, 41)
    ax.hist(_pair_cosines(icpa_means), bins=bins, alpha=0.6, color=_MEANS_COLOUR, label="centred class means")
    if icpa_classifier is not None:
        ax.hist(_pair_cosines(icpa_classifier), bins=bins, alpha=0.6, color=_ROWS_COLOUR, label="classifier rows")
    target = -1.0 / (num_classes - 1)
    ax.axvline(target, color="k", ls="--", lw=1, label=f"ETF: -1/(C-1) = {target:.3f}")
    ax.set_xlabel("pairwise cosine")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.suptitle(literal(title or "Pairwise cosines"))
    return fig


@dataclass
class Panel:
    """One axes of line curves: ``lines`` maps a label to (x, y) sequences."""

    title: str
    ylabel: str
    lines: dict[str, tuple[Sequence[float], Sequence[float | None]]] = field(default_factory=dict)
    hline: float | None = None  # a reference value (an optimum), drawn dashed
    logy: bool = False
    logx: bool = False


def curves(panels: Sequence[Panel], xlabel: str, title: str) -> Figure:
    """Panels of line curves side by side (metrics over epochs, or over the imbalance ratio)."""
    fig = Figure(figsize=(max(PAGE_SIZE[0] / 2, 4.0 * len(panels)), PAGE_SIZE[1]), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels):
        # Legend entries are passed explicitly: a run label that starts with "_" is still shown
        # (matplotlib drops such labels when it collects them itself).
        handles, labels = [], []
        for label, (x, y) in panel.lines.items():
            y = np.array([np.nan if v is None else float(v) for v in y])
            if np.isfinite(y).any():
                (line,) = ax.plot(np.asarray(x, dtype=float), y, marker="o", ms=3, label=literal(label))
                handles.append(line)
                labels.append(literal(label))
        plotted = bool(handles)
        if panel.hline is not None and math.isfinite(panel.hline):
            handles.append(ax.axhline(panel.hline, color="0.3", ls="--", lw=0.8, label="ETF optimum"))
            labels.append("ETF optimum")
        if not plotted:
            ax.text(0.5, 0.5, "not available for these inputs", ha="center", va="center", transform=ax.transAxes)
        elif panel.logy:
            ax.set_yscale("log")
        if panel.logx:
            ax.set_xscale("log")
        ax.set_title(literal(panel.title), fontsize=10)
        ax.set_xlabel(literal(xlabel))
        ax.set_ylabel(literal(panel.ylabel))
        if handles and (len(panel.lines) > 1 or panel.hline is not None):
            ax.legend(handles, labels, fontsize=8)
    fig.suptitle(literal(title))
    return fig

