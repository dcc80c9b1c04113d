"""Write reports: the terminal table, ``metrics.json``, CSVs and figure PDFs
(docs/DEFINITIONS.md, "Beside the summary").

Nothing partial reaches the output folder: every file of one command is built in a hidden staging
folder and moved into place only once all of them were written (:mod:`nctools.report.staging`).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import keys as K
from ..core.plain import to_plain
from ..io.terminal import escape_control
from .cells import safe_table
from .staging import ReportError, check_out_dir, staged_output

if TYPE_CHECKING:  # pandas is imported where a table is made, to keep `nctools --help` fast
    import pandas as pd

__all__ = ["ReportError", "check_out_dir", "staged_output", "format_summary", "write_analysis", "write_track",
           "write_compare", "analysis_figures", "track_figures", "compare_figures", "compare_table"]


# --------------------------------------------------------------------------- writing files

def _save(fig, folder: Path, stem: str, png: bool) -> list[Path]:
    paths = [folder / f"{stem}.pdf"]
    fig.savefig(paths[0])
    if png:
        paths.append(folder / f"{stem}.png")
        fig.savefig(paths[1], dpi=150)
    return paths


def _save_book(figures: dict[str, Any], path: Path) -> Path:
    """Every figure as one page of a multi-page PDF."""
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for fig in figures.values():
            pdf.savefig(fig)
    return path


def _write_figures(figures: dict[str, Any], folder: Path, png: bool, book: str = "report.pdf",
                   front: Sequence[Any] = ()) -> None:
    """Each figure as its own PDF (and PNG), and all of them in ``book`` after the ``front`` pages."""
    with warnings.catch_warnings():
        # matplotlib warns when placing a legend at loc="best" took over a second: on a loaded machine,
        # not for lack of room. Nothing for the user to do, and it made the command's output depend on load.
        warnings.filterwarnings("ignore", message='Creating legend with loc="best" can be slow')
        for stem, fig in figures.items():
            _save(fig, folder, stem, png)
        _save_book({**{f" front {i}": page for i, page in enumerate(front)}, **figures}, folder / book)


def _check_png(png: bool, figures: bool) -> None:
    """PNGs are copies of the figures: asking for them without figures is a contradiction, not a no-op."""
    if png and not figures:
        raise ValueError("png=True asks for figures and figures=False for none; give one of them")


def _names(folder: Path) -> list[str]:
    """What a staging folder holds, tables first: the list a command reports as written."""
    return sorted((p.name for p in folder.iterdir()), key=lambda n: (n.endswith((".pdf", ".png")), n))


def _write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _plain(value):
    """JSON-safe (NaN -> None) via NCResult's own conversion rules."""
    return to_plain(value)


# --------------------------------------------------------------------------- the summary table

# (section title, column titles, rows of (label, summary keys or the literal "optimum"))
# What discriminates first: the few-shot classes, NC1, cos-Std, NC3; the overall mean pairwise angle of the
# centred means last (centred means sum to zero, which pins that mean near the optimum for almost any model).
_SECTIONS = (
    ("Tail classes  minority collapse", ("means", "classifier", "optimum"), (
        ("tail mean angle (deg)", (K.TAIL_ICPA_MEAN_DEG_MEANS, K.TAIL_ICPA_MEAN_DEG_CLASSIFIER, K.ICPA_OPTIMUM_DEG)),
        ("  sample-weighted centre", (K.TAIL_ICPA_MEAN_DEG_MEANS_SAMPLE_CENTER, None, None)),
        ("tail mean cos(w_c, mu_c)", (None, K.TAIL_NC3_COS_MEAN, None)),
        ("  sample-weighted centre", (None, K.TAIL_NC3_COS_MEAN_SAMPLE_CENTER, None)),
    )),
    ("NC1  within-class variability", ("",), (
        ("nc1  tr(Sw Sb+)/C", (K.NC1,)),
        ("nc1 with class-balanced Sw", (K.NC1_BALANCED,)),
        ("nc1 of the few-shot classes", (K.TAIL_NC1,)),
        ("trace ratio tr(Sw)/tr(Sb)", (K.NC1_TRACE_RATIO,)),
        ("CDNV (mean over pairs)", (K.NC1_CDNV,)),
    )),
    ("NC2  simplex ETF", ("means", "classifier"), (
        ("cos-Std over pairs", (K.NC2_COS_STD_MEANS, K.NC2_COS_STD_CLASSIFIER)),
        ("equinorm (CV of norms)", (K.NC2_EQUINORM_MEANS, K.NC2_EQUINORM_CLASSIFIER)),
        ("max-angle |cos + 1/(C-1)|", (K.NC2_MAXANGLE_MEANS, K.NC2_MAXANGLE_CLASSIFIER)),
        ("ETF error", (K.NC2_ETF_ERROR_MEANS, K.NC2_ETF_ERROR_CLASSIFIER)),
    )),
    ("NC3  self-duality", ("",), (
        ("||W/|W| - M/|M|||^2", (K.NC3_SELF_DUALITY,)),
        ("  sample-weighted centre", (K.NC3_SELF_DUALITY_SAMPLE_CENTER,)),
        ("W-H ETF error", (K.NC3_WH_ETF_ERROR,)),
        ("mean cos(w_c, mu_c - mu_G)", (K.NC3_COS_MEAN,)),
    )),
    ("NC4 and accuracy", ("",), (
        ("NCC mismatch", (K.NC4_NCC_MISMATCH,)),
        ("accuracy (classifier)", (K.ACCURACY,)),
        ("bias collapse ||W mu_G + b||", (K.BIAS_COLLAPSE,)),
    )),
    ("ICPA  degrees", ("means", "classifier", "optimum"), (
        ("min pairwise angle", (K.ICPA_MIN_DEG_MEANS, K.ICPA_MIN_DEG_CLASSIFIER, K.ICPA_OPTIMUM_DEG)),
        ("mean pairwise angle", (K.ICPA_MEAN_DEG_MEANS, K.ICPA_MEAN_DEG_CLASSIFIER, K.ICPA_OPTIMUM_DEG)),
    )),
)
_LABEL_WIDTH, _COLUMN_WIDTH = 32, 12


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_summary(result, header: Sequence[str] = ()) -> str:
    """The readable, grouped metrics table (``-`` for null values), the result's notes, and the verdict
    with its reasons last."""
    s = result.summary
    lines = list(header)
    lines.append(f"{s['num_samples']} samples, {s['num_classes']} classes, dim {s['dim']}, center={s['center']}")
    for title, columns, rows in _section_cells(s):
        lines.append("")
        lines.append((f"{title:<{_LABEL_WIDTH}}" + "".join(f"{c:>{_COLUMN_WIDTH}}" for c in columns)).rstrip())
        for label, cells in rows:
            lines.append(f"  {label:<{_LABEL_WIDTH - 2}}" + "".join(f"{c:>{_COLUMN_WIDTH}}" for c in cells).rstrip())
    if result.notes:
        lines.append("")
        lines += [f"note: {note}" for note in result.notes]
    if result.verdict:
        lines += ["", f"verdict: {verdict_words(result.verdict['status'])}"]
        lines += [f"  - {reason}" for reason in result.verdict["reasons"]]
    # The header and the notes quote the input's metadata and names: shown, never obeyed by the terminal.
    return "\n".join(escape_control(line) for line in lines)


def _section_cells(summary: dict) -> list[tuple[str, tuple[str, ...], list[tuple[str, list[str]]]]]:
    """:data:`_SECTIONS` with each key replaced by its value as shown (``-`` for null, nothing for no key)."""
    def shown(keys: tuple) -> list[str]:
        return ["" if k is None else _number(summary[k]) for k in keys]

    return [(title, columns, [(label, shown(keys)) for label, keys in rows]) for title, columns, rows in _SECTIONS]


def verdict_words(status: str) -> str:
    """A verdict status as words: ``complete_minority_collapse`` -> "complete minority collapse"."""
    return status.replace("_", " ")


# --------------------------------------------------------------------------- nctools analyze


def _grouping(per_class) -> tuple[list, list]:
    """A per-class table's group names and the counts the groups were drawn from (training counts if given)."""
    size = "train_count" if "train_count" in per_class else "count"
    return per_class["group"].tolist(), per_class[size].tolist()


def analysis_figures(result, class_names: Sequence[str] | None = None, label: str = "") -> dict[str, Any]:
    """``{file stem: Figure}`` of one analysis, in report order."""
    from . import plots

    suffix = f" ({label})" if label else ""
    groups, counts = _grouping(result.per_class)
    return {
        "icpa": plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, result.summary[K.ICPA_OPTIMUM_DEG],
                                    class_names, title=f"Inter-class pairwise angles (ICPA){suffix}",
                                    groups=groups, counts=counts),
        "per_class": plots.per_class_bars(result.per_class, class_names,
                                          title=f"Per-class norms and self-duality against class size{suffix}"),
        "cosines": plots.cosine_histogram(result.icpa_means, result.icpa_classifier, result.summary[K.NUM_CLASSES],
                                          title=f"Pairwise cosines{suffix}"),
    }


def front_pages(result, options: dict, source: dict, header: Sequence[str] = (), label: str = "") -> list[Any]:
    """The pages that open report.pdf: the verdict and its reasons, the summary table grouped as
    :func:`format_summary` groups it, the notes, the source (``header``: the lines the command prints
    above its table) and the options."""
    from .plots import summary_pages as pages

    s = result.summary
    cells = _section_cells(s)
    provenance = [f"source: {source.get('path', '-')}", *header]
    if not header:  # the command's header describes the metadata; without it, list the metadata itself
        provenance += [f"{k}: {v}" for k, v in (source.get("metadata") or {}).items() if k != "class_names"]
    provenance.append(f"{s[K.NUM_SAMPLES]} samples, {s[K.NUM_CLASSES]} classes, dim {s[K.DIM]}")
    keep = (K.CENTER, "groups", "squeeze_deg", "class_counts_given", "preprocessing")
    return pages(result.verdict, cells, result.notes, provenance, {k: options[k] for k in keep if k in options},
                 title="Neural collapse report" + (f" ({label})" if label else ""))


def write_analysis(out: Path, result, class_names: Sequence[str] | None, options: dict, source: dict,
                   png: bool = False, label: str = "", header: Sequence[str] = (), figures: bool = True) -> list[str]:
    """metrics.json, per_class.csv, icpa/per_class/cosines PDFs and report.pdf (opening with
    :func:`front_pages`) into ``out``; returns the names of the files written. With ``figures=False``
    the two tables only: drawing is most of the time a report takes on a small dump."""
    _check_png(png, figures)
    metrics = result.to_dict()
    metrics["options"] = {**metrics["options"], **options}
    metrics["source"] = source
    table = result.per_class.copy()
    if class_names is not None:
        table.insert(1, "name", [class_names[c] for c in table["class"]])
    with staged_output(out) as stage:
        _write_json(_plain(metrics), stage / "metrics.json")
        safe_table(table).to_csv(stage / "per_class.csv", index=False)
        if figures:
            front = front_pages(result, {**result.options, **options}, source, header, label)
            _write_figures(analysis_figures(result, class_names, label), stage, png, front=front)
        written = _names(stage)
    return written


# --------------------------------------------------------------------------- nctools track


def _epoch_panel(table, ylabel, columns: dict[str, str], *, logy: bool = False, hline: float | None = None):
    from .plots import Panel

    x = table["epoch"].tolist()
    # No axes title: a one-panel figure's suptitle already says what it shows.
    return Panel("", ylabel, {label: (x, table[col].tolist()) for label, col in columns.items()}, hline=hline,
                 logy=logy)


def track_figures(table, label: str = "") -> dict[str, Any]:
    """One curve figure per quantity over epochs."""
    from .plots import curves

    optimum = table[K.ICPA_OPTIMUM_DEG].iloc[-1] if len(table) else None
    specs = {
        "nc1": ("NC1 within-class variability", "tr(Sw Sb+)/C",
                {"NC1": K.NC1, "class-balanced": K.NC1_BALANCED, "few-shot classes": K.TAIL_NC1}, {"logy": True}),
        "cos_std": ("NC2 cos-Std", "std of pairwise cosines",
                    {"means": K.NC2_COS_STD_MEANS, "classifier": K.NC2_COS_STD_CLASSIFIER}, {}),
        "self_duality": ("NC3 self-duality", "||W/|W| - M/|M|||^2", {"self-duality": K.NC3_SELF_DUALITY}, {}),
        "nc4": ("NC4 nearest-class-centre mismatch", "fraction of samples", {"NC4": K.NC4_NCC_MISMATCH}, {}),
        "tail_icpa": ("Tail ICPA", "mean pairwise angle (degrees)",
                      {"means": K.TAIL_ICPA_MEAN_DEG_MEANS, "classifier": K.TAIL_ICPA_MEAN_DEG_CLASSIFIER},
                      {"hline": optimum}),
        "accuracy": ("Accuracy of the classifier", "fraction correct", {"accuracy": K.ACCURACY}, {}),
    }
    title = f" ({label})" if label else ""
    return {stem: curves([_epoch_panel(table, y, cols, logy=extra.get("logy", False), hline=extra.get("hline"))],
                         "epoch", f"{t}{title}")
            for stem, (t, y, cols, extra) in specs.items()}


def write_track(out: Path, table, label: str = "", png: bool = False, figures: bool = True) -> list[str]:
    """track.csv and the curve PDFs (and report.pdf with every curve; none with ``figures=False``) into
    ``out``; returns the file names."""
    draw = (lambda: track_figures(table, label)) if figures else None
    return _write_table_and_figures(out, table, "track.csv", draw, png)


# --------------------------------------------------------------------------- nctools compare


def compare_figures(tracks, labels: Sequence[str]) -> dict[str, Any]:
    """The paper's side-by-side figures for several runs (``tracks``: :class:`~nctools.report.tracking.RunTrack`)."""
    from .plots import Panel, curves, icpa_grid

    optimum = tracks[0].last.summary[K.ICPA_OPTIMUM_DEG]
    figures = {"icpa_grid": icpa_grid([(lab, t.last.icpa_means, t.last.icpa_classifier, *_grouping(t.last.per_class))
                                       for lab, t in zip(labels, tracks)], optimum, tracks[0].class_names)}

    def over_epochs(key):
        return {lab: (t.table["epoch"].tolist(), t.table[key].tolist()) for lab, t in zip(labels, tracks)}

    figures["cos_std"] = curves([Panel("cos-Std of centred means", "std of pairwise cosines",
                                       over_epochs(K.NC2_COS_STD_MEANS)),
                                 Panel("cos-Std of classifier rows", "std of pairwise cosines",
                                       over_epochs(K.NC2_COS_STD_CLASSIFIER))], "epoch", "NC2 cos-Std")
    figures["self_duality"] = curves([Panel("self-duality", "||W/|W| - M/|M|||^2", over_epochs(K.NC3_SELF_DUALITY)),
                                      Panel("mean cos(w_c, mu_c - mu_G)", "cosine", over_epochs(K.NC3_COS_MEAN))],
                                     "epoch", "NC3 self-duality")
    ratios = {t.imbalance_ratio for t in tracks}
    if None not in ratios and len(ratios) > 1:
        figures["vs_ratio"] = _ratio_figure(tracks, labels)
    return figures


def _ratio_figure(tracks, labels):
    """Last-epoch quantities against the imbalance ratio, one line per method."""
    from .plots import Panel, curves

    groups: dict[str, list] = {}
    for lab, t in zip(labels, tracks):
        groups.setdefault(t.method or "runs", []).append(t)
    panels = []
    for key, title in ((K.NC2_COS_STD_MEANS, "cos-Std of means"), (K.NC2_COS_STD_CLASSIFIER, "cos-Std of rows"),
                       (K.NC3_SELF_DUALITY, "self-duality")):
        lines = {}
        for method, members in groups.items():
            members = sorted(members, key=lambda t: t.imbalance_ratio)
            lines[method] = ([t.imbalance_ratio for t in members], [t.last.summary[key] for t in members])
        panels.append(Panel(title, key, lines, logx=True))
    return curves(panels, "imbalance ratio", "Last epoch against the imbalance ratio")


def compare_table(tracks, labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: label, run directory, method, imbalance ratio, last epoch, summary keys."""
    import pandas as pd

    rows = []
    for lab, t in zip(labels, tracks):
        last = t.table.iloc[-1].to_dict()
        rows.append({"label": lab, "run_dir": str(t.run_dir), "method": t.method,
                     "imbalance_ratio": t.imbalance_ratio, **last})
    return pd.DataFrame(rows)


def write_compare(out: Path, tracks, labels: Sequence[str], png: bool = False, figures: bool = True) -> list[str]:
    """compare.csv (last epoch per run) and the side-by-side figure PDFs (none with ``figures=False``) into
    ``out``; returns the file names."""
    draw = (lambda: compare_figures(tracks, labels)) if figures else None
    return _write_table_and_figures(out, compare_table(tracks, labels), "compare.csv", draw, png)


def _write_table_and_figures(out: Path, table, csv_name: str, draw: Callable[[], dict[str, Any]] | None,
                             png: bool) -> list[str]:
    """One CSV and the figures ``draw()`` makes (none when ``draw`` is None) into ``out``, all or nothing;
    returns the file names."""
    _check_png(png, draw is not None)
    with staged_output(out) as stage:
        safe_table(table).to_csv(stage / csv_name, index=False)
        if draw is not None:
            _write_figures(draw(), stage, png)
        written = _names(stage)
    return written
