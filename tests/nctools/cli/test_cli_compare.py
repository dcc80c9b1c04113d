"""``nctools compare``: side-by-side figures of several runs."""
from __future__ import annotations

import json

import pandas as pd

from tests.helpers.cli import invoke, make_run, pdf_pages


def test_compare_runs_of_different_ratios(tmp_path):
    runs = [make_run(tmp_path / name, ratio=ratio, method=method)
            for name, ratio, method in (("ce_r10", 10, "ce"), ("ce_r100", 100, "ce"), ("allnc_r100", 100, "allnc"))]
    result = invoke("compare", *runs, "--labels", "CE r10, CE r100, AllNC r100", "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    out = tmp_path / "cmp"
    table = pd.read_csv(out / "compare.csv")
    assert table["label"].tolist() == ["CE r10", "CE r100", "AllNC r100"]
    assert table["imbalance_ratio"].tolist() == [10, 100, 100] and table["epoch"].tolist() == [3, 3, 3]
    for name in ("icpa_grid", "cos_std", "self_duality", "vs_ratio"):
        assert pdf_pages(out / f"{name}.pdf") == 1
    assert pdf_pages(out / "report.pdf") == 4
    assert "AllNC r100" in result.stdout


def test_compare_same_ratio_has_no_ratio_figure(tmp_path):
    runs = [make_run(tmp_path / "a" / "run", ratio=50), make_run(tmp_path / "b" / "run", ratio=50)]
    result = invoke("compare", *runs, "--out", tmp_path / "cmp", "--format", "json", "--png", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report) == ["command", "nctools_version", "out", "runs"] and report["command"] == "compare"
    rows = report["runs"]
    assert [r["label"] for r in rows] == ["a/run", "b/run"]  # same folder names: the parents tell them apart
    assert not (tmp_path / "cmp" / "vs_ratio.pdf").exists()
    assert pdf_pages(tmp_path / "cmp" / "report.pdf") == 3 and (tmp_path / "cmp" / "icpa_grid.png").is_file()


def test_compare_without_figures_writes_compare_csv_only(tmp_path):
    runs = [make_run(tmp_path / name, ratio=ratio) for name, ratio in (("r10", 10), ("r100", 100))]
    result = invoke("compare", *runs, "--out", tmp_path / "cmp", "--no-figures", "--quiet")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "cmp").iterdir()] == ["compare.csv"]
    assert pd.read_csv(tmp_path / "cmp" / "compare.csv")["imbalance_ratio"].tolist() == [10, 100]
