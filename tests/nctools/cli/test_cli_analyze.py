"""``nctools analyze``: dumps in every format, options, outputs, and models (state dict + --arch,
allnc_train checkpoints) through click's CliRunner."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import nctools
from tests.helpers.cli import COUNTS, NAMES, image_folder, invoke, leftovers, make_dump, pdf_pages

FIGURES = ("icpa.pdf", "per_class.pdf", "cosines.pdf")


@pytest.fixture()
def dump(tmp_path) -> Path:
    return make_dump(tmp_path / "epoch_0005.safetensors", epoch=5, ratio=37.5)


def test_analyze_dump_writes_the_full_report(dump, tmp_path):
    out = tmp_path / "report"
    result = invoke("analyze", dump, "--out", out)
    assert result.exit_code == 0, result.output
    table = result.stdout
    for heading in ("NC1", "NC2", "ICPA", "optimum", "NC3", "NC4 and accuracy", "Tail classes"):
        assert heading in table
    assert "101.5" in table  # the C = 6 optimum arccos(-1/5) beside the angles
    assert "epoch 5" in table and "imbalance ratio 37.5" in table
    assert "\nverdict: " in table  # the verdict last, under the table
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["summary"]) == list(nctools.SUMMARY_KEYS)
    assert metrics["options"]["center"] == "class" and metrics["options"]["groups"] == [100.0, 20.0]
    assert metrics["source"]["metadata"]["epoch"] == 5  # with its JSON type
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class["name"].tolist() == NAMES and per_class["count"].tolist() == list(COUNTS)
    assert {"group", "mean_norm", "classifier_norm", "self_duality_cos", "ncc_accuracy"} <= set(per_class)
    for name in FIGURES:
        assert pdf_pages(out / name) == 1
    assert pdf_pages(out / "report.pdf") == 1 + len(FIGURES)  # the front page, then every figure
    assert not list(out.glob("*.png")) and leftovers(tmp_path) == []
    assert "wrote" in result.stderr


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_analyze_reads_every_dump_format(tmp_path, suffix):
    path = make_dump(tmp_path / f"d{suffix}")
    result = invoke("analyze", path, "--out", tmp_path / "out", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["num_samples"] == sum(COUNTS)
    assert result.stderr == ""  # --quiet: nothing but the results


def test_options_reach_the_numbers(dump, tmp_path):
    result = invoke("analyze", dump, "-o", tmp_path / "out", "--center", "sample", "--groups", "50,10",
                    "--device", "cpu", "--png", "--format", "json", "--split", "train")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["summary"]["center"] == "sample"
    assert metrics["options"]["groups"] == [50.0, 10.0] and metrics["options"]["device"] == "cpu"
    groups = pd.read_csv(tmp_path / "out" / "per_class.csv")["group"].tolist()
    assert groups == ["many", "many", "medium", "medium", "few", "few"]
    for name in FIGURES:
        assert (tmp_path / "out" / name.replace(".pdf", ".png")).is_file()


def test_no_figures_writes_the_tables_only_with_the_same_numbers(dump, tmp_path):
    drawn = invoke("analyze", dump, "--out", tmp_path / "drawn", "--format", "json", "--quiet")
    tables = invoke("analyze", dump, "--out", tmp_path / "tables", "--format", "json", "--no-figures")
    assert drawn.exit_code == 0 and tables.exit_code == 0, tables.output
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["metrics.json", "per_class.csv"]
    assert tables.stderr.strip().endswith("(metrics.json, per_class.csv)")  # what the wrote line lists
    mine, theirs = (json.loads(r.stdout) for r in (tables, drawn))
    assert mine["summary"] == theirs["summary"] and mine["verdict"] == theirs["verdict"]
    assert (tmp_path / "tables" / "per_class.csv").read_text() == (tmp_path / "drawn" / "per_class.csv").read_text()
    assert leftovers(tmp_path) == []


def test_null_values_show_as_dashes(tmp_path):
    path = make_dump(tmp_path / "noclf.safetensors", classifier=False)
    result = invoke("analyze", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    accuracy_line = next(line for line in result.stdout.splitlines() if "accuracy (classifier)" in line)
    assert accuracy_line.split()[-1] == "-"
    assert "note: no classifier was given" in result.stdout
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["summary"]["accuracy"] is None


def test_existing_out_keeps_other_files(dump, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "metrics.json").write_text("old")
    assert invoke("analyze", dump, "--out", out).exit_code == 0
    assert (out / "mine.txt").read_text() == "keep me"
    assert json.loads((out / "metrics.json").read_text())["summary"]["num_classes"] == len(COUNTS)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- models



def test_state_dict_with_torchvision_arch(tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), weights)
    data = image_folder(tmp_path / "images")
    result = invoke("analyze", weights, "--arch", "resnet18", "--data", data, "--image-size", "32",
                    "--out", tmp_path / "out", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["summary"]["num_samples"] == 12 and metrics["summary"]["dim"] == 512
    assert metrics["options"]["arch"] == "resnet18"
    assert pd.read_csv(tmp_path / "out" / "per_class.csv")["name"].tolist() == ["a", "b", "c"]


def test_state_dict_with_resnet32_and_split_folder(tmp_path):
    from allnc_train.models import NCModel, ResNetCifar

    torch.manual_seed(0)
    weights = tmp_path / "r32.pt"
    torch.save(NCModel(ResNetCifar(5, 1), 3).state_dict(), weights)
    image_folder(tmp_path / "cifar" / "train")
    image_folder(tmp_path / "cifar" / "test", per_class=2)
    result = invoke("analyze", weights, "--arch", "resnet32", "--data", tmp_path / "cifar", "--split", "test",
                    "--out", tmp_path / "out", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["num_samples"] == 6 and summary["dim"] == 64


def test_allnc_train_checkpoint_is_rebuilt_from_its_config(tmp_path):
    """An unconstrained-features (ufm) checkpoint: the stored config rebuilds the model, no images needed."""
    from allnc_train.config import load_config
    from allnc_train.data import build_data
    from allnc_train.methods import build_model
    from allnc_train.schema import to_dict

    cfg = load_config(None, ["data.dataset=synthetic", "model.arch=ufm", "data.num_classes=4", "data.n_max=30",
                             "data.imbalance_ratio=10", "model.feature_dim=6"])
    data = build_data(cfg.data, views=1)
    model = build_model(cfg, data.num_classes, len(data.train_labels))
    ckpt = tmp_path / "checkpoints" / "epoch_0003.pt"
    ckpt.parent.mkdir()
    torch.save({"format": "allnc_train.checkpoint/1", "epoch": 3, "config": to_dict(cfg), "model": model.state_dict(),
                "class_counts": data.class_counts, "class_names": data.class_names}, ckpt)
    result = invoke("analyze", ckpt, "--out", tmp_path / "out", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["summary"]["num_samples"] == sum(data.class_counts) and metrics["summary"]["dim"] == 6
    assert metrics["source"]["metadata"]["epoch"] == 3 and metrics["source"]["metadata"]["method"] == "ce"
    table = torch.load(ckpt, weights_only=True)["model"]["backbone.table"]
    per_class = pd.read_csv(tmp_path / "out" / "per_class.csv")
    assert per_class["train_count"].tolist() == data.class_counts
    assert table.shape == (sum(data.class_counts), 6)
