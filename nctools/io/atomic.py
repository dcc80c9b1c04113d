"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

The trainer writes a dump every epoch while ``nctools track`` may be reading the run folder, and a
run can be killed mid-write; both must never see half a file under the final name.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_write_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target`` atomically.

    Write the file under the yielded path. When the block ends normally the temporary file is
    given the mode a new file gets (0o666 minus the umask, also when the writer recreated it),
    flushed to disk and renamed over ``target`` (creating the parent folder first); when it
    raises, the temporary file is removed and ``target`` is left as it was.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = Path(tmp) / "sub" / "out.txt"
    ...     with atomic_write_path(target) as part:
    ...         _ = part.write_text("done")
    ...     print(target.read_text(), sorted(p.name for p in target.parent.iterdir()))
    done ['out.txt']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve_temp_path(target)
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 minus the umask, as the kernel applied it
        yield tmp
        # Some writers (safetensors' save_file) delete and recreate the file, which then gets
        # their own mode (0o600): the final file gets the mode any ordinary write would give it.
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        _fsync_file(tmp)
        # Same folder, hence same file system: os.replace is an atomic rename there.
        os.replace(tmp, target)
    except BaseException:
        # BaseException too: a Ctrl-C mid-write must not leave a stray temporary file.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write(target, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``target`` atomically; return ``target``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = atomic_write(Path(tmp) / "a.txt", lambda part: part.write_text("x"))
    ...     print(path.read_text())
    x
    """
    target = Path(target)
    with atomic_write_path(target) as tmp:
        write(tmp)
    return target


def atomic_write_json(target, obj: Any, *, allow_nan: bool = False) -> Path:
    """``obj`` as indented UTF-8 JSON, written atomically. NaN and Inf are refused unless
    ``allow_nan`` (strict JSON readers refuse them; a training log may still need to keep one)."""
    text = json.dumps(obj, indent=2, allow_nan=allow_nan) + "\n"
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# The name of a temporary beside its target: ".NAME.<12 hex>.tmp" (hidden, and without the
# target's suffix, so that globs such as dumps/*.safetensors never see it).
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.tmp")


def temporary_target(name: str) -> str | None:
    """The file name whose atomic write left the temporary ``name``, or None if ``name`` is not
    one of this module's temporaries (for tidying after a killed writer).

    >>> temporary_target(".epoch_0002.pt.0123456789ab.tmp"), temporary_target("epoch_0002.pt")
    ('epoch_0002.pt', None)
    """
    match = _TEMPORARY_NAME.fullmatch(name)
    return match["target"] if match else None


def _reserve_temp_path(target: Path) -> Path:
    """Create an empty, uniquely named hidden file beside ``target`` and return its path.

    The name is hidden and does not end with the target's suffix, so a glob such as
    ``dumps/*.safetensors`` never picks up a file that is still being written. It is created
    with mode 0o666 (minus the umask) rather than ``mkstemp``'s 0o600, so the final file gets
    the permissions any ordinary write would give it.
    """
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # astronomically rare name collision: draw again
            continue
        return tmp


def _fsync_file(path: Path) -> None:
    # Without this the rename can reach the disk before the data, and a power cut leaves an
    # empty or partial file under the final name.
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Directories cannot be opened this way on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
