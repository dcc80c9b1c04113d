"""A run folder as a resource that every writer of it shares (allnc-train and the callbacks' recorder).

- ``make_run_folder``, ``check_writable``: the folder can be created and written (a probe file), so a
  bad ``out`` fails before any training rather than after the first epoch.
- ``RunLock``: ``out/run.lock``, an exclusive ``flock`` held while a writer lives, holding the owner's
  pid, host and start time. The kernel drops a flock when its process dies, so a lock file left by a
  killed run blocks nobody; a second writer is refused at once. The lock file is opened with
  ``O_NOFOLLOW``: a ``run.lock`` that is a symbolic link is refused, never truncated through.
- ``stale_temporaries``, ``remove_stale_temporaries``: the hidden temporaries of atomic writes that a
  ``kill -9`` left behind; removed only under the lock, when no writer of this run can be alive.
- ``refuse_links``: no file is written through a symbolic link inside the run folder (a ``dumps``
  folder that points elsewhere, say); the folder itself may be a link the user made.
- ``read_epochs``, ``merge_epochs``: ``run.json``'s per-epoch entries, merged by epoch number, so a
  resumed writer keeps the epochs before it.
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
from pathlib import Path

from ..errors import InputError, os_reason
from . import layout
from .atomic import temporary_target

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there go unlocked
    fcntl = None

__all__ = ["RunFolderError", "RunLock", "check_writable", "make_run_folder", "merge_epochs", "read_epochs",
           "refuse_links", "remove_stale_temporaries", "stale_temporaries"]

# The folders a run writes into (relative to the run folder) and the names it writes there.
_OWN_FILES = {".": re.compile(rf"{re.escape(layout.RECORD)}|write-probe"),
              layout.CHECKPOINTS: re.compile(r"epoch_\d+\.pt"),
              **{folder: re.compile(r"epoch_\d+\.\w+") for folder in layout.DUMP_FOLDERS.values()}}
# The old trainer's own temporaries (".NAME.tmp-<pid>"); nctools.io.atomic knows its current ones.
_LEGACY_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-\d+")
# flock refused by the file system itself (some network and FUSE mounts): the run goes on unlocked.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class RunFolderError(InputError):
    """A run folder cannot be used (a file, not writable, locked by another writer, a link inside it)."""


def _reason(exc: OSError) -> str:
    text = os_reason(exc) or str(exc)
    return text[:1].lower() + text[1:]


# ---------------------------------------------------------------------------------------------
# Before any work: can the folder be written at all?
# ---------------------------------------------------------------------------------------------

def make_run_folder(out: Path, option: str = "--out") -> list[Path]:
    """Create ``out`` (and its parents) and return the folders this call created, deepest first.

    ``option`` names the argument in the messages (``--out`` for a command, ``out`` for a callback).
    """
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"{out}: {option} names a file, not a folder; choose another {option}.")
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RunFolderError(f"{out}: cannot create the run folder, {blocker} is a file.")
        created = [p for p in (out, *out.parents) if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent folder we may not enter
        raise RunFolderError(f"{out}: cannot create the run folder ({_reason(exc)}).") from None
    return created


def check_writable(out: Path) -> None:
    """Write, flush and remove a small probe file in ``out``: a read-only or full disk fails here."""
    probe = Path(out) / f".write-probe.{secrets.token_hex(6)}.tmp"  # a temporary's name: a kill leaves it to tidy
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)  # a full disk may accept the write and refuse only the flush
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{out}: cannot write in the run folder ({_reason(exc)}).") from None


def refuse_links(out: Path, target: Path, option: str = "--out") -> None:
    """Raise ``RunFolderError`` when a folder between ``out`` and the file ``target`` is a symbolic link.

    Writing there would put the file wherever the link points, outside the run; ``out`` itself may be
    a link (the user chose it). The file itself may be one: an atomic write replaces the link, it
    never writes through it.
    """
    out, target = Path(out), Path(target)
    for folder in reversed(target.relative_to(out).parents[:-1]):  # e.g. dumps, for dumps/epoch_0001.pt
        if (out / folder).is_symlink():
            raise RunFolderError(f"{out / folder}: is a symbolic link inside the run folder; nothing is written "
                                 f"through it (remove the link or choose another {option}).")


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
    def acquire(cls, out: Path, option: str = "--out") -> RunLock:
        """Lock ``out`` or raise ``RunFolderError`` naming the holder; never waits."""
        path = Path(out) / layout.LOCK
        if fcntl is None:
            return cls(path, None)
        try:
            fd = _lock_file(path, option)
        except OSError as exc:
            if exc.errno in _NO_FLOCK:  # refusing every run there would be worse than no lock
                path.unlink(missing_ok=True)
                warnings.warn(f"{path}: the file system does not support locks ({_reason(exc)}); nothing stops "
                              "a second run on this folder.", RuntimeWarning, stacklevel=2)
                return cls(path, None)
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise RunFolderError(f"{path}: is a symbolic link; the run lock is never written through one "
                                     f"(remove it or choose another {option}).") from None
            raise RunFolderError(f"{path}: cannot take the run lock ({_reason(exc)}).") from None
        lock = cls(path, fd)
        try:  # written once the lock is ours, so a loser never overwrites the holder's details
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_whoami()).encode() + b"\n", 0)
        except OSError as exc:
            lock.release()
            raise RunFolderError(f"{path}: cannot write the run lock ({_reason(exc)}).") from None
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


def _lock_file(path: Path, option: str) -> int:
    """Open and flock ``path``; return the descriptor, or raise ``RunFolderError`` naming the holder."""
    while True:
        # O_NOFOLLOW: a run.lock planted as a link to someone's file is refused, not truncated.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:  # LOCK_NB: a second run is refused at once, never queued behind the first
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderError(f"{path.parent}: the run folder is in use by {holder}; wait for that run to end "
                                 f"or choose another {option}.") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
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
    """The hidden temporaries of the run's own files in ``out`` and its checkpoint and dump folders.

    Only names an atomic write of one of the run's files leaves (``.epoch_0002.pt.<12 hex>.tmp``,
    ``.run.json.tmp-<pid>``); anything else, sub-folders and links included, is never listed.
    """
    found = []
    for folder, own in _OWN_FILES.items():
        where = Path(out) / folder
        if folder != "." and where.is_symlink():  # never tidy a folder outside the run
            continue
        for path in sorted(where.glob(".*")):
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
        except OSError:  # left for a later run: an untidy folder must not stop one
            pass
    return removed


# ---------------------------------------------------------------------------------------------
# run.json's epochs
# ---------------------------------------------------------------------------------------------

def read_epochs(out: Path) -> list[dict]:
    """The per-epoch entries of ``out/run.json`` (those with an integer ``epoch``); none when it is
    missing or unreadable (it is rewritten whole at the next epoch)."""
    path = layout.record_path(out)
    if path.is_symlink() or not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = record.get("epochs") if isinstance(record, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and type(e.get("epoch")) is int]


def merge_epochs(earlier: list[dict], later: list[dict]) -> list[dict]:
    """``earlier`` entries before the first epoch of ``later``, then ``later``; in epoch order, one per epoch.

    A resumed writer's history starts where it resumed: the epochs before come from the record on disk,
    and the epochs from there on (a run resumed from an earlier point) are the new ones.

    >>> merge_epochs([{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], [{"epoch": 3, "x": 1}, {"epoch": 4}])
    [{'epoch': 1}, {'epoch': 2}, {'epoch': 3, 'x': 1}, {'epoch': 4}]
    """
    start = min((e["epoch"] for e in later), default=None)
    kept = {e["epoch"]: e for e in earlier if start is None or e["epoch"] < start}
    kept.update((e["epoch"], e) for e in later)
    return [kept[k] for k in sorted(kept)]
