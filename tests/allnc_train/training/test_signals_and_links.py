"""The trainer under SIGTERM / SIGHUP, links inside its run folder, and epochs past 9999."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allnc_train.checkpoint import latest_checkpoint, save_checkpoint
from allnc_train.rundir import RunError, RunLock, interrupted
from allnc_train.train import train
from nctools.io import layout
from nctools.io.run_folder import RunFolderError
from tests.allnc_train.training.test_hostile_trainer import ENV, FAST, _ufm
from tests.helpers.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIGNAL_AFTER_EPOCH_1 = """
import os, signal, sys
import allnc_train.train as t
from allnc_train.config import load_config
from allnc_train.cli import CONFIG_DIR
real = t._save_epoch
def save_then_signal(out, cfg, epoch, *args):
    real(out, cfg, epoch, *args)
    if epoch == 1:  # the scheduler stops the job while epoch 2 trains
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
t._save_epoch = save_then_signal
try:
    t.train(load_config(CONFIG_DIR / "ufm_lt_r100_ce.yaml", sys.argv[3:]), sys.argv[1])
except KeyboardInterrupt as exc:
    from nctools.interrupts import exit_status
    print(type(exc).__name__, exit_status(exc))
"""


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(tmp_path, name, status):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_EPOCH_1, str(out), name, *FAST, "run.dump_every=1"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["Interrupted", str(status)], done.stderr  # not killed outright
    assert not (out / layout.LOCK).exists()  # the lock was given up
    assert [p.name for p in out.rglob(".*")] == []  # no temporary left
    assert layout.epoch_of(latest_checkpoint(out)) == 1  # the last complete epoch kept
    assert json.loads((out / "run.json").read_text())["epochs"][-1]["epoch"] == 1


def test_the_interrupt_hint_before_the_first_checkpoint_starts_again_and_is_quoted(tmp_path):
    out = tmp_path / "my run"
    assert interrupted(out, "allnc-train", "c10 lt.yaml") == (
        f"interrupted before the first epoch was saved; start it again with: allnc-train --config 'c10 lt.yaml' "
        f"--out '{out}'")
    train(_ufm("optim.epochs=1"), out)
    assert interrupted(out, "allnc-train") == f"interrupted; continue with: allnc-train --out '{out}' --resume"


def test_a_run_lock_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / layout.LOCK).symlink_to(victim)
    with pytest.raises(RunFolderError, match="run.lock: is a symbolic link"):
        RunLock.acquire(out)
    with pytest.raises(RunError, match="run.lock: is a symbolic link"):
        train(_ufm(), out)
    assert victim.read_text() == "precious"


def test_no_checkpoint_is_written_through_a_linked_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / layout.CHECKPOINTS).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunError, match="checkpoints: is a symbolic link inside the run folder"):
        train(_ufm(), out)
    assert list(elsewhere.iterdir()) == []


def test_pruning_keeps_the_newest_checkpoints_across_epoch_9999(tmp_path):
    cfg = _ufm()
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    record = {"epochs": [], "data": {"class_counts": [1, 1], "class_names": ["a", "b"]}}
    for epoch in (9998, 9999, 10000, 10001):
        save_checkpoint(tmp_path, cfg, epoch, model, optimizer, scaler, record, keep=2)
    assert [p.name for p in layout.checkpoint_files(tmp_path)] == ["epoch_10000.pt", "epoch_10001.pt"]
    assert latest_checkpoint(tmp_path).name == "epoch_10001.pt"


def test_dumps_and_track_read_epochs_across_9999_in_order(tmp_path):
    from nctools.report.tracking import track_run
    from tests.helpers.cli import make_dump

    for epoch in (10000, 9999, 10001):
        make_dump(layout.dump_path(tmp_path, "train", epoch, "safetensors"), epoch=epoch, noise=1.0 / epoch)
    assert track_run(tmp_path, device="cpu").table["epoch"].tolist() == [9999, 10000, 10001]


def test_a_run_signal_handler_of_the_caller_is_left_alone(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a))
    try:
        train(_ufm("optim.epochs=1"), tmp_path / "run")
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen  # the caller's handler, not ours
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert Path(tmp_path / "run" / "run.json").exists()
