"""The evidence study's curves over epochs, drawn from the committed tracks: the paper's Fig. 3 (cos-Std of
the class means) and Fig. 4 (self-duality) for the study, with NC1, on the training and the test features.

    python -m experiments.evidence_curves --csv docs/results/cifar10_lt.csv \\
        --figure docs/figures/curves_cifar10_lt.pdf
    python -m experiments.evidence_curves --csv docs/results/cifar10_lt.csv --methods allnc,allnc_no_p2p,ce@100 ...

Each row of the results CSV names its run's track and test track (``nctools track`` on the run's epoch dumps,
kept in ``docs/results/tracks``; see :mod:`experiments.paper_tables`). :func:`curves_figure` draws one line per
method: the mean over the seeds that have tracks, with their range as a band, so that a seed-to-seed spread
is seen beside a difference between methods. Top row: the training features (class-mean centre, what P2P
optimises); bottom row: the test features, which no loss saw. Rows without tracks (runs recorded before the
tracks were kept) are counted in the legend, never drawn.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from experiments.cifar10_lt_summary import LABELS
from experiments.paper_tables import read_rows

REPO = Path(__file__).resolve().parents[1]
# (track column, y label, log scale): NC1, Fig. 3's cos-Std of the means, Fig. 4's self-duality
PANELS = (("nc1", "NC1", True), ("nc2_cos_std_means", "cos-Std, class means", False),
          ("nc3_self_duality", "NC3 (self-duality)", False))
SPLITS = (("track", "training features"), ("test_track", "test features"))
DEFAULT_METHODS = ("ce@1", "ce@100", "la@100", "etf@100", "allnc@100")

Key = tuple[str, int]  # (method, beta) as in the CSV


def parse_method(text: str) -> Key:
    """``allnc`` or ``allnc@100`` -> ("allnc", 100); beta 100 unless given."""
    method, _, beta = text.partition("@")
    try:
        return method, int(beta) if beta else 100
    except ValueError:
        raise ValueError(f"{text!r}: give a method as NAME or NAME@BETA, e.g. ce@1") from None


def load_tracks(csv_path: Path, methods: Sequence[Key]) -> tuple[dict, dict[Key, int]]:
    """({(method, beta): {split column: {seed: track table}}}, {(method, beta): rows without tracks})."""
    import pandas as pd

    tracks: dict[Key, dict[str, dict[int, object]]] = {}
    untracked: dict[Key, int] = {}
    for row in read_rows(csv_path):
        key = (row["method"], int(float(row["beta"])))
        if key not in methods:
            continue
        if not row.get("track"):
            untracked[key] = untracked.get(key, 0) + 1
            continue
        for column, _ in SPLITS:
            if row.get(column):  # REPO / an absolute path is that path
                tracks.setdefault(key, {}).setdefault(column, {})[int(row["seed"])] = pd.read_csv(REPO / row[column])
    return tracks, untracked


def curves_figure(tracks: Mapping[Key, Mapping[str, Mapping[int, object]]], methods: Sequence[Key],
                  untracked: Mapping[Key, int] | None = None, title: str = "") -> Figure:
    """A grid, rows = split (training | test features), columns = :data:`PANELS`; per method the mean over
    its seeds (line) and their range (band). ``methods`` fixes the order and colours."""
    untracked = untracked or {}
    fig = Figure(figsize=(4.0 * len(PANELS), 3.0 * len(SPLITS) + 0.8), layout="constrained")
    axes = np.array(fig.subplots(len(SPLITS), len(PANELS), squeeze=False))
    colours = [f"C{i}" for i in range(10)]
    # one legend entry per method: the seeds with a track in either split
    labels = {key: _label(key, len(set().union(*(set(s) for s in tracks[key].values()))), untracked)
              for key in methods if key in tracks}
    for i, (column, split_name) in enumerate(SPLITS):
        for j, (metric, ylabel, log) in enumerate(PANELS):
            ax = axes[i, j]
            drawn = False
            for k, key in enumerate(methods):
                seeds = tracks.get(key, {}).get(column, {})
                tables = [t for t in seeds.values() if metric in t]
                if not tables:
                    continue
                epochs = sorted(set.intersection(*(set(t["epoch"]) for t in tables)))
                values = np.array([t.set_index("epoch").loc[epochs, metric].to_numpy(float) for t in tables])
                ax.plot(epochs, values.mean(axis=0), color=colours[k % 10], lw=1.6, label=labels[key])
                if len(tables) > 1:
                    ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colours[k % 10],
                                    alpha=0.2, lw=0)
                drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no track", ha="center", va="center", transform=ax.transAxes)
            elif log:
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(ylabel, fontsize=10)
            if j == 0:
                ax.set_ylabel(split_name, fontsize=9)
            if i == len(SPLITS) - 1:
                ax.set_xlabel("epoch")
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle(title or "Over epochs: mean over seeds (line) and their range (band)", fontsize=11)
    return fig


def _label(key: Key, seeds: int, untracked: Mapping[Key, int]) -> str:
    name = LABELS.get(key, f"{key[0]} (beta {key[1]})")
    more = f"; {untracked[key]} without a track" if untracked.get(key) else ""
    return f"{name} ({seeds} seed{'s' if seeds != 1 else ''}{more})"


def main(argv: list[str] | None = None) -> int:
    from experiments.evidence_figure import save_figure

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("docs/results/cifar10_lt.csv"))
    p.add_argument("--figure", type=Path, required=True, help="a .pdf path; a .png twin is written beside it")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated NAME[@BETA] of the CSV (beta 100 unless given) [{','.join(DEFAULT_METHODS)}]")
    args = p.parse_args(argv)
    if args.figure.suffix != ".pdf":
        p.error(f"--figure {args.figure}: give a .pdf path (a .png twin is written beside it)")
    try:
        methods = [parse_method(m) for m in args.methods.split(",") if m]
        tracks, untracked = load_tracks(args.csv, methods)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {args.csv}: {err}", file=sys.stderr)
        return 1
    if not tracks:
        print(f"error: {args.csv}: no row of {args.methods} has a track yet", file=sys.stderr)
        return 1
    save_figure(curves_figure(tracks, methods, untracked, title=f"{args.csv}: over epochs, mean and range over "
                              "seeds"), args.figure)
    print(f"wrote {args.figure} and {args.figure.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
