"""``tools/device_check.sh`` and ``tools/device_study.sh``, the scripts for a lent GPU machine, proven end to end
on the CPU.

``--smoke`` runs every step with tiny sizes (one CIFAR-10 and one CIFAR-100 run: one epoch on a few
hundred images); the runs' deadline handling (a run cut and resumable, one skipped, one failed) and
their per-dataset overrides, table rows and packing are checked on their own with the
unconstrained-features model, which needs no images.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from experiments.paper_tables import CSV_COLUMNS
from tests.helpers.cifar import in_ci
from tests.helpers.paths import REPO

# The runs come right after the probes; the core's tests get what time the runs leave.
STEPS_RUN = ("card", "gpu_tests", "bench_core", "bench_train", "data", "runs", "track", "results", "tables",
             "core_tests", "pack")
ALL_RUNS = ("cifar10_lt_r100_ce", "cifar10_lt_r100_allnc", "cifar100_lt_r100_ce", "cifar100_lt_r100_allnc",
            "cifar10_balanced_ce", "cifar10_lt_r100_la", "cifar10_lt_r100_etf", "cifar100_lt_r100_la",
            "cifar100_lt_r100_etf", "cifar100_balanced_ce")
# The smoke's runs: one per dataset, each with its own subset (n_max, beta, test images per class).
SMOKE_RUNS = {"cifar10_lt_r100_allnc": ("cifar10", "allnc", 10, 5 * 10),
              "cifar100_lt_r100_ce": ("cifar100", "ce", 2, 2 * 100)}
BENCH_TRAIN_KEYS = {"method", "device", "images_per_s", "model_images_per_s", "data_images_per_s"}
CIFAR100_TARBALL_ENV = "NCTOOLS_CIFAR100_TARBALL"


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory) -> Path:
    """CIFAR-100 as an image folder, extracted once for this module from $NCTOOLS_CIFAR100_TARBALL (or
    .cache/cifar100-jpeg.tar.gz in the checkout); skipped without it, and failed under CI, which must run it."""
    tarball = Path(os.environ.get(CIFAR100_TARBALL_ENV) or REPO / ".cache" / "cifar100-jpeg.tar.gz")
    if not tarball.is_file():
        reason = f"needs the CIFAR-100 copy: set {CIFAR100_TARBALL_ENV} to cifar100-jpeg.tar.gz ({tarball} is missing)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("cifar100")
    with tarfile.open(tarball) as tar:
        tar.extractall(folder, filter="data")
    return next(p for p in (folder, *folder.iterdir()) if (p / "train").is_dir())  # maybe under one top folder


@pytest.mark.slow  # about 3 minutes on 2 busy CPU cores: the whole script, its two CIFAR runs and their tables
def test_smoke_runs_every_step_on_the_cpu(cifar10_root, cifar100_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "CIFAR_ROOT": str(cifar10_root), "CIFAR100_ROOT": str(cifar100_root),
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", "tools/device_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"

    # summary.txt: every step, in order, with exit 0; the install step skipped on the smoke, and why.
    ended = re.findall(r"^step (\w+): exit (\d+) after \d+ s \(limit \d+ s\)", summary, re.MULTILINE)
    assert ended == [(name, "0") for name in STEPS_RUN], summary
    assert re.search(r"^step install: skipped \(.+\)$", summary, re.MULTILINE), summary
    assert "every step that ran exited 0" in summary
    assert "cifar10: using" in (out / "data.txt").read_text() and "cifar100: using" in (out / "data.txt").read_text()

    card = (out / "card.txt").read_text()
    assert "torch" in card and "python" in card

    lines = (out / "bench_train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(BENCH_TRAIN_KEYS <= set(r) for r in records), lines
    assert {"ce", "allnc"} <= {r["method"] for r in records}

    # The two smoke runs finished, each on its own dataset's images, with its run.json and the final epoch's
    # training- and test-set dumps; no checkpoint is left behind by a finished run; the other eight are listed
    # as skipped, with the reason.
    for name, (dataset, _, _, n_test) in SMOKE_RUNS.items():
        run = out / "runs" / name
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "finished"
        root = cifar10_root if dataset == "cifar10" else cifar100_root
        assert Path(record["config"]["data"]["root"]).resolve() == root.resolve()
        assert record["data"]["num_eval"] == n_test
        last = record["epochs"][-1]
        assert last["epoch"] == record["config"]["optim"]["epochs"]
        assert (run / last["dump"]).is_file() and (run / last["dump_test"]).is_file()
        assert (run / "track" / "track.csv").is_file()
        assert not (run / "checkpoints").exists()
    table = pd.read_csv(out / "results.csv").set_index("run")
    assert table.index.tolist() == list(ALL_RUNS)
    assert table["state"].tolist() == ["finished" if name in SMOKE_RUNS else "skipped" for name in ALL_RUNS]
    finished = table.loc[list(SMOKE_RUNS)]
    assert finished["eval_top1"].notna().all() and (finished["process_s"] > 0).all()
    for name in set(ALL_RUNS) - set(SMOKE_RUNS):
        assert re.search(rf"^{name}: skipped, .+", summary, re.MULTILINE), summary

    # One row per finished run in its dataset's table, with the paper's columns, the final dumps' metrics
    # (test_* from the test-set dump) and the two dumps under dumps/, named relative to $OUT.
    for name, (dataset, method, beta, n_test) in SMOKE_RUNS.items():
        rows = pd.read_csv(out / f"{dataset}_lt_full.csv")
        assert tuple(rows.columns) == CSV_COLUMNS and len(rows) == 1, rows
        row = rows.iloc[0]
        assert (row["method"], row["beta"], row["epochs"], row["n_test"]) == (method, beta, 1, n_test)
        assert row["test_acc"] == pytest.approx(finished.loc[name, "eval_top1"] / 100)
        assert pd.notna(row[["nc1", "nc3_self_duality", "test_nc1", "test_nc3_self_duality"]]).all(), row
        assert row["dump"] == f"dumps/{dataset}_{method}_b{beta}_s0.safetensors"
        assert row["test_dump"] == f"dumps/{dataset}_{method}_b{beta}_s0_test.safetensors"
        assert (out / row["dump"]).is_file() and (out / row["test_dump"]).is_file()
        assert re.search(rf"^{name}: a row in {dataset}_lt_full.csv$", summary, re.MULTILINE), summary

    # Everything also travels in one archive (without --smoke $OUT is pruned down to it), each final dump
    # once: under dumps/, where the tables name it, not again in its run's folder.
    with tarfile.open(out / "device-check.tar.gz") as tar:
        members = set(tar.getnames())
    assert {f"runs/{name}/run.json" for name in SMOKE_RUNS} <= members and "summary.txt" in members
    assert {"cifar10_lt_full.csv", "cifar100_lt_full.csv"} <= members
    assert sum(m.startswith("dumps/") for m in members) == 4
    assert not any(re.fullmatch(r"runs/[^/]+/dumps(-test)?/.+", m) for m in members), sorted(members)


@pytest.mark.slow  # about 2.5 minutes on 2 busy CPU cores: one epoch of one CIFAR-100 run, its row and tracks
def test_study_smoke_trains_a_run_of_the_cifar100_plan_and_packs_its_row_dumps_and_tracks(cifar100_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "CIFAR100_ROOT": str(cifar100_root), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "tools/device_study.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    summary = (out / "summary.txt").read_text()
    assert re.findall(r"^step (\w+): exit (\d+)", summary, re.MULTILINE) == [
        ("card", "0"), ("data", "0"), ("study", "0"), ("pack", "0")], summary
    assert (out / "data.txt").read_text().strip() == str(cifar100_root)
    rows = pd.read_csv(out / "smoke" / "cifar100_lt.csv")
    assert tuple(rows.columns) == CSV_COLUMNS and len(rows) == 1, rows
    row = rows.iloc[0]
    # the plan's CE-LT recipe on the CPU, shrunk by the smoke's overrides, which the recipe records after it
    assert (row["method"], row["beta"], row["seed"], row["epochs"], row["device"]) == ("ce", 100, 0, 1, "cpu")
    assert row["recipe"].startswith("cifar100_lt_r100_ce ") and row["recipe"].endswith(
        "data.n_max=100 optim.epochs=1 model.width=1 data.test_per_class=2")
    assert row["n_test"] == 200 and pd.notna(row[["nc1", "test_nc1", "test_nc3_self_duality"]]).all(), row
    stem = "cifar100_ce_b100_s0"
    written = (out / "written.txt").read_text().split()
    assert sorted(Path(w).name for w in written) == sorted(
        ["cifar100_lt.csv", f"{stem}.safetensors", f"{stem}_test.safetensors", f"{stem}.csv", f"{stem}_test.csv"])
    with tarfile.open(out / "study.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(written)  # the paths as written, relative to OUT's parent
    assert "rows in cifar100_lt.csv: 1" in summary


def test_reproduce_paper_device_and_set_change_every_runs_recipe_after_the_profiles_overrides():
    from experiments.reproduce_paper import on_device

    cpu = ["optim.epochs=120", "run.device=cpu", "run.progress=false"]
    assert on_device(cpu, "cpu") == cpu
    assert on_device(cpu, "cuda") == ["optim.epochs=120", "run.progress=false", "run.device=cuda", "run.amp=false"]
    plan = subprocess.run([sys.executable, "-m", "experiments.reproduce_paper", "--profile", "cpu100", "--out",
                           "/tmp/never-written", "--data100", "/d", "--dry-run", "--device", "cuda", "--set",
                           "optim.epochs=2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    commands = [line for line in plan.stdout.splitlines() if "allnc-train" in line]
    assert len(commands) == 10
    for line in commands:  # the device's overrides replace the CPU's, and --set comes last, so that it wins
        assert "run.device=cpu" not in line and line.endswith("run.device=cuda run.amp=false optim.epochs=2")


@pytest.mark.slow  # 35 s of real training; the launcher's deadline test (test_launcher.py) stays in the default run
def test_runs_past_the_deadline_are_cut_and_resumable(tmp_path):
    out = tmp_path / "runs"
    helper = [sys.executable, "-m", "experiments.gpu_runs"]
    # One at a time: a config that does not exist fails at once, the next run trains until the deadline
    # and is killed there, and the last one finds too little time left to start. (At once: allnc-train's
    # start-up, measured at 8 s on a busy 2-core machine, hence a deadline well past that.)
    done = subprocess.run([*helper, "train", "--out", str(out), "--configs", "no_such_config", "ufm_lt_r100_ce",
                           "ufm_lt_r100_allnc", "--parallel", "1", "--seconds", "30", "--min-start", "8",
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


def test_each_run_gets_its_datasets_overrides_and_a_table_row(tmp_path):
    helper = [sys.executable, "-m", "experiments.gpu_runs"]
    done = subprocess.run([*helper, "datasets", "--configs", "cifar10_lt_r100_ce", "ufm_lt_r100_ce",
                           "cifar100_balanced_ce", "cifar10_balanced_ce"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["cifar10", "synthetic", "cifar100"], done.stdout + done.stderr

    # The unconstrained-features configs train on the "synthetic" dataset: its --for overrides reach its run;
    # --only leaves one config out and --no-images another, both listed as skipped, not failed.
    out = tmp_path / "out"
    done = subprocess.run([*helper, "train", "--out", str(out / "runs"), "--configs", "ufm_lt_r100_ce",
                           "ufm_lt_r100_allnc", "cifar10_lt_r100_ce", "--only", "ufm_lt_r100_ce", "cifar10_lt_r100_ce",
                           "--no-images", "cifar10", "--seconds", "100", "--threads", "1",
                           "--set", "run.device=cpu", "run.progress=false", "run.eval_every=1000",
                           "--for", "synthetic", "optim.epochs=2", "run.dump_dtype=float16",
                           "--for", "cifar10", "optim.epochs=7"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads((out / "runs" / "status.json").read_text())
    assert {name: s["state"] for name, s in status.items()} == {
        "ufm_lt_r100_ce": "finished", "ufm_lt_r100_allnc": "skipped", "cifar10_lt_r100_ce": "skipped"}
    assert "--only" in status["ufm_lt_r100_allnc"]["why"] and "cifar10 images" in status["cifar10_lt_r100_ce"]["why"]
    record = json.loads((out / "runs" / "ufm_lt_r100_ce" / "run.json").read_text())
    assert (record["config"]["optim"]["epochs"], record["config"]["run"]["dump_dtype"]) == (2, "float16")

    # Its row, its final dump copied under the name the row gives (relative to OUT), and packed once.
    done = subprocess.run([*helper, "tables", "--out", str(out), "--seconds", "60"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pd.read_csv(out / "synthetic_lt_full.csv")
    assert tuple(rows.columns) == CSV_COLUMNS and len(rows) == 1
    assert (rows.loc[0, "method"], rows.loc[0, "beta"], rows.loc[0, "epochs"]) == ("ce", 100, 2)
    assert rows.loc[0, "dump"] == "dumps/synthetic_ce_b100_s0.safetensors" and (out / rows.loc[0, "dump"]).is_file()
    assert pd.isna(rows.loc[0, "test_dump"])  # the unconstrained-features model has no test set
    again = subprocess.run([*helper, "tables", "--out", str(out), "--seconds", "60"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and pd.read_csv(out / "synthetic_lt_full.csv").equals(rows)  # made once
    done = subprocess.run([*helper, "pack", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(out / "device-check.tar.gz") as tar:
        members = set(tar.getnames())
    assert "dumps/synthetic_ce_b100_s0.safetensors" in members and "synthetic_lt_full.csv" in members
    assert not any(m.startswith("runs/ufm_lt_r100_ce/dumps/") for m in members), sorted(members)


def test_pack_leaves_out_the_checkpoints_that_would_not_come_back(tmp_path):
    # Two cut runs' checkpoints of 3 MiB each, and room for one: the archive comes back in at most 8 - 5 parts
    # (the top files take the rest), here of 1.5 MiB. The run listed first (the more informative) keeps its
    # checkpoint; the other's stays behind, named in a warning.
    out = tmp_path / "out"
    for name in ("early", "late"):
        (out / "runs" / name / "checkpoints").mkdir(parents=True)
        (out / "runs" / name / "checkpoints" / "epoch_0003.pt").write_bytes(os.urandom(3 * 2**20))
        (out / "runs" / name / "run.json").write_text("{}")
    (out / "runs" / "status.json").write_text(json.dumps({"early": {"state": "cut"}, "late": {"state": "cut"}}))
    done = subprocess.run([sys.executable, "-m", "experiments.gpu_runs", "pack", "--out", str(out), "--part-mib",
                           "1.5"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: 1 checkpoint(s) left out" in done.stdout and "runs/late/checkpoints" in done.stdout
    packed = b"".join(p.read_bytes() for p in sorted(out.glob("device-check.tar.gz*")))
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        members = set(tar.getnames())
    assert "runs/early/checkpoints/epoch_0003.pt" in members and "runs/late/run.json" in members
    assert "runs/late/checkpoints/epoch_0003.pt" not in members
