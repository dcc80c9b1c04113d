"""What ``track`` and ``compare`` share: reading runs with a progress bar on stderr."""
from __future__ import annotations

import sys

from ..core import keys as K
from .options import show_progress

_TABLE_COLUMNS = {  # column in the track table -> short heading for the terminal
    "epoch": "epoch", K.NC1: "NC1", K.NC2_COS_STD_MEANS: "cosStd(M)", K.NC2_COS_STD_CLASSIFIER: "cosStd(W)",
    K.NC3_SELF_DUALITY: "NC3", K.NC4_NCC_MISMATCH: "NC4", K.TAIL_ICPA_MEAN_DEG_MEANS: "tailICPA(M)",
    K.TAIL_ICPA_MEAN_DEG_CLASSIFIER: "tailICPA(W)", K.ACCURACY: "acc",
}


def read_runs(run_dirs, *, split, center, groups, device, quiet, skip_bad: bool = False) -> list:
    """One :class:`~nctools.report.tracking.RunTrack` per run directory, streaming over its dumps.

    Warnings (an epoch whose metadata names another epoch; with ``skip_bad``, ``skipped <file>:
    <problem>`` for each unusable epoch left out) go to stderr one line each, unless ``quiet``
    (``skipped.txt`` still lists the epochs left out)."""
    from tqdm.auto import tqdm

    from ..core.device import resolve_device
    from ..report.tracking import epoch_dumps, track_run

    dev = str(resolve_device(device))
    tracks = []
    for run_dir in run_dirs:
        files = epoch_dumps(run_dir, split or "train")  # checks the run before the bar starts
        with tqdm(total=len(files), desc=str(run_dir), unit="epoch", disable=not show_progress(quiet), leave=False,
                  file=sys.stderr) as bar:
            tracks.append(track_run(run_dir, split=split or "train", center=center, groups=groups, device=dev,
                                    on_epoch=lambda _path: bar.update(), skip_bad=skip_bad,
                                    on_warning=(lambda _message: None) if quiet else _warn))
    return tracks


def _warn(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"Warning: {message}", file=sys.stderr)  # above a progress bar, not through it


def format_table(table, columns=_TABLE_COLUMNS) -> str:
    """The key columns of a per-epoch (or per-run) table, ``-`` for nulls; text from the dumps' metadata
    (labels, methods) with its control characters escaped, so that it cannot drive the terminal."""
    from ..io.terminal import escape_control

    view = table[[c for c in columns if c in table]].rename(columns=columns)
    view = view.apply(lambda col: col.map(lambda v: escape_control(v) if isinstance(v, str) else v))
    return view.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
