"""``tools/device_check.sh``, the script for a lent GPU machine, proven end to end on the CPU.

``--smoke`` runs every step with tiny sizes (the CIFAR runs: one epoch on a few dozen images); the
runs' deadline handling (a run cut and resumable, one skipped, one failed) is checked on its own with
the unconstrained-features model, which needs no images.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from tests.helpers.paths import REPO

STEPS_RUN = ("card", "gpu_tests", "core_tests", "bench_core", "bench_train", "data", "runs", "track", "results",
             "pack")
ALL_RUNS = ("cifar10_lt_r100_ce", "cifar10_lt_r100_allnc", "cifar10_balanced_ce", "cifar10_lt_r100_etf",
            "cifar10_lt_r100_la", "cifar10_lt_r100_bbn")
SMOKE_RUNS = ALL_RUNS[:2]
BENCH_TRAIN_KEYS = {"method", "device", "images_per_s", "model_images_per_s", "data_images_per_s"}


@pytest.mark.slow  # about 45 s on 2 CPU cores: the whole script, its CIFAR runs and test subsets included
def test_smoke_runs_every_step_on_the_cpu(cifar10_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "CIFAR_ROOT": str(cifar10_root), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "tools/device_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"

    # summary.txt: every step, in order, with exit 0; the install step skipped on the smoke, and why.
    ended = re.findall(r"^step (\w+): exit (\d+) after \d+ s \(limit \d+ s\)", summary, re.MULTILINE)
    assert ended == [(name, "0") for name in STEPS_RUN], summary
    assert re.search(r"^step install: skipped \(.+\)$", summary, re.MULTILINE), summary
    assert "every step that ran exited 0" in summary

    card = (out / "card.txt").read_text()
    assert "torch" in card and "python" in card

    lines = (out / "bench_train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(BENCH_TRAIN_KEYS <= set(r) for r in records), lines
    assert {"ce", "allnc"} <= {r["method"] for r in records}

    # The two smoke runs finished, each with its run.json and the final epoch's dump; no checkpoint is
    # left behind by a finished run; the other four are listed as skipped, with the reason.
    for name in SMOKE_RUNS:
        run = out / "runs" / name
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "finished"
        last = record["epochs"][-1]
        assert last["epoch"] == record["config"]["optim"]["epochs"]
        assert (run / last["dump"]).is_file()
        assert (run / "track" / "track.csv").is_file()
        assert not (run / "checkpoints").exists()
    table = pd.read_csv(out / "results.csv")
    assert table["run"].tolist() == list(ALL_RUNS)
    assert table["state"].tolist() == ["finished"] * 2 + ["skipped"] * 4
    assert table.loc[:1, "eval_top1"].notna().all() and (table.loc[:1, "process_s"] > 0).all()
    for name in ALL_RUNS[2:]:
        assert re.search(rf"^{name}: skipped, .+", summary, re.MULTILINE), summary

    # Everything also travels in one archive (without --smoke $OUT is pruned down to it).
    with tarfile.open(out / "device-check.tar.gz") as tar:
        members = set(tar.getnames())
    assert {f"runs/{name}/run.json" for name in SMOKE_RUNS} <= members and "summary.txt" in members


def test_runs_past_the_deadline_are_cut_and_resumable(tmp_path):
    out = tmp_path / "runs"
    helper = [sys.executable, "-m", "experiments.gpu_runs"]
    # One at a time: a config that does not exist fails at once, the next run trains until the deadline
    # and is killed there, and the last one finds too little time left to start.
    done = subprocess.run([*helper, "train", "--out", str(out), "--configs", "no_such_config", "ufm_lt_r100_ce",
                           "ufm_lt_r100_allnc", "--parallel", "1", "--seconds", "14", "--min-start", "8",
                           "--grace", "3", "--threads", "1", "--set", "run.device=cpu", "run.progress=false",
                           "optim.epochs=100000", "run.dump_every=0", "run.eval_every=1000",
                           "run.keep_checkpoints=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # a failed run fails the step; cut and skipped do not
    status = json.loads((out / "status.json").read_text())
    assert [s["state"] for s in status.values()] == ["failed", "cut", "skipped"], status
    assert "no_such_config" in status["no_such_config"]["why"]
    cut = status["ufm_lt_r100_ce"]
    assert cut["epoch"] >= 1, cut
    # The last checkpoint stays (and the one before it, when the kill fell between writing one and pruning
    # the other); it is at least as new as run.json, which is written after it.
    kept = sorted((out / "ufm_lt_r100_ce" / "checkpoints").glob("epoch_*.pt"))
    assert 1 <= len(kept) <= 2 and int(kept[-1].stem.split("_")[1]) >= cut["epoch"], kept
    assert json.loads((out / "ufm_lt_r100_ce" / "run.json").read_text())["status"] == "running"

    done = subprocess.run([*helper, "results", "--out", str(out), "--csv", str(tmp_path / "results.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"ufm_lt_r100_ce: cut at epoch {cut['epoch']}/100000" in done.stdout
    assert "--resume" in done.stdout and "ufm_lt_r100_allnc: skipped" in done.stdout
    assert pd.read_csv(tmp_path / "results.csv")["state"].tolist() == ["failed", "cut", "skipped"]
