"""Ending a command on a signal or a closed pipe, the same way in ``nctools`` and ``allnc-train``.

- :class:`Interrupted`: a ``KeyboardInterrupt`` that remembers its signal. Inside
  :func:`signals_as_interrupts`, SIGTERM and SIGHUP raise it, so whatever cleans up after Ctrl-C
  (``finally`` blocks, the temporaries of atomic writes, a report's staging folder, the run lock)
  runs for them too, and the last complete checkpoint stays as it was.
- :func:`exit_status`: ``128 + n`` for signal ``n``, as a shell reports a process the signal ended
  (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
- :func:`quiet_broken_pipe`: the reader of stdout went away (``nctools track RUN | head -1``): no
  message, exit ``128 + SIGPIPE``.
- :func:`run_click`: a click command run with all of the above, for a console-script ``main``.

>>> exit_status(Interrupted(15)), exit_status(KeyboardInterrupt())
(143, 130)
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["Interrupted", "exit_status", "quiet_broken_pipe", "run_click", "signals_as_interrupts"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_SIGPIPE = getattr(signal, "SIGPIPE", 13)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by signal ``signum`` (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def exit_status(exc: BaseException) -> int:
    """``128 + n`` for an :class:`Interrupted` by signal ``n``; 130 (SIGINT's) for any other interrupt."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT))


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts(signals: Sequence[int] = SIGNALS) -> Iterator[None]:
    """Inside the block, ``signals`` raise :class:`Interrupted` in the main thread (like Ctrl-C).

    Only signals left at their default action are taken over (one ignored under ``nohup``, or handled
    by the caller, is left alone), and the previous handlers are put back when the block ends. Off the
    main thread, where Python cannot set handlers, the block runs unchanged.
    """
    taken = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            if signal.getsignal(sig) == signal.SIG_DFL:
                taken[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, previous in taken.items():
            signal.signal(sig, previous)


def quiet_broken_pipe() -> int:
    """After a ``BrokenPipeError`` on stdout: point stdout at ``/dev/null`` (Python's flush at exit
    would fail again and print "Exception ignored") and return ``128 + SIGPIPE``, without a message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test runner's): nothing to flush
        pass
    return 128 + int(_SIGPIPE)


def run_click(command, args: Sequence[str] | None, prog: str) -> int:
    """Run the click ``command`` on ``args`` (default ``sys.argv[1:]``) and return its exit status.

    As click's own ``main``, but an interrupt (Ctrl-C, SIGTERM, SIGHUP) is one line ``PROG:
    interrupted`` and status ``128 + n`` (click says "Aborted!" and exits with 1, the status of an
    internal error), and a closed stdout ends the command quietly with ``128 + SIGPIPE``.
    """
    import click

    args = list(sys.argv[1:] if args is None else args)
    with signals_as_interrupts():
        try:
            with command.make_context(prog, args) as ctx:
                command.invoke(ctx)
            return 0
        except click.exceptions.Exit as done:  # --help, --version
            return done.exit_code
        except click.ClickException as err:
            err.show()
            return err.exit_code
        except (KeyboardInterrupt, click.Abort) as exc:
            cause = exc.__cause__ if isinstance(exc, click.Abort) else exc
            _say(f"{prog}: interrupted")
            return exit_status(cause if cause is not None else exc)
        except BrokenPipeError:
            return quiet_broken_pipe()


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr gone too: the status says it
        pass
