"""Readers and architectures that other packages register for ``nctools analyze`` (entry points).

Each test installs a tiny third-party package the way pip would leave it: a module plus a
``*.dist-info`` folder whose ``entry_points.txt`` names the reader, on ``sys.path``."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from nctools.cli import cli
from nctools.io.sources import ARCHITECTURE_GROUP, READER_GROUP, SourceOptions, load_source


def install_plugin(root, monkeypatch, name: str, group: str, target: str, source: str) -> None:
    """A package ``name`` whose metadata registers ``target`` under ``group``."""
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(root))


READER = """
    import torch
    from nctools import Dump
    from nctools.io.sources import with_classifier

    def read(path, contents, options):
        if contents.get("format") != "mytrainer/1":
            return None  # not ours: the next reader, or the state-dict path, gets the file
        g = torch.Generator().manual_seed(0)
        means = 4 * torch.eye(3, 5)
        labels = torch.arange(3).repeat_interleave(torch.tensor([20, 10, 5]))
        feats = means[labels] + 0.1 * torch.randn(len(labels), 5, generator=g)
        dump = Dump(feats, labels, None, None, None, {})
        return with_classifier(dump, contents["head"], None, [200, 50, 5],
                               {"epoch": contents["epoch"], "method": "mine", "class_names": ["x", "y", "z"]})
"""


def test_a_third_party_checkpoint_reader_is_found(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", monkeypatch, "mytrainer_nct", READER_GROUP, "mytrainer_nct:read", READER)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "mytrainer/1", "epoch": 7, "head": 4 * torch.eye(3, 5)}, ckpt)

    dump = load_source(ckpt, SourceOptions())
    assert dump.epoch == 7 and dump.class_names == ["x", "y", "z"] and dump.num_samples == 35
    assert dump.class_counts.tolist() == [200, 50, 5]

    result = CliRunner().invoke(cli, ["analyze", str(ckpt), "--out", str(tmp_path / "out"), "--format", "json",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["summary"]["num_samples"] == 35 and metrics["source"]["metadata"]["method"] == "mine"
    assert metrics["summary"]["accuracy"] == 1.0


def test_the_bundled_trainer_registers_itself():
    from importlib.metadata import entry_points

    assert "allnc_train" in {ep.name for ep in entry_points(group=READER_GROUP)}
    assert "resnet32" in {ep.name for ep in entry_points(group=ARCHITECTURE_GROUP)}


def test_a_reader_that_returns_something_else_is_named(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", monkeypatch, "bad_reader_nct", READER_GROUP, "bad_reader_nct:read",
                   "def read(path, contents, options):\n    return {'features': 1}\n")
    ckpt = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2, 3)}, ckpt)
    result = CliRunner().invoke(cli, ["analyze", str(ckpt), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "reader 'bad_reader_nct' returned a dict, not a nctools.Dump" in result.output


def test_a_broken_plugin_does_not_stop_dumps_and_is_reported(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", monkeypatch, "broken_nct", READER_GROUP, "broken_nct:read",
                   "raise ImportError('missing dependency xyz')\n")
    from tests.helpers.cli import make_dump

    dump = make_dump(tmp_path / "d.safetensors")
    assert load_source(dump).num_samples > 0  # dumps never consult readers
    ckpt = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2, 3)}, ckpt)
    result = CliRunner().invoke(cli, ["analyze", str(ckpt), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "broken_nct:read cannot be loaded" in result.output
    assert "missing dependency xyz" in result.output


def test_a_registered_architecture_is_used_for_arch(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", monkeypatch, "tiny_arch_nct", ARCHITECTURE_GROUP, "tiny_arch_nct:build", """
        import torch
        from nctools.io.sources import Architecture, load_weights

        def build(path, state):
            net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4), torch.nn.ReLU(),
                                      torch.nn.Linear(4, state["3.weight"].shape[0]))
            load_weights(path, net, state)
            return Architecture(net, image_size=8)
    """)
    from tests.helpers.cli import image_folder

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 3))
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path / "tiny.pt"), "--arch", "tiny_arch_nct",
                                      "--data", str(image_folder(tmp_path / "imgs")), "--out", str(tmp_path / "out"),
                                      "--format", "json", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["num_samples"] == 12 and summary["dim"] == 4 and summary["num_classes"] == 3


@pytest.mark.parametrize("arch", ["resnet9000"])
def test_unknown_arch_lists_registered_ones(tmp_path, arch):
    torch.save({"fc.weight": torch.zeros(2, 3)}, tmp_path / "w.pt")
    (tmp_path / "imgs").mkdir()
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path / "w.pt"), "--arch", arch, "--data",
                                      str(tmp_path / "imgs"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"unknown architecture {arch!r}; use resnet32 or a torchvision" in result.output


def test_an_extraction_problem_names_the_file(tmp_path):
    """A NaN in the classifier is found while extracting; the sentence still names the weights file."""
    torchvision = pytest.importorskip("torchvision")
    from tests.helpers.cli import image_folder

    state = torchvision.models.resnet18(num_classes=3).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "r.pth")
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path / "r.pth"), "--arch", "resnet18", "--data",
                                      str(image_folder(tmp_path / "imgs")), "--image-size", "32", "--device", "cpu",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'r.pth'}: weight must be finite, but 1 entry is NaN or Inf" in result.output
