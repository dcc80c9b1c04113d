"""Neural collapse inside other people's training loops: the Lightning and Hugging Face callbacks.

Each run is a tiny imbalanced classifier on the CPU (seconds). The callbacks' dumps are read by
``nctools track`` and must give the numbers ``nctools.analyze`` gives on features extracted by hand
from the same weights; the logged scalars must reach the framework's logger; the training itself
must not change (random generators restored)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import nctools
from nctools.cli import cli
from nctools.core import keys as K
from nctools.integrations.recorder import EpochRecorder
from tests.helpers.launch import run_processes

COUNTS = (120, 40, 12, 8)  # many-, medium- and two few-shot classes


def imbalanced(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(COUNTS)).repeat_interleave(torch.tensor(COUNTS))
    centres = 2 * torch.randn(len(COUNTS), 6, generator=g)
    return centres[labels] + torch.randn(len(labels), 6, generator=g), labels


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, len(COUNTS)))


def same_as_analyze(track_csv, model, loader) -> None:
    """The last epoch of track.csv equals nctools.analyze on features extracted by hand now."""
    dump = nctools.extract(model, loader, device="cpu")
    want = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias,
                           class_counts=torch.tensor(COUNTS)).summary
    got = pd.read_csv(track_csv).iloc[-1]
    for key in K.SUMMARY_KEYS:
        if isinstance(want[key], float):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key


def track(run_dir, tmp_path):
    result = CliRunner().invoke(cli, ["track", str(run_dir), "--out", str(tmp_path / "track"), "--quiet",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return tmp_path / "track" / "track.csv"


# --------------------------------------------------------------------------- Lightning


lightning = pytest.importorskip("lightning")


class LitClassifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_lightning(tmp_path, callbacks, epochs=2):
    torch.manual_seed(0)
    x, y = imbalanced()
    model = LitClassifier()
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks,
                                logger=lightning.pytorch.loggers.CSVLogger(tmp_path / "logs", name="run"),
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True))
    return model, trainer


def test_lightning_callback_dumps_logs_and_keeps_training_unchanged(tmp_path):
    from nctools.integrations.lightning import NeuralCollapseCallback

    x, y = imbalanced()
    measure = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)  # shuffling draws from the RNG
    callback = NeuralCollapseCallback(measure, out=tmp_path / "run", dump_dtype="float32",
                                      class_counts=COUNTS, class_names=["a", "b", "c", "d"])
    model, trainer = fit_lightning(tmp_path, [callback])

    dumps = sorted((tmp_path / "run" / "dumps").glob("epoch_*.safetensors"))
    assert [d.name for d in dumps] == ["epoch_0001.safetensors", "epoch_0002.safetensors"]
    assert nctools.load_dump(dumps[-1]).class_names == ["a", "b", "c", "d"]
    same_as_analyze(track(tmp_path / "run", tmp_path), model.net, DataLoader(TensorDataset(x, y), batch_size=32))

    logged = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    assert {"nc/nc1", "nc/nc2_cos_std_means", "nc/tail_icpa_mean_deg_classifier"} <= set(logged.columns)
    assert logged["nc/nc1"].notna().sum() == 2
    assert "nc/nc1" in trainer.callback_metrics  # so ModelCheckpoint(monitor="nc/nc1") works

    plain, _ = fit_lightning(tmp_path / "plain", [])
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # the callback changed nothing in the training


def test_lightning_callback_without_out_keeps_nothing(tmp_path):
    from nctools.integrations.lightning import NeuralCollapseCallback

    x, y = imbalanced()
    callback = NeuralCollapseCallback(DataLoader(TensorDataset(x, y), batch_size=32), every_n_epochs=2)
    fit_lightning(tmp_path, [callback], epochs=3)
    assert callback.last_result is not None and callback.last_result.summary["num_samples"] == sum(COUNTS)
    assert not list(tmp_path.rglob("*.safetensors"))


# --------------------------------------------------------------------------- Hugging Face


transformers = pytest.importorskip("transformers")


class KeywordClassifier(nn.Module):
    """A model in the Hugging Face style: keyword inputs, a dict out with the loss when labels come."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.classifier = nn.Linear(8, len(COUNTS))

    def forward(self, features, labels=None):
        logits = self.classifier(self.body(features))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class DictData(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "labels": self.y[i]}


def fit_hf(tmp_path, callback=None, attach=False):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    x, y = imbalanced()
    model = KeywordClassifier()
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=16,
                             learning_rate=0.05, report_to=[], use_cpu=True, save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0, data_seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=DictData(x, y),
                      callbacks=[callback] if callback is not None and not attach else None)
    if attach:
        callback.attach(trainer)
    trainer.train()
    return model, trainer


@pytest.mark.parametrize("attach", [False, True])
def test_transformers_callback_dumps_and_logs(tmp_path, attach):
    from nctools.integrations.transformers import NeuralCollapseCallback

    x, y = imbalanced()
    measure = DataLoader(DictData(x, y), batch_size=32)
    callback = NeuralCollapseCallback(measure, out=tmp_path / "run", dump_dtype="float32", class_counts=COUNTS)
    model, trainer = fit_hf(tmp_path, callback, attach=attach)
    dumps = sorted((tmp_path / "run" / "dumps").glob("epoch_*.safetensors"))
    assert [d.name for d in dumps] == ["epoch_0001.safetensors", "epoch_0002.safetensors"]
    logged = [entry for entry in trainer.state.log_history if "nc/nc1" in entry]
    assert len(logged) == 2 and {"nc/accuracy", "nc/nc3_self_duality"} <= set(logged[-1])

    class Pairs(Dataset):  # the same samples as (inputs, labels) pairs, for nctools.extract
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i], y[i]

    same_as_analyze(track(tmp_path / "run", tmp_path), _Features(model), DataLoader(Pairs(), batch_size=32))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]


class _Features(nn.Module):
    """KeywordClassifier called positionally, for nctools.extract."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(features=x)["logits"]


# --------------------------------------------------------------------------- bad arguments


def test_recorder_restores_mode_and_random_state():
    x, y = imbalanced()
    net = mlp().train()
    torch.manual_seed(123)
    EpochRecorder(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)).record(net, epoch=1)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert net.training and torch.equal(after, torch.rand(3))


def test_bad_arguments_get_one_sentence():
    x, y = imbalanced()
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer, got 0"):
        EpochRecorder(DataLoader(TensorDataset(x, y)), every_n_epochs=0)
    with pytest.raises(ValueError, match="dump_dtype must be one of"):
        EpochRecorder(DataLoader(TensorDataset(x, y)), dump_dtype="int8")
    with pytest.raises(TypeError, match="dataloader must be an iterable of batches"):
        EpochRecorder(3)
    no_linear = nn.Sequential(nn.Conv1d(1, 1, 1), nn.Flatten())
    with pytest.raises(ValueError, match="has no nn.Linear layer"):
        EpochRecorder(DataLoader(TensorDataset(x, y))).record(no_linear, epoch=1)
    from nctools.integrations.recorder import run_keywords

    unlabelled = DataLoader([{"features": x[i]} for i in range(4)], batch_size=2)
    with pytest.raises(TypeError, match="has no 'labels' \\(or 'label'\\) entry; its keys are \\['features'\\]"):
        EpochRecorder(unlabelled, run_batch=run_keywords).record(KeywordClassifier(), epoch=1)


def test_importing_nctools_imports_no_framework():
    code = ("import sys, nctools, nctools.cli, nctools.integrations, nctools.integrations.recorder; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- timm through the CLI


def test_timm_state_dict_is_analysed_through_the_cli(tmp_path):
    timm = pytest.importorskip("timm")
    from tests.helpers.cli import image_folder

    torch.manual_seed(0)
    weights = tmp_path / "timm_resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), weights)
    result = CliRunner().invoke(cli, ["analyze", str(weights), "--arch", "timm:resnet18", "--data",
                                      str(image_folder(tmp_path / "imgs")), "--image-size", "32", "--device", "cpu",
                                      "--out", str(tmp_path / "out"), "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["summary"]["num_samples"] == 12 and metrics["summary"]["dim"] == 512
    assert metrics["options"]["arch"] == "timm:resnet18"


def test_timm_records_the_crop_mode_its_transform_uses(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    data = pytest.importorskip("timm.data")
    from nctools.io.images import describe_preprocessing
    from tests.helpers.cli import image_folder

    resolve = data.resolve_data_config
    # dm_nfnet_f0 and other timm models default to crop_mode="squash"; resnet18 stands in for them (small)
    monkeypatch.setattr(data, "resolve_data_config", lambda *a, **k: {**resolve(*a, **k), "crop_mode": "squash"})
    weights = tmp_path / "timm_resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), weights)
    result = CliRunner().invoke(cli, ["analyze", str(weights), "--arch", "timm:resnet18", "--data",
                                      str(image_folder(tmp_path / "imgs")), "--device", "cpu",
                                      "--out", str(tmp_path / "out"), "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["options"]["preprocessing"]
    assert record["crop"] == "squash" and record["transform"] == "timm create_transform"
    assert "squashed to a square, centre crop" in describe_preprocessing(record)


@pytest.mark.parametrize("arch, message", [
    ("timm:", "--arch timm: needs a model name after the colon"),
    ("timm:resnet9000", "unknown timm architecture 'resnet9000'"),
    ("timm:vit_tiny_patch16_224", "the weights do not fit the architecture timm:vit_tiny_patch16_224: the closest "
                                  "reading (the top level) lacks 152 of its 152 keys"),
])
def test_timm_bad_names_get_one_sentence(tmp_path, arch, message):
    pytest.importorskip("timm")
    weights = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.zeros(3, 8), "fc.bias": torch.zeros(3)}, weights)
    (tmp_path / "imgs").mkdir()
    result = CliRunner().invoke(cli, ["analyze", str(weights), "--arch", arch, "--data", str(tmp_path / "imgs"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- several processes


def _recorder_worker(rank: int, world: int, out: str) -> dict:
    """Everything the several-process tests check, in one pair of processes (spawning them costs seconds);
    each rank also writes what it saw to ``out/rank<r>.json``."""
    import warnings

    torch.manual_seed(0)
    net = mlp()  # the same weights on every rank, as DDP keeps them
    x, y = imbalanced()
    recorder = EpochRecorder(DataLoader(TensorDataset(x, y), batch_size=16), f"{out}/even", dump_dtype="float32",
                             class_counts=COUNTS)
    result = recorder.record(net, epoch=1)
    with open(f"{out}/even/rank{rank}.json", "w") as fh:
        json.dump(result.summary, fh)
    # one batch in all: rank 1 has none to measure (nor to find float16's range on), and rank 0 must still
    # write the whole dump
    EpochRecorder([(x, y)], f"{out}/idle", dump_dtype="float16", class_counts=COUNTS).record(net, epoch=1)
    good = _batches(x, y, 16)
    bad = [(h, t.float() if i == 1 else t) for i, (h, t) in enumerate(good)]  # batch 1 is rank 1's

    def warned(recorder, epoch):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = recorder.try_record(net, epoch)
        return result, [str(w.message) for w in caught if str(w.message).startswith("nctools:")]

    seen = {}
    recorder = EpochRecorder(bad, f"{out}/fails", dump_dtype="float32", class_counts=COUNTS)
    failed, seen["fails"] = warned(recorder, 1)  # fails while the batches are kept for the dump
    step = torch.ones(1)
    torch.distributed.all_reduce(step)  # the training's own next collective still pairs up on every rank
    recorder.dataloader = good
    later = recorder.try_record(net, epoch=2)
    streamed, seen["streamed"] = warned(EpochRecorder(bad, class_counts=COUNTS), 1)  # fails in pass 1, no out
    # the folder on rank 0 only: the ranks would run different collectives; every rank refuses instead
    uneven, seen["uneven"] = warned(EpochRecorder(good, f"{out}/uneven" if rank == 0 else None), 1)
    # features beyond float16's range (inputs times 1e6 through ReLU layers): one warning for the run, not one per rank
    huge = [(h * 1e6, t) for h, t in good]
    _, seen["range"] = warned(EpochRecorder(huge, f"{out}/range", dump_dtype="float16", class_counts=COUNTS), 1)
    got = {"failed": [r is None for r in (failed, streamed, uneven)], "warnings": seen, "step": float(step),
           "later": later.summary["num_samples"]}
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(got, fh)
    return got


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """(run folder, rank 0's return) of one two-process gloo run of :func:`_recorder_worker`; a rank left
    waiting fails after 60 s with a gloo error instead of hanging."""
    tmp = tmp_path_factory.mktemp("ranks")
    got = run_processes(_recorder_worker, str(tmp / "run"), tmp_path=tmp, threads=1, timeout_s=60)
    return tmp / "run", got


def test_recorder_under_two_processes_equals_one(two_ranks):
    out = two_ranks[0] / "even"
    torch.manual_seed(0)
    net = mlp()
    x, y = imbalanced()
    single = EpochRecorder(DataLoader(TensorDataset(x, y), batch_size=16), class_counts=COUNTS).record(net, 1)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank holds the all-reduced numbers
    for key, value in single.summary.items():
        if isinstance(value, float):
            assert ranks[0][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    dump = nctools.load_dump(out / "dumps" / "epoch_0001.safetensors")  # rank 0 gathered every sample
    assert dump.num_samples == sum(COUNTS) and sorted(dump.labels.tolist()) == sorted(y.tolist())


def test_ranks_with_failing_or_no_batches_neither_hang_nor_lose_samples(two_ranks):
    out = two_ranks[0]
    idle = nctools.load_dump(out / "idle" / "dumps" / "epoch_0001.safetensors")
    assert idle.num_samples == sum(COUNTS) and idle.features.dtype == torch.float16
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == two_ranks[1]
    for got in ranks:  # every rank skipped the three failing measurements, then measured again
        assert got["failed"] == [True, True, True] and got["step"] == 2.0 and got["later"] == sum(COUNTS)
    # rank 1 says its own reason, rank 0 names rank 1; both in one warning each
    own = ("nctools: neural collapse was not measured at epoch 1: batch 1 of the loader has torch.float32 labels; "
           "neural collapse needs integer class indices; training goes on")
    other = ("nctools: neural collapse was not measured at epoch 1: rank 1 of 2 failed to measure, so no rank "
             "measures this epoch; training goes on")
    for case in ("fails", "streamed"):
        assert ranks[0]["warnings"][case] == [other] and ranks[1]["warnings"][case] == [own], case
    for got in ranks:
        assert got["warnings"]["uneven"] == [
            "nctools: neural collapse was not measured at epoch 1: the ranks measure with different settings (out, "
            "class_counts or dump_dtype given on some ranks only): give every rank the same ones, and rank 0 alone "
            "writes; training goes on"]
    assert not (out / "fails" / "dumps" / "epoch_0001.safetensors").exists()
    assert (out / "fails" / "dumps" / "epoch_0002.safetensors").exists()
    assert not (out / "uneven" / "dumps").exists()
    assert len(ranks[0]["warnings"]["range"]) == 1 and "beyond float16's range" in ranks[0]["warnings"]["range"][0]
    assert ranks[1]["warnings"]["range"] == []  # rank 0 alone writes the dump, and alone says how
    assert nctools.load_dump(out / "range" / "dumps" / "epoch_0001.safetensors").features.dtype == torch.float32
