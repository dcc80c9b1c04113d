"""Opening files that a stranger may have made, without harm: a path is checked to be a regular
file before anything opens it, and a ``.pt`` file is read only with ``torch.load(weights_only=True)``.

Both take the error to raise (``error(path, problem)``, ``DumpError`` by default), so the trainer's
checkpoints and the sources' state dicts report in their own error type; the message is always one
sentence naming the file.
"""
from __future__ import annotations

import errno
import os
import pickle
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import torch

from nctools.errors import describe
from nctools.io.dump_contents import dump_error

__all__ = ["check_regular_file", "load_pt", "refused_global"]

_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))


def check_regular_file(path: Path, error: Callable[[Path, str], Exception] = dump_error, *,
                       directory: str = "is a directory") -> os.stat_result:
    """The ``stat`` of ``path`` (symbolic links followed) when it is a regular file; otherwise
    ``error(path, problem)`` is raised, before anything opens it: opening a named pipe would block
    for ever, and a device (a link to /dev/zero, say) never ends.

    >>> check_regular_file(Path("/dev/null"))
    Traceback (most recent call last):
    ...
    nctools.io.dump_contents.DumpError: /dev/null: is not a regular file (it is a character device).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(path, f"is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise error(path, "no such file") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error(path, "is a symbolic link loop") from None
        raise error(path, f"cannot be read ({describe(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(path, directory)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), None)
        raise error(path, "is not a regular file" + (f" (it is {kind})" if kind else ""))
    return info


# torch.load's errors on damaged bytes are many and undocumented: these are the types that
# truncated and bit-flipped .pt files (zip and legacy) raised when fuzzed (tests/nctools/io/test_dump.py).
_PT_DECODE_ERRORS = (
    RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, AssertionError,
    struct.error, OSError,
)


def load_pt(path: Path, error: Callable[[Path, str], Exception] = dump_error, *, map_location="cpu",
            refusal: str = "it is not a plain tensor dict", expected: str = "a dict") -> dict:
    """The top-level dict of a ``.pt`` file, read with ``torch.load(weights_only=True)`` so that a
    file from a stranger cannot run code; every problem is ``error(path, one sentence)``.

    ``refusal`` says what a refused pickle is, ``expected`` what the file should hold instead of
    whatever non-dict it holds. The one safe ``.pt`` reader of the project (dumps, state dicts,
    the trainer's checkpoints).
    """
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only=True refuses every global outside torch's allow-list, which is exactly
        # what a pickle that runs code (or holds arbitrary objects) needs. Damaged bytes stop the
        # same unpickler, and are told apart by what it says.
        reason = refused_global(err)
        if reason is None:
            raise error(path, f"not a readable {path.suffix or '.pt'} file (truncated or corrupt)") from err
        raise error(path, f"could not be loaded safely: {refusal} "
                          f"(torch.load with weights_only=True refused it: {reason})") from err
    except _PT_DECODE_ERRORS as err:
        raise error(path, f"truncated or corrupt ({describe(err)})") from err
    except MemoryError as err:
        raise error(path, "too large to read into memory") from err
    if not isinstance(obj, dict):
        raise error(path, f"holds a {type(obj).__name__}, not {expected}")
    return obj


# What torch's weights_only unpickler says when it refuses something the pickle asks for (a global,
# a class to build, a function to call), as opposed to bytes it cannot decode at all.
_REFUSALS = ("GLOBAL ", "Can only create new object", "Trying to call reduce", "Can only build",
             "must be imported to load")


def refused_global(err: pickle.UnpicklingError) -> str | None:
    """The line of a ``torch.load(weights_only=True)`` refusal that names what the file asked for
    (a global, a class, a function), or ``None`` when the unpickler stopped on bytes that are not a
    valid pickle at all (a truncated or corrupt file, random bytes)."""
    # torch's message is several paragraphs of advice; the line naming the refused global is the
    # part that says what the file tried to do.
    for line in str(err).splitlines():
        if any(marker in line for marker in _REFUSALS):
            return line.strip().rstrip(".")
    return None
