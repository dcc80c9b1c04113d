"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Every file the trainer writes goes to a temporary name in the same folder first and is then
renamed over the target with ``os.replace``, which is atomic on POSIX and Windows as long as
both names live on the same file system (hence "same folder").
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)``, flush it to disk, then rename it to ``path``.

    On any error the temporary file is removed and the target is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # fsync so a power cut cannot leave an empty renamed file
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically; store plain data so ``weights_only=True`` loads it."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
