"""Options shared by several commands (defined once), and the error types of the CLI boundary.

Exit codes: 0 success, 2 bad input (one line naming the file and the problem), 1 an unexpected
internal error (one line; the traceback only with ``NCTOOLS_DEBUG=1``).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

DEBUG_ENV = "NCTOOLS_DEBUG"


class BadInput(click.ClickException):
    """A problem with what the user gave: one line on stderr, exit status 2."""

    exit_code = 2


class InternalError(click.ClickException):
    """A bug or an unforeseen failure: one line on stderr, exit status 1."""

    exit_code = 1


def _parse_groups(ctx, param, value: str) -> tuple[float, float]:
    try:
        many, few = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers MANY,FEW such as 100,20, got {value!r}") from None
    if not 0 <= few <= many:
        raise click.BadParameter(f"expected 0 <= FEW <= MANY, got MANY={many:g}, FEW={few:g}")
    return many, few


def parse_rgb(ctx, param, value: str | None) -> tuple[float, float, float] | None:
    """``--mean`` / ``--std``: three finite numbers R,G,B (a std above 0)."""
    if value is None:
        return None
    import math

    example = "0.485,0.456,0.406" if param.name == "mean" else "0.229,0.224,0.225"
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise click.BadParameter(f"expected three numbers R,G,B such as {example}, got {value!r}")
    if param.name == "std" and min(numbers) <= 0:
        raise click.BadParameter(f"expected three numbers above 0, got {value!r}")
    return numbers


class OutDir(click.ParamType):
    """``--out``: a folder for the report, checked before any work (not empty, not the file system
    root, not an existing file); a refusal is one sentence naming the path, exit 2."""

    name = "directory"

    def convert(self, value, param, ctx) -> Path:
        from ..report.writer import check_out_dir

        # The raw text is checked: Path("") would silently mean the current folder.
        return check_out_dir(value if isinstance(value, Path) else str(value))


def out_option(default: str, help_text: str) -> Callable:
    return click.option("--out", "-o", type=OutDir(), default=default, show_default=True, metavar="DIR",
                        help=help_text)


center_option = click.option(
    "--center", type=click.Choice(["class", "sample"]), default="class", show_default=True,
    help="Global centre of the class means: 'class' = unweighted mean of class means (the simplex "
         "geometry under imbalance), 'sample' = sample-weighted mean (Papyan et al.).")
groups_option = click.option(
    "--groups", default="100,20", show_default=True, callback=_parse_groups, metavar="MANY,FEW",
    help="Many / medium / few split by training count: many-shot > MANY, few-shot < FEW, medium in between.")
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where to compute: 'auto' uses CUDA when available.")
png_option = click.option("--png", is_flag=True, help="Also write each figure as a PNG (150 dpi).")
no_figures_option = click.option(
    "--no-figures", is_flag=True,
    help="Write the tables only, no figure PDFs: for batch audits, where drawing takes most of the time.")


def with_figures(png: bool, no_figures: bool) -> bool:
    """Whether a command draws its figures; --png asks for figures, so it cannot go with --no-figures."""
    if png and no_figures:
        raise click.UsageError("--png asks for figures and --no-figures for none; give one of them")
    return not no_figures


# What each command prints with --format json (nctools.cli.output; docs/CLI.md, "JSON output").
_JSON_HELP = {
    "analyze": "the metrics table, or one JSON object: command, nctools_version, out and the keys of metrics.json",
    "track": "the key columns per epoch, or one JSON object: command, nctools_version, out, run, epochs (the rows "
             "of track.csv) and skipped",
    "compare": "one row per run, or one JSON object: command, nctools_version, out and runs (the rows of "
               "compare.csv)",
}
_JSON_HELP["demo"] = _JSON_HELP["analyze"]


def format_option(command: str) -> Callable:
    """``--format table|json``, its help saying what ``command`` prints either way."""
    return click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
                        help=f"What to print on stdout: {_JSON_HELP[command]}.")


def _quiet(ctx, param, value: bool) -> bool:
    """Under --quiet nothing but errors reaches stderr: library warnings (numpy, matplotlib's missing
    glyphs, torch) are silenced for the rest of the command. The command group restores the warning
    filters when the command ends (see ``nctools.cli._Group``)."""
    if value:
        import warnings

        warnings.simplefilter("ignore")
    return value


quiet_option = click.option("--quiet", "-q", is_flag=True, callback=_quiet,
                            help="No progress bars, status lines or warnings on stderr (results still go to "
                                 "stdout, errors to stderr).")
_SPLIT_HELP = {
    "analyze": "For a checkpoint or a state dict, the split to extract features on [default: train]; for a dump, "
               "a check of the split it holds (a test split takes its groups from --class-counts or the dump's "
               "training counts).",
    "track": "Track RUN_DIR/dumps/ (train) or RUN_DIR/dumps-test/ (test) [default: train].",
    "compare": "Compare the runs' dumps/ (train) or dumps-test/ (test) [default: train].",
}


def show_progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: not with --quiet, not into a pipe or a log file
    (tqdm's own ``disable=None`` rule, applied once here for every bar of a command)."""
    import sys

    return not quiet and sys.stderr.isatty()


def status(message: str, quiet: bool) -> None:
    """A status line on stderr (stdout is for results)."""
    if not quiet:
        click.echo(message, err=True)


def analysis_options(name: str) -> Callable:
    """The options the analysing commands share (--split ... --quiet), in one place; ``name`` (analyze,
    track or compare) picks the help of the two whose meaning depends on the command."""
    split_option = click.option("--split", type=click.Choice(["train", "test"]), default=None, help=_SPLIT_HELP[name])
    options = (split_option, center_option, groups_option, device_option, png_option, no_figures_option,
               format_option(name), quiet_option)

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
