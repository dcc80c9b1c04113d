"""Run directories: the per-epoch dumps a training run writes, analysed one at a time.

A run directory holds ``dumps/epoch_0001.safetensors`` ... (train split) and, optionally,
``dumps-test/epoch_*`` (docs/DEFINITIONS.md, "Run directory layout"). ``track_run`` streams over them in
epoch order: one dump is in memory at a time, and only its summary row (and the last epoch's full
result) is kept.

The file name's number is the epoch (a dump whose metadata says otherwise gets a warning); every
epoch must have the classifier's number of classes and the feature dimension of the first; an
unreadable epoch stops the track, or with ``skip_bad`` is left out with a warning and listed.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.result import SUMMARY_KEYS, NCResult
from ..errors import one_line
from ..io.dump import load_dump
from ..io.layout import DUMP_FOLDERS, EPOCH_NAME, epoch_files, epoch_of
from ..io.rows import shard_paths
from ..io.sources import DUMP_SUFFIXES, SourceError, analyze_source, source_error

__all__ = ["RunTrack", "epoch_dumps", "track_run"]

# What makes an epoch unusable (as on the command line): a bad file or bad values, or an unreadable path.
_BAD_EPOCH = (ValueError, TypeError, OSError)


@dataclass
class RunTrack:
    """The summary keys per epoch of one run, and the last epoch's full result."""

    run_dir: Path
    table: pd.DataFrame  # one row per epoch: epoch, then SUMMARY_KEYS
    last: NCResult
    metadata: dict  # the last dump's metadata
    class_names: list | None
    imbalance_ratio: float | None
    method: str | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (dump, problem) left out by skip_bad


def epoch_dumps(run_dir, split: str = "train") -> list[Path]:
    """``run_dir/dumps/epoch_*.{safetensors,pt,npz}`` in epoch order (or the epoch files in run_dir itself)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SourceError(f"{run_dir}: {'no such directory' if not run_dir.exists() else 'is not a directory'}; "
                          "track and compare take run directories holding dumps/epoch_*.safetensors.")
    folder = run_dir / DUMP_FOLDERS[split]
    if not folder.is_dir():
        folder = run_dir
    found: dict[int, Path] = {}
    for path in epoch_files(folder.iterdir()):  # in epoch order
        if _is_dump(path):
            epoch = epoch_of(path)
            if epoch in found:
                raise SourceError(f"{run_dir}: two dumps for epoch {epoch} ({found[epoch].name}, {path.name}).")
            found[epoch] = path
    if not found:
        raise SourceError(f"{run_dir}: no {DUMP_FOLDERS[split]}/epoch_*.safetensors (or .pt, .npz) files.")
    return list(found.values())


def _is_dump(path: Path) -> bool:
    """An ``epoch_NNNN`` name that is a dump: a file with a dump's suffix, or a folder of part-* shards."""
    suffix = EPOCH_NAME.fullmatch(path.name)["suffix"]
    if suffix is not None:
        return suffix in DUMP_SUFFIXES and path.is_file()
    return path.is_dir() and bool(shard_paths(path))


def track_run(run_dir, *, split: str = "train", center: str = "class", groups: Sequence[float] = (100, 20),
              device: str = "auto", on_epoch: Callable[[Path], None] | None = None, skip_bad: bool = False,
              on_warning: Callable[[str], None] | None = None) -> RunTrack:
    """Analyse every epoch dump of a run in order; ``on_epoch(path)`` is called after each (progress).

    The epoch of a dump is the number in its file name; a dump whose metadata names another epoch
    gives a warning. A dump whose number of classes or feature dimension differs from the first
    epoch's raises :class:`~nctools.io.sources.SourceError` naming both files. An unreadable or
    unusable dump raises too, or with ``skip_bad`` is left out: a warning ``"skipped <file>:
    <problem>"`` and an entry of ``RunTrack.skipped``. Warnings go to ``on_warning(message)``
    (default: :func:`warnings.warn`).
    """
    warn = on_warning if on_warning is not None else lambda message: warnings.warn(message, stacklevel=3)
    rows, last, dump, skipped = [], None, None, []
    first: tuple[Path, int, int] | None = None  # the first usable epoch: path, classes, dimension

    def skip(err: Exception, path: Path) -> None:
        if not skip_bad:
            raise err
        problem = _problem(err, path)
        skipped.append((path, problem))
        warn(f"skipped {path}: {problem}")

    files = epoch_dumps(run_dir, split)
    for path in files:
        epoch = epoch_of(path)
        try:
            candidate = load_dump(path, lazy=True)  # one epoch at a time, its features read chunk by chunk
            said, shape = candidate.epoch, (candidate.num_classes, candidate.dim)
        except _BAD_EPOCH as err:
            skip(err, path)
        else:
            if first is not None and shape != first[1:]:  # a run that changed: an error even with skip_bad
                raise source_error(path, f"{shape[0]} classes and dim {shape[1]}, but {first[0]} has {first[1]} "
                                         f"classes and dim {first[2]}; every epoch of a run must have the same "
                                         "classes and feature dimension")
            if said is not None and said != epoch:
                warn(f"{path}: its metadata says epoch {said}; using epoch {epoch} from the file name")
            try:
                last = analyze_source(path, candidate, center=center, device=device, groups=groups, progress=False)
            except _BAD_EPOCH as err:
                skip(err, path)
            else:
                first, dump = first or (path, *shape), candidate
                rows.append({"epoch": epoch, **{key: last.summary[key] for key in SUMMARY_KEYS}})
        if on_epoch is not None:
            on_epoch(path)
    if dump is None:
        raise SourceError(f"{run_dir}: every epoch dump was skipped ({len(files)} unreadable or unusable).")
    table = pd.DataFrame(rows, columns=["epoch", *SUMMARY_KEYS])
    return RunTrack(Path(run_dir), table, last, dict(dump.metadata), dump.class_names, dump.imbalance_ratio,
                    dump.method, skipped)


def _problem(err: Exception, path: Path) -> str:
    """The problem of an unusable epoch on one line, without the file name that its message starts with."""
    problem = one_line(err)
    for prefix in (f"{path}: ", f"{path.name}: "):  # messages name the file already: "<path>: <problem>."
        if problem.startswith(prefix):
            return problem[len(prefix):]
    return problem
