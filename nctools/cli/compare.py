"""``nctools compare RUN_DIR...``: the paper-style side-by-side figures of several runs."""
from __future__ import annotations

from pathlib import Path

import click

from ..core import keys as K
from .options import analysis_options, out_option, status, with_figures
from .output import json_object, records
from .runs_common import format_table, read_runs


def _labels(run_dirs, given):
    if given is None:
        names = [Path(r).resolve().name for r in run_dirs]
        if len(set(names)) < len(names):  # same folder names (a/run, b/run): add the parent folder
            names = [f"{Path(r).resolve().parent.name}/{Path(r).resolve().name}" for r in run_dirs]
        return names
    labels = [part.strip() for part in given.split(",")]
    if len(labels) != len(run_dirs) or not all(labels):
        raise click.BadParameter(f"expected {len(run_dirs)} comma-separated labels (one per run), got {given!r}",
                                 param_hint="--labels")
    return labels


SHORT_HELP = "Side-by-side figures of several runs."


@click.command(short_help=SHORT_HELP)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labels", metavar="A,B,...", help="Names for the runs in the figures [default: folder names].")
@out_option("nctools-compare", "Folder for compare.csv and the figure PDFs (created).")
@analysis_options("compare")
def compare(run_dirs, labels, out, split, center, groups, device, png, no_figures, fmt, quiet) -> None:
    """Compare runs side by side: ICPA grids, cos-Std and self-duality curves.

    Each RUN_DIR holds dumps/epoch_*.safetensors (as written by allnc-train). Writes into --out:
    compare.csv (the last epoch's summary keys per run), icpa_grid.pdf (runs x {means,
    classifier rows} at the last epoch, one colour scale centred on the ETF optimum),
    cos_std.pdf and self_duality.pdf (one line per run over epochs), and, when the runs'
    imbalance ratios (from their dump metadata) differ, vs_ratio.pdf (the last epoch against
    the ratio, one line per method); report.pdf holds every figure.

    \b
    Example:
      nctools compare runs/ce_balanced runs/ce_lt runs/allnc_lt --labels CE-balanced,CE-LT,AllNC-LT
    """
    from .. import report

    figures = with_figures(png, no_figures)
    names = _labels(run_dirs, labels)
    tracks = read_runs(run_dirs, split=split, center=center, groups=groups, device=device, quiet=quiet)
    classes = {t.last.summary[K.NUM_CLASSES] for t in tracks}
    if len(classes) > 1:
        raise click.BadParameter(f"the runs have different numbers of classes ({sorted(classes)}); compare "
                                 "runs of one dataset", param_hint="RUN_DIR")
    written = report.write_compare(out, tracks, names, png=png, figures=figures)
    table = report.compare_table(tracks, names)
    if fmt == "json":
        click.echo(json_object("compare", out, {"runs": records(table)}))
    else:
        click.echo(f"nctools compare: {len(tracks)} runs, last epoch of each")
        click.echo(format_table(table, {"label": "run", "imbalance_ratio": "ratio", "epoch": "epoch",
                                        K.NC1: "NC1", K.NC2_COS_STD_MEANS: "cosStd(M)",
                                        K.NC2_COS_STD_CLASSIFIER: "cosStd(W)", K.NC3_SELF_DUALITY: "NC3",
                                        K.TAIL_ICPA_MEAN_DEG_MEANS: "tailICPA(M)",
                                        K.TAIL_ICPA_MEAN_DEG_CLASSIFIER: "tailICPA(W)", K.ACCURACY: "acc"}))
    status(f"wrote {out}/ ({', '.join(written)})", quiet)
