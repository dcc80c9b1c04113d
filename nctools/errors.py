"""The errors every part of the project shares: one base class for "the input is wrong", and the
helpers that turn any exception into the one sentence a user is shown.

Each package's own errors (``DumpError``, ``SourceError``, the trainer's ``ConfigError``,
``CheckpointError``, ``RunError``) derive from :class:`InputError`, so a command line catches them in
one place and prints them as they are: ``"<file, key or argument>: <problem>."``. A file system
failure stays an ``OSError`` (nctools' ``ReportError`` is one: a report that cannot be written) and
is shown the same way.

>>> one_line(ValueError("a\\n  b"))
'a b'
>>> first_line(RuntimeError("\\nfirst\\nsecond"))
'first'
>>> os_reason(FileNotFoundError(2, "No such file or directory", "/x")), os_reason(ValueError("v"))
('No such file or directory', None)
"""
from __future__ import annotations

import os

__all__ = ["InputError", "describe", "first_line", "one_line", "os_reason"]


class InputError(ValueError):
    """What the user gave, or a file or folder it names, cannot be used: one sentence that names it and
    says what is wrong, fit to show as it is (a command line prints it and exits with status 2)."""


def one_line(err: BaseException) -> str:
    """The exception's whole message on one line (messages may span several), or its type's name."""
    return " ".join(str(err).split()) or type(err).__name__


def first_line(err: BaseException) -> str:
    """The first non-empty line of the exception's message (the gist of a long one), or its type's name."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def describe(err: BaseException) -> str:
    """The exception's type and the first sentence of its message (a library's message may run to
    paragraphs): what a sentence about a file that another library could not read puts in brackets.

    >>> describe(OSError("unexpected end of data. More text follows."))
    'OSError: unexpected end of data'
    """
    lines = str(err).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".")[:200] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def os_reason(err: BaseException) -> str | None:
    """What an ``OSError`` says went wrong, without the paths it names (``strerror``); None otherwise."""
    if not isinstance(err, OSError):
        return None
    if err.strerror:
        return err.strerror
    if len(err.args) == 1 and isinstance(err.args[0], int):  # OSError(errno.ENOSPC)
        return os.strerror(err.args[0])
    return one_line(err)
