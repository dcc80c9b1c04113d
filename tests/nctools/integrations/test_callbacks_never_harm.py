"""The callbacks never harm the training they watch, nor its records.

Lightning: features beyond float16's range train to the end (float32 dumps by default; float16 on
request falls back with a warning), the logged ``nc/*`` equal ``nctools track`` on the dumps, a
failure is one warning per epoch, and the history survives a resume. Hugging Face: the Trainer's own
``loss`` / ``learning_rate`` logs stay as they are with every logging strategy, and ``nc/*`` go
through the Trainer's log (so to every ``report_to`` integration). Tiny runs on the CPU."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nctools
from nctools.core.statistics import NeuralCollapse
from nctools.integrations import recorder as recorder_module
from nctools.report.tracking import track_run
from tests.nctools.integrations.test_integrations import COUNTS, DictData, KeywordClassifier, imbalanced

lightning = pytest.importorskip("lightning")
FLOAT16_MAX = torch.finfo(torch.float16).max


class Scaled(lightning.LightningModule):
    """An MLP whose penultimate features are multiplied by a fixed ``scale`` (1e5 puts them beyond float16)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.register_buffer("scale", torch.tensor(scale))
        self.head = nn.Linear(16, len(COUNTS))

    def forward(self, x):
        return self.head(self.body(x) * self.scale)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def fit(tmp_path, callback, *, scale=1.0, epochs=2, ckpt_path=None, checkpoints=None):
    torch.manual_seed(0)
    x, y = imbalanced()
    model = Scaled(scale)
    callbacks = [callback]
    if checkpoints is not None:
        callbacks.append(lightning.pytorch.callbacks.ModelCheckpoint(dirpath=checkpoints, save_last=True))
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks,
                                logger=lightning.pytorch.loggers.CSVLogger(tmp_path / "logs", name="run"),
                                enable_checkpointing=checkpoints is not None, enable_progress_bar=False,
                                enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), ckpt_path=ckpt_path)
    return model, trainer


def measure_loader():
    x, y = imbalanced()
    return DataLoader(TensorDataset(x, y), batch_size=32)


def logged(tmp_path) -> pd.DataFrame:
    """The rows of Lightning's metrics.csv that hold nc/* (with Lightning's 0-based ``epoch``)."""
    frames = [pd.read_csv(path) for path in sorted((tmp_path / "logs").rglob("metrics.csv"))]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table[table["nc/nc1"].notna()] if "nc/nc1" in table else table.iloc[:0]


def ours(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("nctools:")]


def assert_logged_equals_track(tmp_path, run) -> None:
    table = track_run(run, device="cpu").table
    rows = logged(tmp_path)
    # Lightning's epoch e (from 0) is dumps/epoch_{e+1}: the number of finished epochs
    assert [int(e) + 1 for e in rows["epoch"]] == table["epoch"].tolist()
    for got, want in zip(rows["nc/nc1"], table["nc1"]):
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_features_beyond_float16_train_to_the_end(tmp_path, dtype):
    from nctools.integrations.lightning import NeuralCollapseCallback

    options = {} if dtype is None else {"dump_dtype": dtype}
    callback = NeuralCollapseCallback(measure_loader(), out=tmp_path / "run", class_counts=COUNTS, **options)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, trainer = fit(tmp_path, callback, scale=1e5)
    assert trainer.current_epoch == 2 and not trainer.interrupted  # trained to the end

    dumps = sorted((tmp_path / "run" / "dumps").glob("epoch_*.safetensors"))
    assert [d.name for d in dumps] == ["epoch_0001.safetensors", "epoch_0002.safetensors"]
    for path in dumps:
        dump = nctools.load_dump(path)
        assert dump.features.dtype == torch.float32 and dump.features.abs().max() > FLOAT16_MAX
        assert dump.method is None  # no framework name pretending to be a method
    messages = ours(record)
    if dtype is None:
        assert messages == []
    else:
        assert len(messages) == 2 and all("beyond float16's range" in m and "float32" in m for m in messages)
        assert "epoch 1" in messages[0] and "epoch 2" in messages[1]
    assert_logged_equals_track(tmp_path, tmp_path / "run")


def test_float16_dumps_in_range_log_what_track_computes(tmp_path):
    from nctools.integrations.lightning import NeuralCollapseCallback

    callback = NeuralCollapseCallback(measure_loader(), out=tmp_path / "run", dump_dtype="float16",
                                      class_counts=COUNTS, method="my-method")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tmp_path, callback, scale=300.0)  # float16 rounding moves the features visibly at this size
    assert ours(record) == []
    dump = nctools.load_dump(tmp_path / "run" / "dumps" / "epoch_0002.safetensors")
    assert dump.features.dtype == torch.float16 and dump.method == "my-method"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "my-method"
    assert_logged_equals_track(tmp_path, tmp_path / "run")


@pytest.mark.parametrize("where", ["measure", "write"])
def test_a_failure_is_one_warning_and_training_goes_on(tmp_path, monkeypatch, where):
    from nctools.integrations.lightning import NeuralCollapseCallback

    if where == "measure":
        def fail(*args, **kwargs):
            raise RuntimeError("a bad batch:\n  shape mismatch")
        monkeypatch.setattr(NeuralCollapse, "update", fail)
    else:
        def fail(*args, **kwargs):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(recorder_module, "save_dump", fail)
    callback = NeuralCollapseCallback(measure_loader(), out=tmp_path / "run", class_counts=COUNTS)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model, trainer = fit(tmp_path, callback)
    assert trainer.current_epoch == 2 and model.training  # finished, the model's mode put back
    messages = ours(record)
    assert len(messages) == 2 and "epoch 1" in messages[0] and "epoch 2" in messages[1]
    assert all("\n" not in m and "training goes on" in m for m in messages)
    if where == "measure":
        assert all("not measured" in m and "a bad batch: shape mismatch" in m for m in messages)
        assert logged(tmp_path).empty and callback.last_result is None
    else:
        assert all("was not written" in m and "No space left on device" in m for m in messages)
        assert len(logged(tmp_path)) == 2  # measured and logged all the same


def test_history_survives_a_resume(tmp_path):
    from nctools.integrations.lightning import NeuralCollapseCallback

    run, ckpts = tmp_path / "run", tmp_path / "ckpts"
    first = NeuralCollapseCallback(measure_loader(), out=run, class_counts=COUNTS)
    fit(tmp_path / "a", first, epochs=2, checkpoints=ckpts)
    assert [e["epoch"] for e in first.state_dict()["history"]] == [1, 2]

    second = NeuralCollapseCallback(measure_loader(), out=run, class_counts=COUNTS)  # a new process
    fit(tmp_path / "b", second, epochs=3, ckpt_path=ckpts / "last.ckpt", checkpoints=ckpts)
    record = json.loads((run / "run.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record["epochs"][:2] == json.loads(json.dumps(first.recorder.history))
    assert track_run(run, device="cpu").table["epoch"].tolist() == [1, 2, 3]


# --------------------------------------------------------------------------- Hugging Face


transformers = pytest.importorskip("transformers")


class Spy(transformers.TrainerCallback):
    """Sees every log the way a report_to integration (TensorBoard, W&B ...) does."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def train_hf(tmp_path, strategy, callback=None, attach=False):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    x, y = imbalanced()
    spy = Spy()
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=3, per_device_train_batch_size=16,
                             learning_rate=0.05, report_to=[], use_cpu=True, save_strategy="no",
                             logging_strategy=strategy, logging_steps=5, disable_tqdm=True, seed=0, data_seed=0)
    callbacks = [spy] + ([callback] if callback is not None and not attach else [])
    trainer = Trainer(model=KeywordClassifier(), args=args, train_dataset=DictData(x, y), callbacks=callbacks)
    if attach:
        callback.attach(trainer)
    trainer.train()
    return trainer, spy


def own_logs(entries) -> list[dict]:
    """The Trainer's own training logs (loss, grad_norm, learning_rate, epoch, step)."""
    return [{k: v for k, v in e.items() if not k.startswith("nc/")} for e in entries if "loss" in e]


@pytest.mark.parametrize("strategy, attach", [("epoch", False), ("epoch", True), ("steps", False), ("no", False)])
def test_hf_trainer_keeps_its_own_logs(tmp_path, strategy, attach):
    from nctools.integrations.transformers import NeuralCollapseCallback

    callback = NeuralCollapseCallback(DataLoader(DictData(*imbalanced()), batch_size=32), class_counts=COUNTS)
    trainer, spy = train_hf(tmp_path, strategy, callback, attach=attach)
    plain, _ = train_hf(tmp_path / "plain", strategy)
    assert callback.trainer is trainer
    history = trainer.state.log_history
    assert own_logs(history) == own_logs(plain.state.log_history)  # nothing lost, nothing changed
    if strategy == "epoch":
        assert [e["epoch"] for e in history if "loss" in e] == [1.0, 2.0, 3.0]
        assert all("learning_rate" in e for e in history if "loss" in e)
    ours_logged = [e for e in history if "nc/nc1" in e]
    assert [e["epoch"] for e in ours_logged] == [1.0, 2.0, 3.0]
    assert [e["nc/nc1"] for e in spy.logs if "nc/nc1" in e] == [e["nc/nc1"] for e in ours_logged]  # report_to
    assert own_logs(spy.logs) == [{k: v for k, v in e.items() if k != "step"} for e in own_logs(history)]
