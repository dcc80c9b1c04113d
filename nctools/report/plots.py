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

from .many_classes import MAX_HEATMAP_CLASSES, grouped_classes, pair_cosine_counts, pooled, pooled_note

__all__ = ["Panel", "icpa_heatmaps", "icpa_grid", "per_class_bars", "cosine_histogram", "curves",
           "summary_pages", "group_order", "PAGE_SIZE", "SUMMARY_PAGE_SIZE"]

PAGE_SIZE = (11.0, 5.0)  # inches: every single-row figure, so that report.pdf pages match
_CMAP = "RdBu_r"  # diverging: blue below the optimum (squeezed), red above it
_MEANS_COLOUR, _ROWS_COLOUR = "tab:blue", "tab:orange"
_GROUP_COLOURS = {"many": "tab:green", "medium": "tab:olive", "few": "tab:red"}
_GROUP_RANK = {"many": 0, "medium": 1, "few": 2}
GROUP_BOUNDARY = "group_boundary"  # the gid of the lines between groups on a heatmap
GROUP_AXIS = "group_names"  # the gid of the secondary axis naming the groups


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


def _heatmap(ax, matrix: np.ndarray, norm: Normalize, title: str, names: Sequence[str] | None,
             blocks: Sequence[tuple[str, int, int]] = ()):
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
    _mark_groups(ax, blocks)
    ax.set_title(title, fontsize=10)  # the callers pass it through literal()
    return image


def _group_blocks(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """Contiguous runs of one group in ``groups``: (name, first index, index past the last).

    >>> _group_blocks(["many", "many", "medium", "few", "few"])
    [('many', 0, 2), ('medium', 2, 3), ('few', 3, 5)]
    """
    blocks: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        if blocks and blocks[-1][0] == g:
            blocks[-1] = (g, blocks[-1][1], i + 1)
        else:
            blocks.append((g, i, i + 1))
    return blocks


def _mark_groups(ax, blocks: Sequence[tuple[str, int, int]]) -> None:
    """A line between consecutive group blocks (on both axes) and the group names above the columns."""
    if not blocks:
        return
    for _, start, _ in blocks[1:]:
        ax.axhline(start - 0.5, color="black", lw=1.2, gid=GROUP_BOUNDARY)
        ax.axvline(start - 0.5, color="black", lw=1.2, gid=GROUP_BOUNDARY)
    top = ax.secondary_xaxis("top")
    top.set_xticks([(start + end - 1) / 2 for _, start, end in blocks],
                   [literal(f"{name} ({end - start})") for name, start, end in blocks], fontsize=8)
    top.tick_params(length=0)
    top.set_gid(GROUP_AXIS)


def group_order(groups: Sequence[str] | None, counts: Sequence[float] | None) -> np.ndarray | None:
    """Class indices by group (many, medium, few), then by training count, largest first (ties by index);
    None without groups. Groups come from the training counts, so this is the order by count.

    >>> group_order(["few", "many", "medium", "many"], [5, 150, 50, 300]).tolist()
    [3, 1, 2, 0]
    """
    if groups is None:
        return None
    rank = [_GROUP_RANK.get(str(g), len(_GROUP_RANK)) for g in groups]
    size = np.zeros(len(rank)) if counts is None else -np.nan_to_num(np.asarray(counts, dtype=float))
    return np.lexsort((np.arange(len(rank)), size, np.asarray(rank)))


_ORDER_NOTE = "classes ordered by training count, largest first; lines split the many / medium / few groups"


def _arranged(icpa_means, icpa_classifier, groups, counts, class_names):
    """The two angle matrices as drawn, the group blocks, the class names in that order and the notes.

    With ``groups`` the classes are ordered by group and training count (``counts``); above
    :data:`MAX_HEATMAP_CLASSES` classes each matrix is pooled (a block of rows at a time); the diagonal
    is blank."""
    c = icpa_means.shape[0]
    order = group_order(groups, counts) if groups is not None and len(groups) == c else None
    blocks = _group_blocks([str(groups[i]) for i in order]) if order is not None else []
    notes = [_ORDER_NOTE] if order is not None else []
    if c > MAX_HEATMAP_CLASSES:
        means, rows = pooled(icpa_means, order), None if icpa_classifier is None else pooled(icpa_classifier, order)
        cells = means.shape[0]
        blocks = [(name, round(start * cells / c), round(end * cells / c)) for name, start, end in blocks]
        return means, rows, blocks, None, [*notes, pooled_note(c, cells)]
    means, rows = _off_diagonal(_as_numpy(icpa_means)), _as_numpy(icpa_classifier)
    rows = None if rows is None else _off_diagonal(rows)
    if order is not None:
        means = means[np.ix_(order, order)]
        rows = None if rows is None else rows[np.ix_(order, order)]
        class_names = None if class_names is None else [class_names[i] for i in order]
    return means, rows, blocks, class_names, notes


def icpa_heatmaps(icpa_means, icpa_classifier, optimum: float, class_names: Sequence[str] | None = None,
                  title: str | None = None, groups: Sequence[str] | None = None,
                  counts: Sequence[float] | None = None) -> Figure:
    """ICPA of centred means | classifier rows (degrees), colour centred on the ETF optimum.

    With ``groups`` (the many / medium / few name per class) the classes are ordered by group and by
    training count (``counts``), largest first, with lines between the groups and their names on top.
    Above :data:`MAX_HEATMAP_CLASSES` classes each matrix is pooled into that many cells a side (the
    mean angle of the pairs in a cell), read a block of rows at a time, and the figure says so."""
    means, rows, blocks, class_names, notes = _arranged(icpa_means, icpa_classifier, groups, counts, class_names)
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    axes = fig.subplots(1, 2)
    norm = _icpa_norm([means, rows], optimum)
    image = _heatmap(axes[0], means, norm, "centred class means", class_names, blocks)
    if rows is None:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no classifier in the input", ha="center", va="center")
    else:
        _heatmap(axes[1], rows, norm, "classifier rows", class_names, blocks)
    fig.colorbar(image, ax=list(axes), label=f"angle (degrees); ETF optimum {optimum:.2f}", shrink=0.9)
    fig.suptitle(literal(title or "Inter-class pairwise angles (ICPA)"))
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8)
    return fig


def icpa_grid(runs: Sequence[tuple], optimum: float,
              class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Runs x {means, classifier rows} ICPA heatmaps on one colour scale. ``runs``: tuples (label, means,
    rows) or (label, means, rows, groups, counts); with groups, each run's classes are ordered and split
    by its own many / medium / few groups, as in :func:`icpa_heatmaps`."""
    shown, notes = [], []
    for label, means, rows, *grouping in runs:
        groups, counts = grouping or (None, None)
        m, w, blocks, names, run_notes = _arranged(means, rows, groups, counts, class_names)
        shown.append((label, m, w, blocks, names))
        notes += [n for n in run_notes if n not in notes]
    norm = _icpa_norm([m for _, a, b, _, _ in shown for m in (a, b)], optimum)
    fig = Figure(figsize=(8.0, 3.6 * len(shown) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(shown), 2))
    image = None
    for (label, means, rows, blocks, names), (ax_m, ax_w) in zip(shown, axes):
        label = label if len(label) <= 28 else "..." + label[-25:]  # keep long run paths from eating the axes
        image = _heatmap(ax_m, means, norm, literal(f"{label}: means"), names, blocks)
        if rows is None:
            ax_w.axis("off")
        else:
            _heatmap(ax_w, rows, norm, literal(f"{label}: classifier"), names, blocks)
    fig.colorbar(image, ax=axes.ravel().tolist(), label=f"angle (degrees); ETF optimum {optimum:.2f}", shrink=0.6)
    fig.suptitle(literal(title or "ICPA at the last epoch"))
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8)
    return fig


def per_class_bars(per_class, class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Norms of centred means and classifier rows, and self-duality cosines, per class by training size."""
    table = per_class.copy()
    size_col = "train_count" if "train_count" in table else "count"
    table = table.sort_values(size_col, ascending=False, kind="stable")
    grouped = len(table) > MAX_HEATMAP_CLASSES
    if grouped:  # one bar per run of classes of neighbouring size: a bar per class would be a blur
        table, ticks = grouped_classes(table, size_col)
    else:
        names = [class_names[c] if class_names is not None else str(c) for c in table["class"]]
        ticks = [f"{_tick(n)} ({int(k)})" for n, k in zip(names, table[size_col])]
    x = np.arange(len(table))
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
    every = max(1, len(x) // 25)  # at most about 25 labels an axis
    for ax in (ax_norm, ax_dual):
        ax.set_xticks(x[::every], ticks[::every], rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("classes by rank of size (mean of each bar's classes; training samples)" if grouped
                      else "class (training samples)")
    fig.suptitle(literal(title or "Per-class norms and self-duality against class size"))
    if grouped:
        fig.supxlabel(f"{len(per_class)} classes grouped into {len(table)} bars of neighbouring training size",
                      fontsize=8)
    return fig


def cosine_histogram(icpa_means, icpa_classifier, num_classes: int, title: str | None = None) -> Figure:
    """Histogram of pairwise cosines of centred means and of classifier rows, with the ETF's -1/(C-1)."""
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(-1, 1, 41)
    ax.hist(bins[:-1], bins=bins, weights=pair_cosine_counts(icpa_means, bins), alpha=0.6, color=_MEANS_COLOUR,
            label="centred class means")
    if icpa_classifier is not None:
        ax.hist(bins[:-1], bins=bins, weights=pair_cosine_counts(icpa_classifier, bins), alpha=0.6,
                color=_ROWS_COLOUR, label="classifier rows")
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



# --------------------------------------------------------------------------- the summary page

SUMMARY_PAGE_SIZE = (8.27, 11.69)  # inches: A4 portrait, the first page of report.pdf
_MARGIN = 0.6 * 72  # points
_STATUS_WORDS = {
    "complete_minority_collapse": ("Complete minority collapse: the few-shot means and classifier rows are squeezed",
                                   "tab:red"),
    "classifier_minority_collapse": ("Minority collapse of the classifier: the few-shot rows are squeezed",
                                     "tab:red"),
    "feature_minority_collapse": ("Minority collapse of the features: the few-shot means are squeezed", "tab:red"),
    "no_minority_collapse": ("No minority collapse: the few-shot classes keep near-optimal angles", "tab:green"),
    "withheld": ("Verdict withheld: these data cannot carry a verdict on minority collapse", "0.35"),
}
# style: (font size, family, weight, indent in points, space before in points)
_STYLES = {
    "title": (14, "sans-serif", "bold", 0, 0),
    "verdict": (11, "sans-serif", "bold", 0, 4),
    "heading": (10.5, "sans-serif", "bold", 0, 9),
    "text": (8.5, "sans-serif", "normal", 10, 1),
    "code": (7.5, "monospace", "normal", 10, 0),
    "table_head": (7.5, "monospace", "bold", 10, 4),
}
_CHAR_EM = {"sans-serif": 0.62, "monospace": 0.61}  # widest average advance per font size, to wrap safely


def _wrap(text: str, style: str, width_pt: float, hang: str = "") -> list[str]:
    """``text`` cut into lines that fit ``width_pt`` in ``style`` (a hanging indent on the later lines)."""
    import textwrap

    size, family, _, indent, _ = _STYLES[style]
    chars = max(20, int((width_pt - indent) / (size * _CHAR_EM[family])))
    if style in ("code", "table_head") and len(text) <= chars:
        return [text]  # keep the table's alignment
    return textwrap.wrap(text, chars, subsequent_indent=hang, break_on_hyphens=False) or [""]


class _TextPages:
    """Lines of text laid out from the top of A4 pages; a new page starts when one is full."""

    def __init__(self, title: str):
        self.title, self.figures, self.y = title, [], 0.0
        self.width, self.height = (v * 72 for v in SUMMARY_PAGE_SIZE)

    def _page(self) -> Figure:
        if not self.figures or self.y > self.height - _MARGIN:
            self.figures.append(Figure(figsize=SUMMARY_PAGE_SIZE))
            self.y = _MARGIN
            if len(self.figures) > 1:
                self.add(f"{self.title} (continued)", "heading", 0)
        return self.figures[-1]

    def add(self, text: str, style: str, space: float | None = None, colour: str = "black", hang: str = "") -> None:
        size, family, weight, indent, before = _STYLES[style]
        lines = _wrap(text, style, self.width - 2 * _MARGIN, hang)
        step = size * 1.3
        self.y += before if space is None else space
        if self.figures and self.y + step * len(lines) > self.height - _MARGIN \
                and step * (len(lines) + 2) < self.height - 2 * _MARGIN:
            self.y = self.height  # a paragraph is not split over two pages when it fits on the next one
        for line in lines:
            if self.figures and self.y + step > self.height - _MARGIN:
                self.y = self.height  # full: the next line opens a page
            fig = self._page()
            fig.text((_MARGIN + indent) / self.width, 1 - self.y / self.height, literal(line), va="top",
                     ha="left", fontsize=size, family=family, weight=weight, color=colour)
            self.y += step


def summary_pages(verdict: dict | None, sections, notes: Sequence[str], provenance: Sequence[str],
                  options: dict, title: str = "Neural collapse report") -> list[Figure]:
    """The pages that open report.pdf: the verdict and its reasons, the summary table, the notes and
    where the numbers come from, as text on A4 portrait pages (one unless the text is long).

    ``sections``: (title, column titles, rows of (label, cell texts)), as the terminal table groups them;
    ``provenance``: lines naming the input; ``options``: the options the numbers were computed with."""
    pages = _TextPages(title)
    pages.add(title, "title")
    status = (verdict or {}).get("status")
    words, colour = _STATUS_WORDS.get(status, (f"Verdict: {status}" if status else "No verdict", "0.35"))
    pages.add(words, "verdict", colour=colour)
    if status:
        pages.add(f"status: {status}", "code", space=2)
    for reason in (verdict or {}).get("reasons", []):
        pages.add(f"- {reason}", "text", hang="  ")
    pages.add("Summary", "heading")
    label_width, column_width = 34, 11
    for name, columns, rows in sections:
        head = f"{name:<{label_width}}" + "".join(f"{c:>{column_width}}" for c in columns)
        pages.add(head.rstrip(), "table_head")
        for label, cells in rows:
            pages.add((f"  {label:<{label_width - 2}}" + "".join(f"{c:>{column_width}}" for c in cells)).rstrip(),
                      "code")
    pages.add("Notes", "heading")
    for note in notes or ["none"]:
        pages.add(f"- {note}" if notes else note, "text", hang="  ")
    pages.add("Source and options", "heading")
    for line in provenance:
        pages.add(line, "text", hang="  ")
    for key, value in options.items():
        pages.add(f"{key}: {value}", "code", hang="    ")
    return pages.figures
