"""The run directory as a resource: checked before training, locked for the life of a run, tidied
after a killed writer, and every failed write turned into one sentence.

The discipline itself (``make_run_folder``, ``check_writable``, ``RunLock``, the stale temporaries,
no writes through links) is :mod:`nctools.io.run_folder`'s, shared with the callbacks' recorder; this
module adds what is the trainer's own:

- ``make_run_dir``: ``--out`` created (or, with ``--resume``, required), before the first epoch trains.
- ``writing``: a failed write (full disk, permission, read-only) becomes a ``RunError`` naming the
  file; atomic writes leave the last complete epoch intact, so ``--resume`` continues from it. A
  folder inside the run that is a symbolic link is refused before the write.
- ``interrupted``: the one line an interrupted run ends with, saying how to continue it.
- ``claim``: all of that at the start of a run; under torchrun rank 0 does it and every rank learns
  the outcome, so no rank waits for one that gave up.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from nctools.errors import os_reason
from nctools.io import layout
from nctools.io.run_folder import (
    RunFolderError,
    RunLock,
    check_writable,
    make_run_folder,
    refuse_links,
    remove_stale_temporaries,
    stale_temporaries,
)

from . import distributed
from .checkpoint import latest_checkpoint, nothing_to_resume

__all__ = ["RunError", "RunLock", "claim", "interrupted", "make_run_dir", "reason", "remove_stale_temporaries",
           "stale_temporaries", "stopped_by", "writing"]

# What torch.save's C++ writer says when a write fails part-way; it carries no errno.
_TORCH_WRITE_FAILED = re.compile(r"unexpected pos|PytorchStreamWriter failed|file write failed")
_OS_ERROR_IN_TEXT = re.compile(r"I/O error: (?P<reason>.+?) \(os error \d+\)")


class RunError(RunFolderError):
    """A run cannot start, resume or go on (existing or locked run, no checkpoint, config mismatch,
    a failed write); one sentence."""


def make_run_dir(out: Path, resume: bool) -> list[Path]:
    """Create ``out`` (not when resuming) and return the folders this call created, deepest first."""
    if resume and not out.is_dir():
        raise RunError(nothing_to_resume(out))
    return make_run_folder(out)


# ---------------------------------------------------------------------------------------------
# Failed writes
# ---------------------------------------------------------------------------------------------

def reason(exc: BaseException) -> str | None:
    """Why a write failed, in a few words, or None when ``exc`` is not a failed write."""
    if isinstance(exc, OSError):
        text = os_reason(exc)
    elif isinstance(exc, RuntimeError) and _TORCH_WRITE_FAILED.search(str(exc)):
        return "torch.save stopped part-way, as on a full disk"
    elif isinstance(exc, SafetensorError) and _OS_ERROR_IN_TEXT.search(str(exc)):
        text = _OS_ERROR_IN_TEXT.search(str(exc))["reason"]
    else:
        return None
    return text[:1].lower() + text[1:]


@contextmanager
def writing(path: Path, out: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` inside the block into a ``RunError`` naming it.

    The atomic writes have removed their temporary file and left the old files as they were, so the
    run directory holds the last complete epoch and ``--resume`` continues from it.
    """
    try:
        refuse_links(out, path)
    except RunFolderError as exc:
        raise RunError(str(exc)) from None
    try:
        yield
    except Exception as exc:
        why = reason(exc)
        if why is None:
            raise
        raise RunError(f"{path}: cannot write it ({why}); {_resume_hint(out)}") from None


def _resume_hint(out: Path) -> str:
    last = latest_checkpoint(out)
    if last is None:
        return "no epoch is saved yet: fix that and start the run again."
    return f"the run is saved up to epoch {layout.epoch_of(last)}: fix that and continue it with --resume."


def interrupted(out: Path, command: str, config: str | None = None) -> str:
    """The line an interrupted run ends with: how to continue it, or to start it again when no epoch was
    saved (a ``--resume`` would fail then), the paths shell-quoted so the line can be pasted.

    >>> print(interrupted(Path("no such run"), "allnc-train", "c.yaml").partition(": ")[2])
    allnc-train --config c.yaml --out 'no such run'
    """
    out_arg = shlex.quote(str(out))
    if latest_checkpoint(out) is None:
        again = f" --config {shlex.quote(config)}" if config else ""
        return f"interrupted before the first epoch was saved; start it again with: {command}{again} --out {out_arg}"
    return f"interrupted; continue with: {command} --out {out_arg} --resume"


def stopped_by(exc: OSError, out: Path) -> str:
    """The one sentence for an OSError that stopped a run anywhere (reading, writing)."""
    where = exc.filename if exc.filename is not None else out
    return f"{where}: {reason(exc)}; {_resume_hint(out)}"


# ---------------------------------------------------------------------------------------------
# All of it at the start of a run
# ---------------------------------------------------------------------------------------------

@contextmanager
def claim(out: Path, resume: bool) -> Iterator[None]:
    """Hold ``out`` for the run inside the block: checked, locked, tidied (rank 0 alone under torchrun).

    A failure becomes ``RunError`` on every rank at once: rank 0 shares its outcome before any rank
    goes on to the collective set-up, so no rank waits for one that gave up.
    """
    lock, created, problem = None, [], None
    if distributed.is_main():
        try:
            created = make_run_dir(out, resume)
            check_writable(out)
            lock = RunLock.acquire(out)
            if lock.held:  # only under the lock: then no live writer's temporary can be touched
                remove_stale_temporaries(out)
        except RunFolderError as exc:  # RunError too
            problem = str(exc)
            _remove_empty(created)
    problem = distributed.from_main(problem)
    if problem is not None:
        raise RunError(problem)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
            _remove_empty(created)  # a run that failed before writing anything leaves no folder behind


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote something), or gone: keep it
            return
