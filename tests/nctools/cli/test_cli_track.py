"""``nctools track``: per-epoch summary keys and curves from a run directory."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import nctools
from tests.helpers.cli import invoke, leftovers, make_dump, make_run, pdf_pages

CURVES = ("nc1", "cos_std", "self_duality", "nc4", "tail_icpa", "accuracy")


def test_track_reads_epochs_in_numeric_order(tmp_path):
    run = make_run(tmp_path / "run", epochs=(10, 2, 1), ratio=37.5)
    (run / "dumps" / ".epoch_0011.safetensors.abc.tmp").write_bytes(b"half a file")  # a write in progress
    (run / "run.json").write_text("{}")
    result = invoke("track", run)
    assert result.exit_code == 0, result.output
    out = run / "nctools-track"
    table = pd.read_csv(out / "track.csv")
    assert table["epoch"].tolist() == [1, 2, 10]
    assert list(table.columns) == ["epoch", *nctools.SUMMARY_KEYS]
    assert table["nc1"].is_monotonic_decreasing  # the synthetic run collapses as epochs go on
    for name in CURVES:
        assert pdf_pages(out / f"{name}.pdf") == 1
    assert pdf_pages(out / "report.pdf") == len(CURVES)
    assert "3 epochs" in result.stdout and "imbalance ratio 37.5" in result.stdout
    assert leftovers(tmp_path) == [".epoch_0011.safetensors.abc.tmp"]  # the trainer's, not ours


def test_track_options_and_json(tmp_path):
    run = tmp_path / "run"
    for e in (1, 2):  # test-split dumps in dumps-test/, .pt files
        make_dump(run / "dumps-test" / f"epoch_{e:04d}.pt", epoch=e, split="test")
    result = invoke("track", run, "--split", "test", "--out", tmp_path / "trk", "--center", "sample", "--png",
                    "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report) == ["command", "nctools_version", "out", "run", "epochs", "skipped"]
    assert report["command"] == "track" and report["nctools_version"] == nctools.__version__
    assert report["out"] == str(tmp_path / "trk") and report["skipped"] == []
    assert report["run"] == {"path": str(run), "split": "test", "method": "ce", "imbalance_ratio": None}
    rows = report["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2] and {r["center"] for r in rows} == {"sample"}
    csv = pd.read_csv(tmp_path / "trk" / "track.csv")  # the same rows as the file
    assert list(rows[0]) == list(csv.columns) and [r["nc1"] for r in rows] == pytest.approx(csv["nc1"].tolist())
    assert (tmp_path / "trk" / "cos_std.png").is_file() and result.stderr == ""


def test_the_test_split_has_its_own_default_folder(tmp_path):
    """Tracking dumps-test/ must not replace the training track beside it."""
    run = make_run(tmp_path / "run", epochs=(1, 2))
    for e in (1, 2):
        make_dump(run / "dumps-test" / f"epoch_{e:04d}.safetensors", epoch=e, split="test", noise=0.5)
    assert invoke("track", run, "--quiet").exit_code == 0
    assert invoke("track", run, "--split", "test", "--quiet").exit_code == 0
    train = pd.read_csv(run / "nctools-track" / "track.csv")
    test = pd.read_csv(run / "nctools-track-test" / "track.csv")
    assert len(train) == len(test) == 2 and not train["nc1"].equals(test["nc1"])


def test_skipped_epochs_are_in_the_json(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 2))
    (run / "dumps" / "epoch_0003.safetensors").write_bytes(b"not a dump")
    result = invoke("track", run, "--skip-bad", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["epoch"] for r in report["epochs"]] == [1, 2]
    (skipped,) = report["skipped"]
    assert skipped["file"].endswith("epoch_0003.safetensors") and skipped["problem"]


def test_track_takes_a_folder_of_epoch_files(tmp_path):
    folder = make_run(tmp_path / "run", epochs=(1, 2)) / "dumps"
    result = invoke("track", folder, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "out" / "track.csv")) == 2


def test_track_and_analyze_read_sharded_epochs(tmp_path):
    """Epochs written as dumps/epoch_NNNN/part-*.safetensors (one shard per process) read as one."""
    import torch
    from click.testing import CliRunner

    import nctools
    from nctools.cli import cli

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(30)
    weight = torch.randn(4, 6, generator=gen)
    for epoch in (1, 2):
        feats = torch.randn(4, 6, generator=gen)[labels] + 0.3 * torch.randn(120, 6, generator=gen)
        folder = tmp_path / "run" / "dumps" / f"epoch_{epoch:04d}"
        for part, rows in enumerate((slice(0, 50), slice(50, 120))):
            nctools.save_dump(folder / f"part-{part:04d}.safetensors", feats[rows], labels[rows], weight,
                              metadata={"epoch": epoch})
    result = CliRunner().invoke(cli, ["track", str(tmp_path / "run"), "--out", str(tmp_path / "track"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "track" / "track.csv").read_text().count("\n") == 3  # header + 2 epochs
    result = CliRunner().invoke(cli, ["analyze", str(folder), "--out", str(tmp_path / "one"), "--quiet",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"num_samples": 120' in result.output


def test_track_without_figures_writes_track_csv_only(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 2))
    result = invoke("track", run, "--out", tmp_path / "trk", "--no-figures", "--quiet")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "trk").iterdir()] == ["track.csv"]
    assert pd.read_csv(tmp_path / "trk" / "track.csv")["epoch"].tolist() == [1, 2]
