"""Real data end to end: a small CNN (the trainer's ResNet-32) trained for a few epochs on the CPU on
a long-tailed subset of the offline CIFAR-10 JPEGs, then analysed through the CLI from its
checkpoint (model rebuilt from the stored config, features extracted on real images) and tracked
over its per-epoch dumps."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.helpers.cli import invoke, pdf_pages

OVERRIDES = ["data.n_max=60", "data.imbalance_ratio=20", "data.test_per_class=10", "data.num_workers=0",
             "optim.epochs=3", "optim.batch_size=32", "optim.lr=0.05", "optim.warmup_epochs=0",
             "run.progress=false", "run.device=cpu"]


@pytest.fixture(scope="module")
def trained_run(cifar10_root, tmp_path_factory):
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    cfg = load_config(CONFIG_DIR / "cifar10_lt_r100_ce.yaml", [f"data.root={cifar10_root}", *OVERRIDES])
    run = tmp_path_factory.mktemp("runs") / "c10_lt_ce"
    record = train(cfg, run)
    return run, record


@pytest.mark.slow
def test_checkpoint_through_the_cli(trained_run, cifar10_root, tmp_path):
    run, record = trained_run
    ckpt = run / "checkpoints" / "epoch_0003.pt"
    result = invoke("analyze", ckpt, "--data", cifar10_root, "--out", tmp_path / "train", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "method ce" in result.stdout and "epoch 3" in result.stdout
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    counts = record["data"]["class_counts"]
    assert metrics["summary"]["num_samples"] == sum(counts) and metrics["summary"]["dim"] == 64
    # The checkpoint's rebuilt model on the same images gives the dump the trainer wrote.
    dump_result = invoke("analyze", run / "dumps" / "epoch_0003.safetensors", "--out", tmp_path / "dump",
                         "--format", "json", "--quiet")
    from_dump = json.loads(dump_result.stdout)["summary"]
    for key in ("nc1", "nc2_cos_std_means", "nc3_self_duality", "accuracy"):
        assert metrics["summary"][key] == pytest.approx(from_dump[key], rel=1e-3, abs=1e-5), key
    assert pdf_pages(tmp_path / "train" / "report.pdf") == 4  # the front page and the three figures

    test = invoke("analyze", ckpt, "--data", cifar10_root, "--split", "test", "--out", tmp_path / "test",
                  "--format", "json", "--quiet")
    assert test.exit_code == 0, test.output
    summary = json.loads(test.stdout)
    assert summary["summary"]["num_samples"] == 100
    per_class = pd.read_csv(tmp_path / "test" / "per_class.csv")
    assert per_class["train_count"].tolist() == counts  # head/tail split by training counts on the test set
    assert per_class["count"].tolist() == [10] * 10


@pytest.mark.slow
def test_track_the_real_run(trained_run, tmp_path):
    run, _ = trained_run
    result = invoke("track", run, "--out", tmp_path / "trk", "--quiet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "trk" / "track.csv")
    assert table["epoch"].tolist() == [1, 2, 3] and table["accuracy"].notna().all()
    assert torch.isfinite(torch.tensor(table["nc1"].to_numpy())).all()
