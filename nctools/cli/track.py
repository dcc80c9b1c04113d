"""``nctools track RUN_DIR``: the summary keys over epochs, from a run's dumps."""
from __future__ import annotations

from pathlib import Path

import click

from ..io.terminal import escape_control
from .options import OutDir, analysis_options, status, with_figures
from .output import json_object, records
from .runs_common import format_table, read_runs

SHORT_HELP = "Per-epoch metrics and curves of one run."
SKIPPED = "skipped.txt"  # with --skip-bad: one line per epoch left out, "<file>: <problem>"


def default_out(run_dir: Path, split: str | None) -> Path:
    """Where a track goes without --out: one folder per split, so that tracking the test dumps never
    replaces the training track.

    >>> default_out(Path("runs/a"), None).as_posix(), default_out(Path("runs/a"), "test").as_posix()
    ('runs/a/nctools-track', 'runs/a/nctools-track-test')
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return Path(run_dir) / ("nctools-track-test" if split == "test" else "nctools-track")


@click.command(short_help=SHORT_HELP)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=OutDir(), default=None, metavar="DIR",
              help="Folder for track.csv and the curve PDFs (created) [default: RUN_DIR/nctools-track, with "
                   "--split test RUN_DIR/nctools-track-test].")
@click.option("--skip-bad", is_flag=True,
              help="Leave out an unreadable or unusable epoch dump (a warning names it, skipped.txt lists it) "
                   "instead of stopping at it.")
@analysis_options("track")
def track(run_dir, out, skip_bad, split, center, groups, device, png, no_figures, fmt, quiet) -> None:
    """Analyse every epoch dump of RUN_DIR, in epoch order, one at a time.

    Reads RUN_DIR/dumps/epoch_*.safetensors (or .pt, .npz; RUN_DIR/dumps-test with --split test;
    or the epoch files in RUN_DIR itself) and writes into --out (RUN_DIR/nctools-track, or
    RUN_DIR/nctools-track-test for the test split): track.csv (one row per epoch,
    the summary keys of metrics.json), one curve PDF each for NC1, cos-Std of means and rows
    (cos_std.pdf), self-duality, NC4, tail ICPA and accuracy, and report.pdf with all of them.

    The number in a dump's file name is its epoch. Every epoch must have the classes and the
    feature dimension of the first. A dump that cannot be read or analysed stops the track
    (exit status 2), or with --skip-bad is left out and listed in skipped.txt.

    \b
    Example:
      nctools track runs/cifar10_lt_r100_allnc/ --png
    """
    from .. import report

    figures = with_figures(png, no_figures)
    (run,) = read_runs([run_dir], split=split, center=center, groups=groups, device=device, quiet=quiet,
                       skip_bad=skip_bad)
    out = out if out is not None else default_out(run_dir, split)
    written = report.write_track(out, run.table, label=Path(run_dir).name, png=png, figures=figures)
    _write_skipped(out / SKIPPED, run.skipped)
    if run.skipped:
        written.append(SKIPPED)
    if fmt == "json":
        about = {"path": str(run_dir), "split": split or "train", "method": run.method,
                 "imbalance_ratio": run.imbalance_ratio}
        skipped = [{"file": str(file), "problem": problem} for file, problem in run.skipped]
        click.echo(json_object("track", out, {"run": about, "epochs": records(run.table), "skipped": skipped}))
    else:
        skipped = f", {len(run.skipped)} skipped" if run.skipped else ""
        click.echo(escape_control(f"nctools track: {run_dir} ({len(run.table)} epochs{skipped}, method "
                                  f"{run.method or '-'}, imbalance ratio "
                                  f"{run.imbalance_ratio if run.imbalance_ratio is not None else '-'})"))
        click.echo(format_table(run.table))
    status(f"wrote {out}/ ({', '.join(written)})", quiet)


def _write_skipped(path: Path, skipped: list) -> None:
    """The epochs left out, one ``<file>: <problem>`` line each (written atomically); no file, and
    no stale one from an earlier track, when none was."""
    from ..io.atomic import atomic_write

    if skipped:
        text = "".join(f"{file}: {problem}\n" for file, problem in skipped)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    elif path.is_file():
        path.unlink()
