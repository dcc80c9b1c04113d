"""Reports written as carefully as they are computed: no writes through
a symbolic link, stale staging folders removed, CSV cells that a spreadsheet would evaluate
neutralised, control characters escaped, and figures of many classes pooled rather than drawn cell by cell."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import nctools
from nctools.io.terminal import escape_control
from nctools.report import format_summary
from nctools.report.many_classes import MAX_HEATMAP_CLASSES, pair_cosine_counts, pooled
from nctools.report.plots import cosine_histogram, icpa_heatmaps, per_class_bars
from nctools.report.staging import ReportError, remove_stale_stages, staged_output
from tests.helpers.cli import invoke, make_dump, make_run


def test_track_refuses_a_linked_default_out_and_touches_nothing_outside(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "track.csv").write_text("theirs")
    (elsewhere / "skipped.txt").write_text("theirs too")
    (run / "nctools-track").symlink_to(elsewhere, target_is_directory=True)
    result = invoke("track", run, "--device", "cpu", "--quiet")
    assert result.exit_code == 2 and "nctools-track: is a symbolic link" in result.output
    assert (elsewhere / "track.csv").read_text() == "theirs" and (elsewhere / "skipped.txt").exists()


def test_a_stage_left_by_a_dead_process_is_removed_by_the_next_report(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "report"
    stale = tmp_path / f".report.nctools-{dead.stdout.strip()}-0123abcd.tmp"
    live = tmp_path / f".report.nctools-{os.getpid()}-0123abcd.tmp"  # a report still being written
    for stage in (stale, live):
        stage.mkdir()
        (stage / "metrics.json").write_text("{}")
    assert remove_stale_stages(out) == [stale]
    assert live.exists() and not stale.exists()


def test_sigterm_during_a_report_leaves_no_stage(tmp_path):
    code = f"""
import os, signal
from pathlib import Path
from nctools.interrupts import signals_as_interrupts
from nctools.report.staging import staged_output
with signals_as_interrupts():
    try:
        with staged_output(Path({str(tmp_path / 'out')!r})) as stage:
            (stage / "metrics.json").write_text("{{}}")
            os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt as exc:
        print(type(exc).__name__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "Interrupted", done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_linked_out_is_refused_before_any_work(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(ReportError, match="link: is a symbolic link"):
        with staged_output(tmp_path / "link"):
            pass


def test_class_names_that_a_spreadsheet_would_evaluate_are_neutralised(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "cat", "dog"]
    dump = make_dump(tmp_path / "d.safetensors", class_names=names)
    result = invoke("analyze", dump, "--out", tmp_path / "out", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "per_class.csv", newline="") as fh:
        shown = [row["name"] for row in csv.DictReader(fh)]
    assert shown == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2+3", "'@SUM(A1)", "cat", "dog"]
    assert all(not str(v).startswith(("=", "+", "@")) for v in pd.read_csv(tmp_path / "out" / "per_class.csv")
               .select_dtypes(exclude="number").to_numpy().ravel())


def test_escape_sequences_in_printed_text_are_shown_not_obeyed():
    text = "run \x1b]0;pwned\x07 \x1b[2J\u202egnp.exe\r\n"
    shown = escape_control(text)
    assert "\x1b" not in shown and "\u202e" not in shown and "\r" not in shown and "\n" not in shown
    assert shown == "run \\x1b]0;pwned\\x07 \\x1b[2J\\u202egnp.exe\\r\\n"
    labels = torch.arange(3).repeat(5)
    result = nctools.analyze(torch.randn(15, 4), labels)
    assert "\x1b" not in format_summary(result, header=["dataset: \x1b]0;pwned\x07"])


# --------------------------------------------------------------------------- many classes


def test_heatmaps_of_many_classes_are_pooled_and_say_so():
    c = MAX_HEATMAP_CLASSES + 50
    angles = torch.rand(c, c, dtype=torch.float32) * 180
    groups = ["many"] * 100 + ["few"] * (c - 100)
    fig = icpa_heatmaps(angles, angles, 90.0, groups=groups, counts=list(range(c, 0, -1)))
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (MAX_HEATMAP_CLASSES, MAX_HEATMAP_CLASSES)
    cells = MAX_HEATMAP_CLASSES
    assert f"{c} classes pooled into {cells} x {cells} cells" in fig.get_supxlabel()


def test_pooling_is_the_mean_of_each_cell_without_the_diagonal():
    m = np.arange(36.0).reshape(6, 6)
    order = np.array([5, 4, 3, 2, 1, 0])
    got = pooled(torch.as_tensor(m), order, cells=3)
    shown = m[np.ix_(order, order)].copy()
    np.fill_diagonal(shown, np.nan)
    want = np.nanmean(shown.reshape(3, 2, 3, 2), axis=(1, 3))
    assert np.allclose(got, want)


def test_cosine_counts_equal_the_histogram_of_the_pairs():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(300, 8, generator=g, dtype=torch.float64)
    angles = nctools.core.geometry.icpa_degrees(v)
    bins = np.linspace(-1, 1, 41)
    upper = angles.numpy()[np.triu_indices(300, k=1)]
    assert np.array_equal(pair_cosine_counts(angles, bins), np.histogram(np.cos(np.radians(upper)), bins)[0])
    fig = cosine_histogram(angles, None, 300)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 300 * 299 / 2


def test_per_class_bars_of_many_classes_are_grouped():
    c = 1000
    table = pd.DataFrame({"class": np.arange(c), "count": np.arange(c, 0, -1), "group": ["many"] * c,
                          "mean_norm": np.ones(c), "classifier_norm": np.ones(c), "self_duality_cos": np.ones(c)})
    fig = per_class_bars(table)
    assert len(fig.axes[0].patches) == 2 * MAX_HEATMAP_CLASSES  # means and rows, one bar per group of classes
    assert "1000 classes grouped into 200 bars" in fig.get_supxlabel()
