"""experiments/evidence_curves.py (curves over epochs from the tracks the CSV names) and
experiments/evidence_icpa.py (the ICPA grids of the committed final dumps)."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from experiments import evidence_curves as ec


def _study(tmp_path, with_tracks=((("allnc", 100), 0), (("allnc", 100), 1), (("ce", 100), 0)),
           without=((("ce", 100), 1),)):
    """A results CSV whose rows name fabricated tracks: NC3 = 1 / epoch + 0.1 * seed (+ 1 for the test split)."""
    rows = []
    for (method, beta), seed in with_tracks:
        row = {"method": method, "beta": beta, "seed": seed}
        for column, shift in (("track", 0.0), ("test_track", 1.0)):
            epochs = np.array([10, 20, 30])
            table = pd.DataFrame({"epoch": epochs, "nc1": 1.0 / epochs, "nc2_cos_std_means": 0.1 + 0 * epochs,
                                  "nc3_self_duality": 1.0 / epochs + 0.1 * seed + shift})
            path = tmp_path / f"{method}_{seed}_{column}.csv"
            table.to_csv(path, index=False)
            row[column] = str(path)
        rows.append(row)
    for (method, beta), seed in without:
        rows.append({"method": method, "beta": beta, "seed": seed, "track": "", "test_track": ""})
    path = tmp_path / "study.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["method", "beta", "seed", "track", "test_track"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_lines_are_the_seed_mean_and_bands_their_range(tmp_path):
    methods = [("allnc", 100), ("ce", 100), ("la", 100)]
    tracks, untracked = ec.load_tracks(_study(tmp_path), methods)
    assert untracked == {("ce", 100): 1} and set(tracks) == {("allnc", 100), ("ce", 100)}
    fig = ec.curves_figure(tracks, methods, untracked)
    nc3_train, nc3_test = fig.axes[2], fig.axes[5]
    allnc, ce = nc3_train.lines
    x, y = allnc.get_data()
    assert list(x) == [10, 20, 30] and y == pytest.approx(1.0 / np.array([10, 20, 30]) + 0.05)  # seeds 0 and 1
    assert nc3_test.lines[0].get_data()[1] == pytest.approx(y + 1.0)
    (band,) = nc3_train.collections  # only AllNC has two seeds
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert low == pytest.approx(1 / 30) and high == pytest.approx(0.1 + 0.1)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["AllNC-LT (2 seeds)", "CE-LT (1 seed; 1 without a track)"]
    assert fig.axes[0].get_yscale() == "log"


def test_main_writes_pdf_and_png_and_says_what_is_wrong(tmp_path, capsys):
    study = _study(tmp_path)
    out = tmp_path / "fig" / "curves.pdf"
    assert ec.main(["--csv", str(study), "--figure", str(out), "--methods", "allnc,ce@100"]) == 0
    assert out.stat().st_size > 1000 and out.with_suffix(".png").stat().st_size > 1000
    assert ec.main(["--csv", str(study), "--figure", str(out), "--methods", "la"]) == 1
    assert "no row of la has a track yet" in capsys.readouterr().err
    assert ec.main(["--csv", str(study), "--figure", str(out), "--methods", "ce@x"]) == 1
    assert "give a method as NAME or NAME@BETA" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ec.main(["--csv", str(study), "--figure", str(tmp_path / "a.png")])


def test_icpa_figures_come_from_the_committed_dumps(tmp_path, capsys):
    """experiments/evidence_icpa.py: nctools compare's ICPA grid of two committed seed-0 runs, per split."""
    from experiments import evidence_icpa
    from tests.helpers.paths import REPO

    study = REPO / "docs" / "results" / "cifar10_lt.csv"
    out = tmp_path / "icpa"
    assert evidence_icpa.main(["--csv", str(study), "--methods", "ce@100,allnc", "--out", str(out)]) == 0
    for split in ("train", "test"):
        for ext in (".pdf", ".png"):
            assert (tmp_path / f"icpa_{split}{ext}").stat().st_size > 10_000, (split, ext)
    table = capsys.readouterr().out
    # AllNC's training means sit near the simplex (P2P's targets); its test means do not
    allnc_train = next(line for line in table.splitlines() if line.startswith("| AllNC-LT | train |"))
    allnc_test = next(line for line in table.splitlines() if line.startswith("| AllNC-LT | test |"))
    assert float(allnc_train.split("|")[3]) < 5 < float(allnc_test.split("|")[3])
    assert evidence_icpa.main(["--csv", str(study), "--methods", "ce@100,allnc", "--seed", "99",
                               "--out", str(out)]) == 1
    assert "fewer than two of ce@100,allnc have a seed-99 row" in capsys.readouterr().err
