"""The run directory as a resource: checked before training, locked for the life of a run, tidied
after a killed writer, and every failed write turned into one sentence.

- ``make_run_dir``, ``check_writable``: ``--out`` can be created and written (a probe file), so a
  bad ``--out`` fails at once rather than after the first epoch has trained.
- ``RunLock``: ``out/run.lock``, an exclusive ``flock`` held while the run lives, holding the owner's
  pid, host and start time. The kernel drops a flock when its process dies, so a lock file left by a
  killed run blocks nobody; a second trainer (or a ``--resume`` of a live run) is refused at once.
- ``remove_stale_temporaries``: the hidden temporaries of atomic writes that a ``kill -9`` left
  behind; called only under the lock, when no writer of this run can be alive.
- ``writing``: a failed write (full disk, permission, read-only) becomes a ``RunError`` naming the
  file; atomic writes leave the last complete epoch intact, so ``--resume`` continues from it.
- ``claim``: all of that at the start of a run; under torchrun rank 0 does it and every rank learns
  the outcome, so no rank waits for one that gave up.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from nctools.errors import InputError, os_reason
from nctools.io import layout
from nctools.io.atomic import temporary_target

from . import distributed
from .checkpoint import latest_checkpoint, nothing_to_resume

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there go unlocked, as before
    fcntl = None

# The folders a run writes into (relative to the run directory) and the names it writes there.
_OWN_FILES = {".": re.compile(rf"{re.escape(layout.RECORD)}|write-probe"),
              layout.CHECKPOINTS: re.compile(r"epoch_\d+\.pt"),
              **{folder: re.compile(r"epoch_\d+\.\w+") for folder in layout.DUMP_FOLDERS.values()}}
# The old trainer's own temporaries (".NAME.tmp-<pid>"); nctools.io.atomic knows its current ones.
_LEGACY_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-\d+")
# flock refused by the file system itself (some network and FUSE mounts): the run goes on unlocked.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
# What torch.save's C++ writer says when a write fails part-way; it carries no errno.
_TORCH_WRITE_FAILED = re.compile(r"unexpected pos|PytorchStreamWriter failed|file write failed")
_OS_ERROR_IN_TEXT = re.compile(r"I/O error: (?P<reason>.+?) \(os error \d+\)")


class RunError(InputError):
    """A run cannot start, resume or go on (existing or locked run, no checkpoint, config mismatch,
    a failed write); one sentence."""


# ---------------------------------------------------------------------------------------------
# Before training: can --out be written at all?
# ---------------------------------------------------------------------------------------------

def make_run_dir(out: Path, resume: bool) -> list[Path]:
    """Create ``out`` (not when resuming) and return the folders this call created, deepest first."""
    try:
        if resume and not out.is_dir():
            raise RunError(nothing_to_resume(out))
        if out.exists() and not out.is_dir():
            raise RunError(f"{out}: --out names a file, not a folder; choose another --out.")
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RunError(f"{out}: cannot create the run folder, {blocker} is a file.")
        created = [p for p in (out, *out.parents) if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent folder we may not enter
        raise RunError(f"{out}: cannot create the run folder ({reason(exc)}).") from None
    return created


def check_writable(out: Path) -> None:
    """Write, flush and remove a small probe file in ``out``: a read-only or full disk fails here."""
    probe = out / f".write-probe.{secrets.token_hex(6)}.tmp"  # a temporary's name: a kill leaves it to tidy
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)  # a full disk may accept the write and refuse only the flush
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot write in the run folder ({reason(exc)}).") from None


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

class RunLock:
    """An exclusive ``flock`` on ``out/run.lock``, taken by ``acquire`` and given up by ``release``."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    @property
    def held(self) -> bool:
        """False where the platform or file system has no flock (the run then goes on unlocked)."""
        return self.fd is not None

    @classmethod
    def acquire(cls, out: Path) -> RunLock:
        """Lock ``out`` or raise ``RunError`` naming the holder; never waits."""
        path = out / layout.LOCK
        if fcntl is None:
            return cls(path, None)
        try:
            fd = _lock_file(path)
        except OSError as exc:
            if exc.errno in _NO_FLOCK:  # refusing every run there would be worse than no lock
                path.unlink(missing_ok=True)
                warnings.warn(f"{path}: the file system does not support locks ({reason(exc)}); nothing stops "
                              "a second run on this folder.", RuntimeWarning, stacklevel=2)
                return cls(path, None)
            raise RunError(f"{path}: cannot take the run lock ({reason(exc)}).") from None
        lock = cls(path, fd)
        try:  # written once the lock is ours, so a loser never overwrites the holder's details
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_whoami()).encode() + b"\n", 0)
        except OSError as exc:
            lock.release()
            raise RunError(f"{path}: cannot write the run lock ({reason(exc)}).") from None
        return lock

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlinked while still held: a process that opened the old file meanwhile finds it gone once
        # it gets the lock, and tries again on a new file (see _lock_file); never two holders.
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)  # also for copies of the descriptor a fork may still hold
        os.close(self.fd)
        self.fd = None


def _lock_file(path: Path) -> int:
    """Open and flock ``path``; return the descriptor, or raise ``RunError`` naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:  # LOCK_NB: a second run is refused at once, never queued behind the first
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunError(f"{path.parent}: the run folder is in use by {holder}; wait for that run to end or "
                           f"choose another --out.") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:  # the previous holder removed it as it finished
            same = False
        if same:
            return fd
        os.close(fd)


def _whoami() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _holder(fd: int) -> str:
    """The lock holder as ``pid N on HOST (since T)``, read from the locked file."""
    for _ in range(40):  # the holder writes its details just after taking the lock: give it a moment
        try:
            info = json.loads(os.pread(fd, 4096, 0))
            return f"pid {info['pid']} on {info['host']} (since {info['started']})"
        except (ValueError, KeyError, TypeError, OSError):
            time.sleep(0.025)
    return "another process (its pid is not recorded)"


# ---------------------------------------------------------------------------------------------
# Temporaries of a killed writer
# ---------------------------------------------------------------------------------------------

def stale_temporaries(out: Path) -> list[Path]:
    """The hidden temporaries of this run's own files in ``out`` and its checkpoint and dump folders.

    Only names an atomic write of one of the run's files leaves (``.epoch_0002.pt.<12 hex>.tmp``,
    ``.run.json.tmp-<pid>``); anything else, sub-folders included, is never listed.
    """
    found = []
    for folder, own in _OWN_FILES.items():
        for path in sorted((out / folder).glob(".*")):
            legacy = _LEGACY_TEMPORARY.fullmatch(path.name)
            target = temporary_target(path.name) or (legacy["name"] if legacy else None)
            if target and own.fullmatch(target) and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove ``stale_temporaries(out)``; call only under the run lock (no writer of this run is alive)."""
    removed = []
    for path in stale_temporaries(out):
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # left for a later resume: an untidy folder must not stop a run
            pass
    return removed


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
        except RunError as exc:
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
