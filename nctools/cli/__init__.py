"""The ``nctools`` command line: one module per command, shared options in :mod:`.options`.

Library errors (bad files, bad values) are translated here, at the boundary, into one line on
stderr and exit status 2; anything unexpected exits with 1. Heavy imports (torch, matplotlib,
pandas) happen inside the commands so that ``nctools --help`` is instant.
"""
from __future__ import annotations

import os
import warnings

import click

from .. import __version__
from ..errors import InputError, one_line
from .options import DEBUG_ENV, BadInput, InternalError

__all__ = ["cli", "main"]

# Errors that mean "the input is unusable": the project's own (DumpError, SourceError, ...) are
# InputError; validation errors are ValueError or TypeError, missing or unreadable files OSError.
_BAD_INPUT = (InputError, ValueError, TypeError, OSError)


class _Group(click.Group):
    """A group that turns library exceptions into the CLI's exit codes."""

    def invoke(self, ctx):
        # A library warning is one line on stderr, not a source excerpt; --quiet silences warnings for
        # the command (options._quiet). Both are undone here when the command ends.
        shown = set()

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            text = f"Warning: {one_line(message)}"
            if text not in shown:  # once, however many figures repeat it
                shown.add(text)
                click.echo(text, err=True)

        with warnings.catch_warnings():
            warnings.showwarning = show
            return self._invoke(ctx)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            # One line, like every other bad input, instead of click's usage block.
            where = f"nctools {err.ctx.info_name}" if err.ctx is not None else "nctools"
            raise BadInput(f"{err.format_message()} (see {where} --help)") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # the reader of stdout went away: run_click ends quietly
            raise
        except _BAD_INPUT as err:
            if os.environ.get(DEBUG_ENV):
                raise
            raise BadInput(one_line(err)) from None
        except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit 1
            if os.environ.get(DEBUG_ENV):
                raise
            raise InternalError(f"internal error ({type(err).__name__}: {one_line(err)}); "
                                f"rerun with {DEBUG_ENV}=1 for the traceback and report it") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="nctools")  # the package's, not a distribution look-up
def cli() -> None:
    """Neural-collapse diagnostics for classifiers trained on imbalanced data.

    \b
    nctools demo                              the full report on a bundled real dump
    nctools analyze checkpoint.pt -o report/  metrics table, metrics.json, per_class.csv, figure PDFs
    nctools track runs/cifar10_lt_r100/       per-epoch curves from a run's dumps
    nctools compare runs/ce runs/allnc        the paper's side-by-side figures

    --format json prints one JSON object (command, nctools_version, out, then the
    command's own keys; see docs/CLI.md). Progress bars appear only on a terminal.

    Exit status: 0 success, 2 bad input (one line naming the file and the problem),
    1 internal error (set NCTOOLS_DEBUG=1 for the traceback).
    """


def _register() -> None:
    from .analyze import analyze
    from .compare import compare
    from .demo import demo
    from .track import track

    for command in (analyze, track, compare, demo):
        cli.add_command(command)


_register()


def main(argv=None) -> None:
    """Console-script entry point (``nctools = nctools.cli:main``): exits with the command's status
    (128 + n after a signal, 141 after a closed stdout)."""
    from ..interrupts import run_click

    raise SystemExit(run_click(cli, argv, "nctools"))
