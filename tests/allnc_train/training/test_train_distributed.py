"""The trainer across processes: 2 CPU processes on gloo equal one process where they should.

Spawned workers join a ``file://`` process group and call ``train`` (which then uses that group);
one test launches the real CLI under ``torch.distributed.run`` (torchrun).
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nctools
from allnc_train.checkpoint import latest_checkpoint, load_model
from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config
from allnc_train.data.samplers import KINDS, ClassAwareSampler
from allnc_train.distributed import ShardedSampler, block
from allnc_train.evaluate import accuracy_by_group
from allnc_train.train import train
from nctools import load_dump
from tests.helpers.datagen import two_passes
from tests.helpers.launch import run_processes
from tests.helpers.paths import REPO

WORLD = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# Samplers and blocks (no processes)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_shares_interleave_to_the_single_process_sequence(kind, world):
    counts = [40, 17, 9, 3, 2]  # 71 samples: uneven for 2 and 3 ranks
    labels = np.repeat(np.arange(len(counts)), counts)
    base = ClassAwareSampler(labels, counts, kind, seed=7, stream=1)
    shards = [ShardedSampler(base, r, world) for r in range(world)]
    for epoch in (1, 4):
        for s in shards:
            s.set_epoch(epoch)
        single = list(base)
        shares = [list(s) for s in shards]
        assert {len(s) for s in shares} == {len(shards[0])} == {math.ceil(len(single) / world)}
        merged = [None] * (len(shares[0]) * world)
        for r, share in enumerate(shares):
            merged[r::world] = share
        pad = len(merged) - len(single)
        assert merged[:len(single)] == single and merged[len(single):] == single[:pad]


def test_evaluation_blocks_cover_every_sample_once_in_order():
    for n in (0, 1, 5, 80, 1236):
        for world in (1, 2, 3, 8):
            assert [i for r in range(world) for i in block(n, r, world)] == list(range(n))


# ---------------------------------------------------------------------------------------------
# Two spawned processes: unconstrained features, resume, merged statistics and metrics
# ---------------------------------------------------------------------------------------------

def _ufm(*extra: str):
    return load_config(CONFIG_DIR / "ufm_lt_r100_ce.yaml", ["run.progress=false", "run.device=cpu", "run.dump_every=1",
                                                            "optim.epochs=2", *extra])


def _ufm_worker(rank: int, world: int, tmp: str) -> dict:
    tmp = Path(tmp)
    record = train(_ufm(), tmp / "ddp")
    train(_ufm(), tmp / "parts", stop_after=1)
    train(_ufm(), tmp / "parts", resume=True)
    try:  # optim.batch_size is the global batch: it must split evenly over the ranks
        train(_ufm("optim.batch_size=127"), tmp / "odd")
        odd = None
    except ValueError as exc:
        odd = str(exc)
    # The measurement accumulator across ranks: each rank measures an interleaved share of the dump.
    dump = load_dump(tmp / "ddp" / "dumps" / "epoch_0002.safetensors")
    mine = slice(rank, None, world)
    acc = nctools.NeuralCollapse(dump.num_classes, dump.weight.double(), dump.bias.double(), device="cpu")
    merged = two_passes(acc, dump.features[mine].double(), dump.labels[mine], step=97).to_dict()
    return {"record": record, "merged": merged, "odd": odd}


@pytest.fixture(scope="module")
def ddp_ufm(tmp_path_factory):
    """A 2-epoch UFM run on 2 gloo processes (whole, and stopped + resumed), plus rank 0's results."""
    tmp = tmp_path_factory.mktemp("ddp_ufm")
    return tmp, run_processes(_ufm_worker, str(tmp), tmp_path=tmp, world=WORLD, threads=1)


def test_ddp_run_writes_one_loadable_dump_per_epoch_in_sample_order(ddp_ufm):
    tmp, results = ddp_ufm
    record = results["record"]
    counts = record["data"]["class_counts"]
    assert record["status"] == "finished" and record["environment"]["world_size"] == WORLD
    assert record["environment"]["backend"] == "gloo"
    for epoch in (1, 2):
        dump = load_dump(tmp / "ddp" / "dumps" / f"epoch_{epoch:04d}.safetensors")
        assert dump.features.shape == (sum(counts), 32) and dump.weight.shape == (10, 32) and dump.epoch == epoch
        assert dump.class_counts.tolist() == counts
        assert torch.equal(dump.labels, torch.repeat_interleave(torch.arange(10), torch.tensor(counts)))
    model, _, ckpt = load_model(latest_checkpoint(tmp / "ddp"))
    assert ckpt["epoch"] == 2 and [e["epoch"] for e in ckpt["history"]] == [1, 2]
    with torch.no_grad():  # gathered in rank order = the single-process order, from the checkpoint's model
        assert torch.equal(model.features(torch.arange(len(dump.labels))), dump.features)
    assert torch.equal(model.weight, dump.weight)
    run = json.loads((tmp / "ddp" / "run.json").read_text())
    assert run["status"] == "finished" and len(run["epochs"]) == 2
    assert not list((tmp / "ddp").rglob(".*tmp*"))
    assert "must be divisible by the 2 processes" in results["odd"] and not (tmp / "odd").exists()


def test_merged_metrics_equal_a_single_process_evaluation(ddp_ufm):
    tmp, results = ddp_ufm
    entry = results["record"]["epochs"][-1]
    dump = load_dump(tmp / "ddp" / "dumps" / "epoch_0002.safetensors")
    groups = results["record"]["data"]["groups"]
    logits = torch.nn.functional.linear(dump.features, dump.weight, dump.bias)
    single = accuracy_by_group(logits, dump.labels, groups)
    assert entry["eval_split"] == "train"
    for k, v in single.items():
        assert entry[f"eval_{k}"] == v, k  # equal, not close: counts summed, one float64 division
    assert entry["train_top1"] == single["top1"]


def test_merged_statistics_equal_a_single_process_pass_to_float64_rounding(ddp_ufm):
    tmp, results = ddp_ufm
    dump = load_dump(tmp / "ddp" / "dumps" / "epoch_0002.safetensors")
    single = nctools.analyze(dump.features.double(), dump.labels, dump.weight.double(), dump.bias.double()).to_dict()
    merged = results["merged"]
    assert merged["summary"].keys() == single["summary"].keys()
    for key, value in single["summary"].items():
        if isinstance(value, float):
            assert math.isclose(merged["summary"][key], value, rel_tol=1e-12, abs_tol=1e-12), key
        else:
            assert merged["summary"][key] == value, key
    assert [r["count"] for r in merged["per_class"]] == [r["count"] for r in single["per_class"]]


def test_ddp_resume_is_bitwise_identical_and_training_matches_one_process(ddp_ufm, tmp_path):
    tmp, results = ddp_ufm
    whole = torch.load(latest_checkpoint(tmp / "ddp"), weights_only=True)["model"]
    parts = torch.load(latest_checkpoint(tmp / "parts"), weights_only=True)["model"]
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    # Global batch 128 = 2 x 64 and strided shares: each step's ranks see the single-process batch,
    # and DDP averages their mean gradients, so one process trains the same weights up to float32 rounding.
    record = train(_ufm(), tmp_path / "single")
    single = torch.load(latest_checkpoint(tmp_path / "single"), weights_only=True)["model"]
    for k in whole:
        assert torch.allclose(whole[k], single[k], rtol=1e-4, atol=1e-5), k
    for mine, theirs in zip(results["record"]["epochs"], record["epochs"]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Tiny CIFAR with every component (reversed sampler, HyCon views, P2P, BatchNorm)
# ---------------------------------------------------------------------------------------------

def _cifar_worker(rank: int, world: int, tmp: str, root: str) -> dict:
    cfg = load_config(CONFIG_DIR / "cifar10_lt_r100_allnc.yaml", [
        f"data.root={root}", "data.n_max=24", "data.imbalance_ratio=10", "data.test_per_class=8",
        "data.num_workers=0", "optim.batch_size=32", "optim.warmup_epochs=0", "run.progress=false",
        "run.device=cpu", "optim.epochs=1", "run.dump_test=true"])
    return train(cfg, Path(tmp) / "run")


def test_tiny_cifar_allnc_ddp_run_writes_loadable_dumps(cifar10_root, tmp_path):
    record = run_processes(_cifar_worker, str(tmp_path), str(cifar10_root), tmp_path=tmp_path, world=WORLD, threads=1)
    counts = record["data"]["class_counts"]
    (entry,) = record["epochs"]
    assert record["status"] == "finished" and {"hycon", "p2p", "ce_rebal"} <= set(entry)
    train_dump = load_dump(tmp_path / "run" / "dumps" / "epoch_0001.safetensors")
    test_dump = load_dump(tmp_path / "run" / "dumps-test" / "epoch_0001.safetensors")
    assert train_dump.features.shape == (sum(counts), 64) and test_dump.features.shape == (80, 64)
    assert train_dump.labels.tolist() == sorted(train_dump.labels.tolist())  # the image folder's class order
    assert test_dump.metadata["split"] == "test" and train_dump.metadata["method"] == "allnc"
    assert torch.equal(train_dump.weight, test_dump.weight) and torch.isfinite(train_dump.features).all()
    logits = torch.nn.functional.linear(test_dump.features, test_dump.weight, test_dump.bias)
    assert entry["eval_top1"] == pytest.approx(accuracy_by_group(logits, test_dump.labels,
                                                                 record["data"]["groups"])["top1"])


# ---------------------------------------------------------------------------------------------
# The real launcher
# ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 25 s under torchrun; the DDP runs of this file stay in the default run
def test_cli_under_torchrun_trains_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD), "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), "-m", "allnc_train.cli", "--out", str(out), *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)

    done = torchrun("--config", "ufm_lt_r100_ce", "--set", "run.progress=false", "run.device=cpu", "optim.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.strip().splitlines()  # rank 0 alone prints the summary
    assert json.loads(line)["status"] == "finished" and json.loads(line)["epoch"] == 1
    dump = load_dump(out / "dumps" / "epoch_0001.safetensors")
    assert dump.features.shape == (1236, 32)
    assert json.loads((out / "run.json").read_text())["environment"]["world_size"] == WORLD
    again = torchrun("--resume")  # a finished run: every rank reads the checkpoint, nothing to train
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["status"] == "finished"
