"""The run folder: where a training run keeps its record, checkpoints and feature dumps, named once.

::

    RUN/run.json                            the run record: per-epoch metrics (and, for allnc-train,
                                            the config, environment, data summary and status)
    RUN/run.lock                            held by the live allnc-train run
    RUN/checkpoints/epoch_0007.pt           allnc-train's checkpoints
    RUN/dumps/epoch_0007.safetensors        training-set features + classifier (a dump)
    RUN/dumps-test/epoch_0007.safetensors   evaluation-set features

Epoch numbers have at least four digits and are read as numbers (``epoch_10000`` comes after
``epoch_9999``). allnc-train and the Lightning and Hugging Face callbacks write this layout;
``nctools track`` and ``compare`` read it.

>>> from pathlib import Path
>>> dump_path(Path("run"), "test", 7, "safetensors").as_posix(), epoch_of(Path("epoch_10000.pt"))
('run/dumps-test/epoch_0007.safetensors', 10000)
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHECKPOINTS", "DUMP_FOLDERS", "EPOCH_NAME", "LOCK", "RECORD", "checkpoint_files", "checkpoint_path",
           "dump_path", "epoch_files", "epoch_name", "epoch_of", "record_path"]

RECORD = "run.json"
LOCK = "run.lock"
CHECKPOINTS = "checkpoints"
DUMP_FOLDERS = {"train": "dumps", "test": "dumps-test"}  # by split
EPOCH_NAME = re.compile(r"epoch_(?P<epoch>\d+)(?P<suffix>\.\w+)?")  # a file, or a folder of part-* shards


def epoch_name(epoch: int, suffix: str) -> str:
    """``epoch_0007.safetensors``: the file name of an epoch's checkpoint or dump (``suffix`` without a dot)."""
    return f"epoch_{epoch:04d}.{suffix.lstrip('.')}"


def record_path(run: Path) -> Path:
    return Path(run) / RECORD


def checkpoint_path(run: Path, epoch: int) -> Path:
    return Path(run) / CHECKPOINTS / epoch_name(epoch, "pt")


def dump_path(run: Path, split: str, epoch: int, fmt: str) -> Path:
    """The dump of ``split`` (``train`` or ``test``) at ``epoch`` in format ``fmt`` (safetensors, pt, npz)."""
    return Path(run) / DUMP_FOLDERS[split] / epoch_name(epoch, fmt)


def epoch_of(path: Path) -> int | None:
    """The epoch an ``epoch_NNNN[.suffix]`` name holds, or None for any other name."""
    match = EPOCH_NAME.fullmatch(Path(path).name)
    return int(match["epoch"]) if match else None


def epoch_files(paths: Iterable[Path]) -> list[Path]:
    """The ``epoch_NNNN[.suffix]`` names among ``paths``, in epoch order (by number, not as strings)."""
    found = [(epoch_of(p), p.name, p) for p in map(Path, paths)]
    return [p for epoch, _, p in sorted(t for t in found if t[0] is not None)]


def checkpoint_files(run: Path) -> list[Path]:
    """The run's ``checkpoints/epoch_NNNN.pt``, oldest first (none when the folder does not exist)."""
    return epoch_files(p for p in (Path(run) / CHECKPOINTS).glob("epoch_*") if p.suffix == ".pt")
