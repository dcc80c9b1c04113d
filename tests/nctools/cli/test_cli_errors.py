"""The bad-input corpus: every hostile or broken input exits 2 with one line naming the problem,
and writes nothing into --out."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import nctools
from tests.helpers.cli import invoke, leftovers, make_dump, make_run


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _pt(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _dump_tensors(**changes):
    g = torch.Generator().manual_seed(0)
    tensors = {"features": torch.randn(12, 4, generator=g), "labels": torch.arange(3).repeat(4),
               "classifier.weight": torch.randn(3, 4, generator=g), "classifier.bias": torch.zeros(3)}
    tensors.update(changes)
    return {k: v for k, v in tensors.items() if v is not None}


def _st(path: Path, **changes) -> Path:
    save_file(_dump_tensors(**changes), str(path))
    return path


def _st_meta(path: Path, **metadata) -> Path:
    save_file(_dump_tensors(), str(path), metadata=metadata)
    return path


def _checkpoint(path: Path, data_root: Path, lr: float = 0.1) -> Path:
    """An allnc_train checkpoint of an untrained CIFAR ResNet-32 whose data lives at ``data_root``."""
    from allnc_train.config import load_config
    from allnc_train.methods import build_model
    from allnc_train.schema import to_dict

    cfg = load_config(None, [f"data.root={data_root}"])
    model = build_model(cfg, 10, 0)
    config = to_dict(cfg)
    config["optim"]["lr"] = lr
    torch.save({"format": "allnc_train.checkpoint/1", "epoch": 1, "config": config, "model": model.state_dict(),
                "class_counts": [10] * 10, "class_names": [str(c) for c in range(10)]}, path)
    return path


def _state_dict(path: Path) -> Path:
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    return path


def _folder(path: Path, classes=3) -> Path:
    path.mkdir(parents=True)
    for c in range(classes):
        (path / f"class{c}").mkdir()
    return path


# name -> (builder(tmp) -> argv, substring the one-line message must hold)
CASES = {
    "hostile pickle": (lambda t: ["analyze", _pickle(t / "evil.pt")], "could not be loaded safely"),
    "hostile pickle as model": (lambda t: ["analyze", _pickle(t / "evil.pth"), "--arch", "resnet18"],
                                "could not be loaded safely"),
    "truncated safetensors": (lambda t: ["analyze", _truncate(make_dump(t / "d.safetensors"))],
                              "truncated or corrupt"),
    "truncated pt": (lambda t: ["analyze", _truncate(make_dump(t / "d.pt"))], "truncated or corrupt"),
    "empty file": (lambda t: ["analyze", _touch(t / "empty.pt")], "empty"),
    "a directory": (lambda t: ["analyze", _folder(t / "somedir")], "is a directory"),
    "missing file": (lambda t: ["analyze", t / "nope.safetensors"], "no such file"),
    "unsupported suffix": (lambda t: ["analyze", _touch(t / "notes.txt", b"hi")], "unsupported file type"),
    "NaN features": (lambda t: ["analyze", _st(t / "nan.safetensors", features=_with_nan())], "NaN or Inf"),
    "features of rank 1": (lambda t: ["analyze", _st(t / "r1.safetensors", features=torch.randn(12))], "2-D"),
    "labels of rank 2": (lambda t: ["analyze", _st(t / "l2.safetensors", labels=torch.zeros(12, 1).long())],
                         "1-D"),
    "label out of range": (lambda t: ["analyze", _st(t / "lab.safetensors", labels=torch.arange(12) % 5)],
                           "labels must lie in [0, 3)"),
    "classifier with the wrong C": (lambda t: ["analyze", _st(t / "c.safetensors", **{
        "classifier.weight": torch.randn(2, 4), "classifier.bias": None})], "labels must lie in [0, 2)"),
    "classifier with the wrong d": (lambda t: ["analyze", _st(t / "d.safetensors", **{
        "classifier.weight": torch.randn(3, 5)})], "columns but the features have dim 4"),
    "bias of the wrong length": (lambda t: ["analyze", _st(t / "b.safetensors", **{
        "classifier.bias": torch.zeros(4)})], "bias must be 1-D"),
    "no features, no --arch": (lambda t: ["analyze", _state_dict(t / "sd.pt")], "pass --arch"),
    "unknown architecture": (lambda t: ["analyze", _state_dict(t / "sd.pt"), "--arch", "resnet9000",
                                        "--data", _folder(t / "imgs")], "unknown architecture 'resnet9000'"),
    "weights of another architecture": (lambda t: ["analyze", _state_dict(t / "sd.pt"), "--arch", "resnet34",
                                                   "--data", _folder(t / "imgs")], "do not fit the architecture"),
    "missing data root": (lambda t: ["analyze", _state_dict(t / "sd.pt"), "--arch", "resnet18",
                                     "--data", t / "no_such_data"], "data root not found"),
    "state dict without --data": (lambda t: ["analyze", _state_dict(t / "sd.pt"), "--arch", "resnet18"],
                                  "pass --data"),
    "data with other classes": (lambda t: ["analyze", _state_dict(t / "sd.pt"), "--arch", "resnet18",
                                           "--data", _images(t / "imgs", classes=2)], "holds 2 classes"),
    "pt holding a list": (lambda t: ["analyze", _pt(t / "list.pt", [torch.zeros(2)])], "not a dict"),
    "pt holding no tensors": (lambda t: ["analyze", _pt(t / "cfg.pt", {"lr": 0.1})], "holds no tensors"),
    "npz with an object array": (lambda t: ["analyze", _object_npz(t / "obj.npz")], "pickled Python objects"),
    "split mismatch": (lambda t: ["analyze", make_dump(t / "d.safetensors"), "--split", "test"],
                       "holds the train split"),
    "class names of the wrong length": (lambda t: ["analyze", _st_meta(t / "n.safetensors", class_names='["a", "b"]')],
                                        "class_names lists 2 names"),
    "bad --groups": (lambda t: ["analyze", make_dump(t / "d.safetensors"), "--groups", "20,100"], "FEW <= MANY"),
    "checkpoint: missing data root": (lambda t: ["analyze", _checkpoint(t / "epoch_0001.pt", t / "gone")],
                                      "data root not found"),
    "checkpoint: invalid stored config": (lambda t: ["analyze", _checkpoint(t / "epoch_0001.pt", t, lr=-1.0)],
                                          "the stored config is invalid"),
    "track: no dumps": (lambda t: ["track", _folder(t / "run", 0)], "no dumps/epoch_"),
    "track: missing run": (lambda t: ["track", t / "nope"], "no such directory"),
    "track: a broken epoch": (lambda t: ["track", _broken_run(t / "run")], "truncated or corrupt"),
    "compare: label count": (lambda t: ["compare", make_run(t / "a"), make_run(t / "b"), "--labels", "x"],
                             "expected 2 comma-separated labels"),
    "compare: different C": (lambda t: ["compare", make_run(t / "a"), make_run(t / "b", counts=(20, 10, 5))],
                             "different numbers of classes"),
}
if not torch.cuda.is_available():
    CASES["--device cuda without CUDA"] = (lambda t: ["analyze", make_dump(t / "d.safetensors"), "--device",
                                                      "cuda"], "no CUDA device")


def _pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"features": _RunsCode()}, protocol=2))
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _touch(path: Path, content: bytes = b"") -> Path:
    path.write_bytes(content)
    return path


def _with_nan():
    h = torch.randn(12, 4)
    h[5, 2] = float("nan")
    return h


def _object_npz(path: Path) -> Path:
    np.savez(path, features=np.array([object()], dtype=object), labels=np.zeros(1, dtype=np.int64))
    return path


def _images(path: Path, classes: int) -> Path:
    from PIL import Image

    for c in range(classes):
        (path / f"c{c}").mkdir(parents=True)
        Image.new("RGB", (32, 32), (40 * c, 0, 0)).save(path / f"c{c}" / "0.png")
    return path


def _broken_run(run: Path) -> Path:
    make_run(run, epochs=(1, 2))
    _truncate(run / "dumps" / "epoch_0002.safetensors")
    return run


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a hostile pickle that ran would leave pwned.txt here
    build, expected = CASES[name]
    argv = [str(a) for a in build(tmp_path)]
    out = tmp_path / "out"
    result = invoke(*argv, "--out", out)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert not out.exists(), "a failed command must not create --out"
    assert leftovers(tmp_path) == [] and not (tmp_path / "pwned.txt").exists()


def test_message_names_the_file(tmp_path):
    path = _st(tmp_path / "nan.safetensors", features=_with_nan())
    result = invoke("analyze", path)
    assert result.exit_code == 2
    assert str(path) in result.stderr and "features[5, 2]" in result.stderr


def test_failed_run_leaves_an_existing_out_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("previous")
    result = invoke("analyze", _st(tmp_path / "nan.safetensors", features=_with_nan()), "--out", out)
    assert result.exit_code == 2
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and (out / "metrics.json").read_text() == "previous"


def test_dump_api_round_trip_still_loads(tmp_path):
    """The corpus's clean baseline: the same builders with no damage load fine."""
    assert nctools.load_dump(_st(tmp_path / "ok.safetensors")).num_classes == 3
