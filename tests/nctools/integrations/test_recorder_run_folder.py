"""The callbacks' run folder is kept as carefully as the trainer's: checked when
made, locked, merged by epoch on resume, tidy, never written through a link, whole epochs only, and
the model's own dtype. Each test is a regression test for one hostile case."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import nctools
from nctools.integrations.recorder import EpochRecorder
from nctools.io.run_folder import RunFolderError
from tests.nctools.integrations.test_integrations import COUNTS, imbalanced, mlp


def loader(labels=None, n=None):
    x, y = imbalanced()
    if n is not None:
        x, y = x[:n], y[:n]
    return DataLoader(TensorDataset(x, y if labels is None else labels), batch_size=32)


def epochs_in_record(out) -> list[int]:
    return [e["epoch"] for e in json.loads((out / "run.json").read_text())["epochs"]]


def test_a_new_process_resuming_keeps_the_earlier_epochs_in_run_json(tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(0)
    net = mlp()
    with EpochRecorder(loader(), out, class_counts=COUNTS) as first:
        first.record(net, 1)
        first.record(net, 2)
    with EpochRecorder(loader(), out, class_counts=COUNTS) as resumed:  # HF resume: a fresh callback, no history
        resumed.record(net, 3)
    assert epochs_in_record(out) == [1, 2, 3]
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]


def test_a_run_resumed_from_an_earlier_epoch_drops_the_later_ones(tmp_path):
    out = tmp_path / "run"
    net = mlp()
    with EpochRecorder(loader(), out) as first:
        for epoch in (1, 2, 3):
            first.record(net, epoch)
    with EpochRecorder(loader(), out) as again:
        again.record(net, 2)
    assert epochs_in_record(out) == [1, 2]


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with EpochRecorder(loader(), out):
        second = EpochRecorder(loader(), out)
        with pytest.raises(RunFolderError, match=r"the run folder is in use by pid \d+ .*choose another out"):
            second.open()
        with pytest.warns(RuntimeWarning, match="in use by pid"):  # a write without the lock: one warning
            assert second.try_record(mlp(), 1) is not None
    assert not (out / "dumps").exists()
    EpochRecorder(loader(), out).open()  # free again once the first is closed


def test_a_lightning_fit_on_a_locked_out_stops_before_training(tmp_path):
    lightning = pytest.importorskip("lightning")
    from nctools.integrations.lightning import NeuralCollapseCallback
    from tests.nctools.integrations.test_integrations import fit_lightning

    out = tmp_path / "run"
    with EpochRecorder(loader(), out):
        callback = NeuralCollapseCallback(loader(), out=out)
        with pytest.raises(RunFolderError, match="in use by pid"):
            fit_lightning(tmp_path, [callback], epochs=1)
    assert lightning and not (out / "dumps").exists()


@pytest.mark.parametrize("case", ["file", "under_a_file"])
def test_an_out_that_cannot_hold_a_run_is_refused_when_the_recorder_is_made(tmp_path, case):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker if case == "file" else blocker / "run"
    with pytest.raises(RunFolderError, match="names a file|is a file"):
        EpochRecorder(loader(), out)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_measured(tmp_path, dtype):
    torch.manual_seed(0)
    net = mlp().to(dtype)  # Lightning's precision="16-true" / "bf16-true"
    result = EpochRecorder(loader(), tmp_path / "run").record(net, 1)
    assert result.summary["num_samples"] == sum(COUNTS)
    assert nctools.load_dump(tmp_path / "run" / "dumps" / "epoch_0001.safetensors").num_samples == sum(COUNTS)


def test_a_killed_writers_temporaries_go_when_the_recorder_opens(tmp_path):
    out = tmp_path / "run"
    (out / "dumps").mkdir(parents=True)
    stale = [out / "dumps" / ".epoch_0003.safetensors.0123456789ab.tmp", out / ".run.json.0123456789ab.tmp"]
    foreign = out / "dumps" / ".notes.txt.0123456789ab.tmp"
    for path in (*stale, foreign):
        path.write_text("half")
    with EpochRecorder(loader(), out):
        assert not any(p.exists() for p in stale)
    assert foreign.exists()  # not one of the run's own names: left alone


def test_no_dump_is_written_through_a_linked_dumps_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / "dumps").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunFolderError, match="dumps: is a symbolic link inside the run folder"):
        EpochRecorder(loader(), out).record(mlp(), 1)
    assert list(elsewhere.iterdir()) == []


def test_a_run_lock_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match="run.lock: is a symbolic link"):
        EpochRecorder(loader(), out).open()
    assert victim.read_text() == "precious"


def test_float_labels_are_refused_not_truncated(tmp_path):
    x, y = imbalanced()
    with pytest.raises(TypeError, match="batch 0 of the loader has torch.float32 labels"):
        EpochRecorder(loader(labels=y.float() + 0.7)).record(mlp(), 1)


def test_an_empty_loader_is_named(tmp_path):
    with pytest.raises(ValueError, match="the data loader gave no samples to measure"):
        EpochRecorder(loader(n=0)).record(mlp(), 1)


@pytest.mark.filterwarnings("ignore:nctools. NeuralCollapseCallback found no Trainer")
def test_hf_measures_whole_epochs_only(tmp_path):
    pytest.importorskip("transformers")
    from nctools.integrations.transformers import NeuralCollapseCallback

    out = tmp_path / "run"
    callback = NeuralCollapseCallback(loader(), out=out)
    net = mlp()
    state = SimpleNamespace(epoch=0.0, global_step=0, is_world_process_zero=True, log_history=[])
    control = SimpleNamespace(should_log=False)
    callback.on_train_begin(None, state, control)
    measured = {}
    for epoch in (1.0, 2.0, 2.4):  # max_steps stopped the third epoch part-way
        state.epoch = epoch
        with torch.no_grad():
            net[0].weight.add_(0.5)  # the weights move on, as in training
        callback.on_epoch_end(None, state, control, model=net)
        measured[epoch] = callback.last_result.summary["nc1"]
    callback.on_train_end(None, state, control)
    assert epochs_in_record(out) == [1, 2]
    assert [e["epoch"] for e in state.log_history] == [1.0, 2.0]
    second = nctools.load_dump(out / "dumps" / "epoch_0002.safetensors")  # still the features of epoch 2
    assert measured[2.0] == pytest.approx(
        nctools.analyze(second.features, second.labels, second.weight, second.bias).summary["nc1"], rel=1e-6)


def test_without_class_counts_the_counts_seen_are_reduced_once_and_dumped(tmp_path, monkeypatch):
    """The counts seen stand in for class_counts: the statistics are reduced once (under torch.distributed
    each reduction is a collective), the result says no counts were given, and the dump keeps the counts."""
    from nctools.core.statistics import NeuralCollapse
    from nctools.io.dump import load_dump
    from nctools.io.layout import dump_path

    reductions = []
    real = NeuralCollapse.statistics
    monkeypatch.setattr(NeuralCollapse, "statistics", lambda acc: reductions.append(1) or real(acc))
    out = tmp_path / "run"
    with EpochRecorder(loader(), out) as recorder:
        result = recorder.record(mlp(), 1)
    assert len(reductions) == 1
    assert result.options["class_counts_given"] is False
    assert load_dump(dump_path(out, "train", 1, "safetensors")).class_counts.tolist() == list(COUNTS)
