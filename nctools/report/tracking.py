"""Run directories: the per-epoch dumps a training run writes, analysed one at a time.

A run directory holds ``dumps/epoch_0001.safetensors`` ... (train split) and, optionally,
``dumps-test/epoch_*`` (docs/DEFINITIONS.md, "Run directory layout"). ``track_run`` streams over them in
epoch order: one dump
is in memory at a time, and only its summary row (and the last epoch's full result) is kept.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.result import SUMMARY_KEYS, NCResult
from ..io.dump import load_dump
from ..io.rows import shard_paths
from ..io.sources import SourceError, analyze_source

__all__ = ["RunTrack", "epoch_dumps", "track_run"]

_DUMP_NAME = re.compile(r"epoch_(\d+)(\.(safetensors|pt|npz))?")  # a file, or a folder of part-* shards
_FOLDERS = {"train": "dumps", "test": "dumps-test"}


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


def epoch_dumps(run_dir, split: str = "train") -> list[Path]:
    """``run_dir/dumps/epoch_*.{safetensors,pt,npz}`` in epoch order (or the epoch files in run_dir itself)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SourceError(f"{run_dir}: {'no such directory' if not run_dir.exists() else 'is not a directory'}; "
                          "track and compare take run directories holding dumps/epoch_*.safetensors.")
    folder = run_dir / _FOLDERS[split]
    if not folder.is_dir():
        folder = run_dir
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _DUMP_NAME.fullmatch(path.name)
        if match and (path.is_file() if match.group(2) else path.is_dir() and bool(shard_paths(path))):
            epoch = int(match.group(1))
            if epoch in found:
                raise SourceError(f"{run_dir}: two dumps for epoch {epoch} ({found[epoch].name}, {path.name}).")
            found[epoch] = path
    if not found:
        raise SourceError(f"{run_dir}: no {_FOLDERS[split]}/epoch_*.safetensors (or .pt, .npz) files.")
    return [found[e] for e in sorted(found)]


def track_run(run_dir, *, split: str = "train", center: str = "class", groups: Sequence[float] = (100, 20),
              device: str = "auto", on_epoch: Callable[[Path], None] | None = None) -> RunTrack:
    """Analyse every epoch dump of a run in order; ``on_epoch(path)`` is called after each (progress)."""
    rows, last, dump = [], None, None
    for path in epoch_dumps(run_dir, split):
        dump = load_dump(path, lazy=True)  # one epoch at a time, its features read chunk by chunk
        last = analyze_source(path, dump, center=center, device=device, groups=groups, progress=False)
        epoch = dump.epoch if dump.epoch is not None else int(_DUMP_NAME.fullmatch(path.name).group(1))
        rows.append({"epoch": epoch, **{key: last.summary[key] for key in SUMMARY_KEYS}})
        if on_epoch is not None:
            on_epoch(path)
    table = pd.DataFrame(rows, columns=["epoch", *SUMMARY_KEYS])
    return RunTrack(Path(run_dir), table, last, dict(dump.metadata), dump.class_names, dump.imbalance_ratio,
                    dump.method)
