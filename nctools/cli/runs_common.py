"""What ``track`` and ``compare`` share: reading runs with a progress bar on stderr."""
from __future__ import annotations

import sys

from .options import show_progress

_TABLE_COLUMNS = {  # column in the track table -> short heading for the terminal
    "epoch": "epoch", "nc1": "NC1", "nc2_cos_std_means": "cosStd(M)", "nc2_cos_std_classifier": "cosStd(W)",
    "nc3_self_duality": "NC3", "nc4_ncc_mismatch": "NC4", "tail_icpa_mean_deg_means": "tailICPA(M)",
    "tail_icpa_mean_deg_classifier": "tailICPA(W)", "accuracy": "acc",
}


def read_runs(run_dirs, *, split, center, groups, device, quiet):
    """One :class:`~nctools.report.tracking.RunTrack` per run directory, streaming over its dumps."""
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
                                    on_epoch=lambda _path: bar.update()))
    return tracks


def format_table(table, columns=_TABLE_COLUMNS) -> str:
    """The key columns of a per-epoch (or per-run) table, ``-`` for nulls."""
    view = table[[c for c in columns if c in table]].rename(columns=columns)
    return view.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
