"""The output folder of a report: checked before any work, filled all at once, never through a link.

Every file of one command is built in a hidden staging folder and moved into place only once all of
them were written (a fresh ``--out`` is one atomic rename; into an existing one each file is replaced
atomically with ``os.replace``, and a move that fails puts back what was there). A file system error
while writing is one sentence naming ``--out``. An ``--out`` that is a symbolic link is refused (a
run's ``nctools-track`` pointing elsewhere would have its files replaced there). A staging folder is
named after its process (``.NAME.nctools-<pid>-<hex>.tmp``); one whose process is gone (a kill -9, a
power cut) is removed by the next report into the same place.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import one_line, os_reason

__all__ = ["ReportError", "check_out_dir", "remove_stale_stages", "staged_output"]

_STAGE = re.compile(r"\.(?P<name>.+)\.nctools-(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.tmp")
_OLD_STAGE_AGE_S = 3600  # a stage without a pid (an older nctools) is stale after an hour


class ReportError(OSError):
    """The report cannot be written where asked: one sentence naming ``--out`` or its file."""


def check_out_dir(out) -> Path:
    """``out`` as a Path if a report folder can be created (or filled) there; otherwise a
    :class:`ReportError`. Meant to run before any work: an empty name, the file system root, an
    existing file, or a path below a file are refused."""
    if str(out) == "":
        raise ReportError("--out is empty: give the folder the report should be written to.")
    path = Path(out)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symbolic link loop (Python < 3.13)
        raise ReportError(f"{out}: cannot be used as --out ({os_reason(err) or one_line(err)}).") from None
    if resolved == Path(resolved.anchor):
        raise ReportError(f"{out}: is the root of the file system; give --out a folder of its own for the report.")
    if path.is_symlink():
        raise ReportError(f"{out}: is a symbolic link; a report is never written through one (give --out the "
                          "folder itself).")
    if os.path.lexists(path) and not path.is_dir():
        raise ReportError(f"{out}: --out exists and is not a directory.")
    for parent in path.parents:  # the nearest one that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ReportError(f"{out}: cannot be created, because {parent} is not a directory.")
            break
    return path


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into ``out``, on failure drop it.

    A fresh ``out`` appears in one rename. Into an existing ``out`` every destination is checked
    before the first file moves, the files that were there are kept until every new one is in
    place, and a move that still fails puts them back: ``out`` holds the old report or the new
    one. A file system error (a full disk, say) becomes a :class:`ReportError` naming ``out``.
    """
    out = check_out_dir(out)
    fresh = not out.exists()
    made = []  # folders created for a fresh --out, removed again if nothing lands in them
    try:
        if fresh:
            made = [p for p in reversed(Path(os.path.abspath(out)).parents) if not p.exists()]
            out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(out)
        # Inside an existing --out (the same file system, and it may be the only writable place);
        # beside a fresh one, which then appears in one rename.
        stage = _make_stage(out.parent if fresh else out, out.name)
    except OSError as err:
        _remove_empty(made)
        raise _cannot_write(out, err) from None
    done = False
    try:
        try:
            yield stage
        except Exception as err:  # noqa: BLE001 - only file system errors are translated
            cause = _os_error(err)
            if cause is None or isinstance(cause, ReportError):
                raise
            raise _cannot_write(out, cause) from err
        if fresh and not out.exists():
            try:
                os.replace(stage, out)  # one rename: --out appears complete or not at all
                done = True
                return
            except OSError as err:
                if not out.is_dir():
                    raise _cannot_write(out, err) from None
        _move_into(stage, out)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not done:
            _remove_empty(made)


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove the staging folders of reports into ``out`` whose process is gone; returns them."""
    removed = []
    for folder in (out.parent, out):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.glob(f".{glob_escape(out.name)}.nctools-*.tmp"):
            match = _STAGE.fullmatch(path.name)
            if match and path.is_dir() and not path.is_symlink() and _gone(match["pid"], path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", name)


def _gone(pid: str | None, path: Path) -> bool:
    """Whether the process that made a stage has ended (by its pid; by age for a stage without one)."""
    if pid is None:
        try:
            return time.time() - path.stat().st_mtime > _OLD_STAGE_AGE_S
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):  # alive under another user, or not a pid at all
        return False
    return False


def _make_stage(folder: Path, name: str) -> Path:
    while True:
        stage = folder / f".{name}.nctools-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            stage.mkdir()
        except FileExistsError:  # astronomically rare: draw again
            continue
        return stage


def _move_into(stage: Path, out: Path) -> None:
    """Move the staged files into the existing folder ``out``, all of them or none."""
    items = sorted(stage.iterdir())
    for item in items:  # every destination is checked before anything moves
        dest = out / item.name
        if dest.is_dir() and not dest.is_symlink():
            raise ReportError(f"{dest}: is a directory, so the report cannot put its {item.name} there; "
                              "nothing was written.")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReportError(f"{out}: cannot write the report ({os.strerror(errno.EACCES)}).")
    previous = stage / ".previous"  # what --out held, kept until every new file is in place
    previous.mkdir()
    placed: list[tuple[Path, Path | None]] = []  # (destination, its previous file or None)
    for item in items:
        dest, old = out / item.name, None
        try:
            if os.path.lexists(dest):
                old = previous / item.name
                try:
                    os.link(dest, old, follow_symlinks=False)  # dest stays readable meanwhile
                except OSError:
                    os.replace(dest, old)  # no hard links here: move it aside instead
            os.replace(item, dest)
        except OSError as err:
            placed.append((dest, old))
            failed = _roll_back(placed)
            tail = f"; {failed} earlier files could not be restored" if failed else f"; {out} was left as it was"
            raise ReportError(f"{dest}: cannot write the report ({os_reason(err) or one_line(err)}){tail}.") from None
        placed.append((dest, old))


def _roll_back(placed: list[tuple[Path, Path | None]]) -> int:
    """Put back what ``out`` held before the moves; returns how many files could not be restored."""
    failed = 0
    for dest, old in reversed(placed):
        try:
            if old is not None and os.path.lexists(old):
                os.replace(old, dest)
            elif old is None and os.path.lexists(dest):
                dest.unlink()
        except OSError:
            failed += 1
    return failed


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def _os_error(err: BaseException) -> OSError | None:
    """The OSError that ``err`` is, or that caused it: matplotlib, for one, hides a full disk behind
    an AttributeError raised while it cleans up after the failed write."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _cannot_write(out: Path, err: BaseException) -> ReportError:
    return ReportError(f"{out}: cannot write the report ({os_reason(err) or one_line(err)}).")
