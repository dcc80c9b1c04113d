"""End-to-end runs: smoke runs on real CIFAR-10 images, resume, and minority collapse in the UFM."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from allnc_train.checkpoint import CheckpointError, latest_checkpoint, load_model
from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config
from allnc_train.train import RunError, train
from nctools import load_dump
from nctools.core.geometry import icpa_optimum_deg
from tests.helpers.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = ["data.n_max=24", "data.imbalance_ratio=10", "data.test_per_class=8", "data.num_workers=0",
         "optim.batch_size=32", "optim.warmup_epochs=0", "run.progress=false"]


def small_cifar(method: str, root: Path, *extra: str):
    return load_config(CONFIG_DIR / f"cifar10_lt_r100_{method}.yaml", [f"data.root={root}", *SMALL, *extra])


def final_state(out: Path) -> dict:
    return torch.load(latest_checkpoint(out), map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("method", ["ce", "allnc"])
def test_one_epoch_smoke_run_writes_loadable_dumps(cifar10_root, tmp_path, method):
    cfg = small_cifar(method, cifar10_root, "optim.epochs=1", "run.dump_test=true")
    record = train(cfg, tmp_path / "run")
    counts = record["data"]["class_counts"]
    n, d = sum(counts), 64
    dump = load_dump(tmp_path / "run" / "dumps" / "epoch_0001.safetensors")
    assert dump.features.shape == (n, d) and dump.labels.shape == (n,) and dump.weight.shape == (10, d)
    assert dump.bias.shape == (10,) and dump.class_counts.tolist() == counts
    assert dump.metadata["split"] == "train" and dump.metadata["method"] == method and dump.epoch == 1
    assert dump.class_names[0] == "airplane" and float(dump.metadata["imbalance_ratio"]) == 10.0
    test = load_dump(tmp_path / "run" / "dumps-test" / "epoch_0001.safetensors")
    assert test.features.shape == (80, d) and test.metadata["split"] == "test"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "finished" and run["config"]["method"]["name"] == method
    assert run["data"]["pipeline"] == "batched" and run["data"]["eval_split"] == "test"  # CIFAR: on the device
    (entry,) = run["epochs"]
    assert {"loss", "lr", "eval_top1", "eval_many", "eval_medium", "eval_few", "dump"} <= set(entry)
    assert entry["eval_many"] is None  # n_max = 24: no class has more than 100 images
    if method == "allnc":
        assert {"hycon", "p2p", "ce_rebal"} <= set(entry) and entry["eta"] == 1.0
    assert not list((tmp_path / "run").rglob(".*tmp*"))  # atomic writes leave no temporary files


# The loader pipeline's run (20 s) is slow; the batched one and the killed CLI run below stay in the default run.
@pytest.mark.parametrize("pipeline", ["batched", pytest.param("loader", marks=pytest.mark.slow)])
def test_stopped_and_resumed_run_is_bitwise_identical(cifar10_root, tmp_path, pipeline):
    cfg = small_cifar("allnc", cifar10_root, "optim.epochs=2", "run.dump_every=0", "optim.warmup_epochs=1",
                      f"data.pipeline={pipeline}")
    train(cfg, tmp_path / "whole")
    train(cfg, tmp_path / "parts", stop_after=1)
    assert json.loads((tmp_path / "parts" / "run.json").read_text())["status"] == "running"
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg, tmp_path / "parts")
    record = train(cfg, tmp_path / "parts", resume=True)
    assert record["status"] == "finished" and [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert [p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()] == ["epoch_0002.pt"]  # keep 1
    whole, parts = final_state(tmp_path / "whole"), final_state(tmp_path / "parts")
    assert whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    changed = load_config(CONFIG_DIR / "cifar10_lt_r100_allnc.yaml", [f"data.root={cifar10_root}", *SMALL,
                                                                      "optim.epochs=3", "run.dump_every=0",
                                                                      f"data.pipeline={pipeline}"])
    with pytest.raises(RunError, match="optim.epochs"):
        train(changed, tmp_path / "parts", resume=True)


def _ufm(method: str, *extra: str):
    return load_config(CONFIG_DIR / f"ufm_lt_r100_{method}.yaml", ["run.progress=false", "run.dump_every=0", *extra])


def test_killed_cli_run_resumes_to_the_same_weights(tmp_path):
    """A real SIGKILL in the middle of a run, then ``--resume``."""
    cfg = _ufm("ce", "optim.epochs=40")
    train(cfg, tmp_path / "whole")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "allnc_train.cli", "--config", "ufm_lt_r100_ce", "--out", str(out), "--set",
           "run.progress=false", "run.dump_every=0", "optim.epochs=40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process: bitwise-equal sums
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while latest_checkpoint(out) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(latest_checkpoint(out), weights_only=True)["epoch"]
    assert stopped_at < 40, "the run finished before it could be killed"
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"
    whole, resumed = final_state(tmp_path / "whole"), final_state(out)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def _mean_pairwise_angle_deg(vectors: torch.Tensor) -> float:
    v = F.normalize(vectors.double(), dim=1)
    cos = (v @ v.T).clamp(-1, 1)
    i, j = torch.triu_indices(len(v), len(v), 1)
    return torch.rad2deg(torch.acos(cos[i, j])).mean().item()


def tail_angles(out: Path, counts: list[int]) -> tuple[float, float]:
    """Mean pairwise angle of the 5 rarest classes' classifier rows and centred means (degrees)."""
    state = final_state(out)
    H = state["backbone.table"]
    W = state.get("classifier.weight", state.get("etf_weight"))
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    means = torch.stack([H[y == c].mean(0) for c in range(len(counts))])
    centred = means - means.mean(0)  # class-centred, nctools' default centre
    tail = slice(len(counts) // 2, None)
    return _mean_pairwise_angle_deg(W[tail]), _mean_pairwise_angle_deg(centred[tail])


@pytest.mark.slow  # 30 s; the short claims test (tests/experiments/test_ufm_claims.py) stays in the default run
def test_unconstrained_features_show_minority_collapse_under_ce_and_allnc_counters_it(tmp_path):
    optimum = icpa_optimum_deg(10)  # 96.38 degrees
    record = train(_ufm("ce"), tmp_path / "ce")
    counts = record["data"]["class_counts"]
    assert counts == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    ce_rows, ce_means = tail_angles(tmp_path / "ce", counts)
    # Complete minority collapse (Fang et al. 2021): the tail rows and the tail means are both squeezed.
    assert ce_rows < optimum - 10 and ce_means < optimum - 5, (ce_rows, ce_means)
    last = record["epochs"][-1]
    assert last["eval_few"] < last["eval_many"] == 100.0  # the squeezed rows cost the rare classes training accuracy
    train(_ufm("allnc"), tmp_path / "allnc")
    nc_rows, nc_means = tail_angles(tmp_path / "allnc", counts)
    assert nc_rows > optimum - 2 and nc_means > optimum - 2, (nc_rows, nc_means)
    assert nc_rows > ce_rows + 10 and nc_means > ce_means + 5


@pytest.mark.gpu
def test_amp_smoke_run_on_gpu(cifar10_root, tmp_path):
    cfg = small_cifar("allnc", cifar10_root, "optim.epochs=1", "run.device=cuda", "run.amp=true")
    record = train(cfg, tmp_path / "run")
    assert record["environment"]["device"].startswith("cuda") and record["status"] == "finished"
    dump = load_dump(tmp_path / "run" / "dumps" / "epoch_0001.safetensors")
    assert torch.isfinite(dump.features).all()


def test_load_model_rebuilds_the_checkpoint(tmp_path):
    record = train(_ufm("ce", "optim.epochs=2", "run.dump_every=1"), tmp_path / "run")
    model, cfg, ckpt = load_model(latest_checkpoint(tmp_path / "run"))
    assert cfg.model.arch == "ufm" and ckpt["epoch"] == 2 and not model.training
    dump = load_dump(tmp_path / "run" / record["epochs"][-1]["dump"])
    with torch.no_grad():
        assert torch.equal(model.features(torch.arange(len(dump.labels))), dump.features)
    assert torch.equal(model.weight, dump.weight)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(tmp_path / "bad.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an allnc_train checkpoint"):
        load_model(tmp_path / "other.pt")


@pytest.mark.parametrize("method, switches, label", [
    ("la", [], "la"), ("etf", [], "etf"), ("bbn", [], "bbn"), ("allnc", ["gbbn.enabled=false"], "allnc-gbbn"),
    ("allnc", ["hycon.enabled=false"], "allnc-hycon"), ("allnc", ["p2p.enabled=false"], "allnc-p2p"),
])
def test_every_method_and_ablation_runs_in_the_loop(tmp_path, method, switches, label):
    cfg = _ufm("ce", f"method.name={method}", "gbbn.enabled=null", "hycon.enabled=null", "p2p.enabled=null",
               *switches, "optim.epochs=2", "run.dump_every=1", "optim.schedule=step", "optim.milestones=[1]")
    record = train(cfg, tmp_path / "run")
    last = record["epochs"][-1]
    assert record["method"] == label and record["status"] == "finished"
    assert math.isfinite(last["loss"]) and last["lr"] == pytest.approx(0.05)
    assert ("ce_rebal" in last) == cfg.gbbn.enabled and ("hycon" in last) == cfg.hycon.enabled
    assert ("p2p" in last) == cfg.p2p.enabled
    dump = load_dump(tmp_path / "run" / "dumps" / "epoch_0002.safetensors")
    dim = 64 if method == "bbn" else 32  # BBN's classifier reads both branches' features (allnc_train/methods/bbn.py)
    assert dump.metadata["method"] == label and dump.weight.shape == (10, dim)
    if method == "etf":
        assert dump.bias is None


def test_a_failing_torch_compile_stops_the_run_with_one_sentence(tmp_path, monkeypatch):
    from torch._dynamo.exc import Unsupported

    def compile_that_breaks(self, *args, **kwargs):  # torch.compile fails at the first forward, not before
        def forward(*a, **k):
            raise Unsupported("a graph break made up by the test")
        self.forward = forward

    monkeypatch.setattr(torch.nn.Module, "compile", compile_that_breaks)
    broken = r"^run.compile: torch.compile failed on this model \(.*\); set run.compile=false"
    with pytest.raises(RunError, match=broken):
        train(_ufm("ce", "optim.epochs=1", "run.compile=true"), tmp_path / "broken")

    def no_compile(self, *args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch.nn.Module, "compile", no_compile)
    with pytest.raises(RunError, match="torch.compile is not available here .Dynamo is not supported"):
        train(_ufm("ce", "optim.epochs=1", "run.compile=true"), tmp_path / "unavailable")


@pytest.mark.slow
def test_compiled_run_trains_the_same_weights(tmp_path):
    """The real torch.compile (inductor, a C++ toolchain on the CPU): same losses as the eager run."""
    plain = train(_ufm("ce", "optim.epochs=2"), tmp_path / "plain")
    compiled = train(_ufm("ce", "optim.epochs=2", "run.compile=true"), tmp_path / "compiled")
    for a, b in zip(plain["epochs"], compiled["epochs"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert set(final_state(tmp_path / "plain")) == set(final_state(tmp_path / "compiled"))  # same keys


def test_a_run_begun_before_a_config_key_existed_resumes_with_its_default(tmp_path):
    """A key added to the schema after a run began (here ``hycon.views_to_ce``) is absent from the run's
    checkpoint: resuming reads it as its default, the behaviour the run was trained with, not as a change."""
    cfg = _ufm("ce", "optim.epochs=3")
    train(cfg, tmp_path / "run", stop_after=1)
    (ckpt_file,) = (tmp_path / "run" / "checkpoints").iterdir()
    ckpt = torch.load(ckpt_file, weights_only=True)
    del ckpt["config"]["hycon"]["views_to_ce"]  # as a checkpoint written before the key existed
    torch.save(ckpt, ckpt_file)
    record = train(cfg, tmp_path / "run", resume=True)
    assert record["status"] == "finished" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
