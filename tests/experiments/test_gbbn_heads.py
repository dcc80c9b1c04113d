"""experiments/gbbn_heads.py: every GBBN head of a real (tiny) AllNC run on the validation split and the test set."""
from __future__ import annotations

import csv
import json

import pytest

import nctools
from allnc_train.data import lt_class_counts, lt_subset_indices, lt_unused_indices, read_image_folder
from experiments import gbbn_heads
from nctools.io.layout import DUMP_FOLDERS, epoch_files, record_path

OVERRIDES = ["data.n_max=20", "data.imbalance_ratio=10", "data.num_workers=0", "optim.epochs=2",
             "optim.batch_size=16", "optim.lr=0.05", "optim.warmup_epochs=0", "run.progress=false", "run.device=cpu",
             "run.dump_test=false"]


def test_validation_split_is_outside_every_subset_of_that_n_max(cifar10_root):
    _, labels, _ = read_image_folder(cifar10_root / "train")
    unused = set(lt_unused_indices(labels, n_max=500, per_class=300).tolist())
    assert len(unused) == 3000
    for beta in (1, 10, 100):
        assert not unused & set(lt_subset_indices(labels, lt_class_counts(500, 10, beta)).tolist())


@pytest.mark.slow
def test_every_head_scored_and_the_mean_head_is_the_trainers_classifier(cifar10_root, tmp_path, one_torch_thread):
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    run = tmp_path / "allnc"
    record = train(load_config(CONFIG_DIR / "cifar10_lt_r100_allnc.yaml", [f"data.root={cifar10_root}", *OVERRIDES]),
                   run)
    out = tmp_path / "heads.csv"
    args = [str(run), "--data", str(cifar10_root), "--val-per-class", "5", "--csv", str(out)]
    assert gbbn_heads.main(args) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["head"], r["split"]) for r in rows} == {(h, s) for h in ("mean", "conventional", "rebalancing")
                                                       for s in ("val", "test")}
    assert {r["n"] for r in rows} == {"50", "10000"}
    chosen = {r["head"] for r in rows if r["chosen"] == "1"}
    val = {r["head"]: float(r["top1"]) for r in rows if r["split"] == "val"}
    assert len(chosen) == 1 and val[chosen.pop()] == max(val.values())
    mean_test = next(r for r in rows if r["head"] == "mean" and r["split"] == "test")
    assert float(mean_test["top1"]) == pytest.approx(record["epochs"][-1]["eval_top1"] / 100, abs=1e-6)
    dump = nctools.load_dump(epoch_files((run / DUMP_FOLDERS["train"]).glob("*.safetensors"))[-1])
    summary = nctools.analyze(dump.features.float(), dump.labels, weight=dump.weight,
                              class_counts=dump.class_counts, device="cpu", progress=False).summary
    assert float(mean_test["nc3_self_duality"]) == pytest.approx(summary["nc3_self_duality"], rel=1e-5)
    assert json.loads(record_path(run).read_text())["config"]["gbbn"]["heads"] == 2
