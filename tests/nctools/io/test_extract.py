"""``nctools.extract``: features through a forward hook on the classifier layer."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nctools import extract
from nctools.io.extraction import find_layer
from tests.helpers.scripts import load_example


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(7))
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.body(x))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.spare = nn.Linear(5, 3)  # registered, never called

    def forward(self, x):
        return x


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    x, y = torch.randn(20, 5), torch.arange(20) % 3
    return Net(), DataLoader(TensorDataset(x, y), batch_size=6), x, y


def test_features_are_the_classifier_inputs_in_eval_mode(setup):
    net, loader, x, y = setup
    net.train()
    dump = extract(net, loader, device="cpu", metadata={"split": "test", "class_names": ["a", "b", "c"]})
    net.eval()
    with torch.no_grad():
        expected = net.body(x)  # eval mode: no dropout, running BN statistics
    assert torch.allclose(dump.features, expected, atol=1e-6)
    assert torch.equal(dump.labels, y)
    assert torch.equal(dump.weight, net.head.weight.detach()) and torch.equal(dump.bias, net.head.bias.detach())
    assert not dump.features.requires_grad
    assert dump.metadata == {"layer": "head", "split": "test", "class_names": ["a", "b", "c"]}
    assert dump.class_names == ["a", "b", "c"]


def test_mode_is_restored(setup):
    net, loader, _, _ = setup
    net.train()
    extract(net, loader, device="cpu")
    assert net.training
    net.eval()
    extract(net, loader, device="cpu")
    assert not net.training


def test_named_layer_and_dict_batches(setup):
    net, _, x, y = setup
    batches = [{"image": x[:10], "label": y[:10]}, {"image": x[10:], "label": y[10:]}]
    dump = extract(net, batches, layer="body.0", device="cpu")
    assert dump.features.shape == (20, 5) and dump.weight.shape == (7, 5) and dump.metadata["layer"] == "body.0"


def test_wrapped_models(setup, tmp_path):
    import torch.distributed as dist

    net, loader, _, _ = setup
    plain = extract(net, loader, device="cpu")
    assert torch.equal(extract(nn.DataParallel(net), loader, device="cpu").features, plain.features)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(net)
        assert torch.equal(extract(ddp, loader, device="cpu").features, plain.features)
    finally:
        dist.destroy_process_group()
    assert find_layer(nn.DataParallel(net))[0] == "head"


def test_errors(setup):
    net, loader, _, _ = setup
    with pytest.raises(ValueError, match="no layer named 'nope'.*'body.0', 'head'"):
        extract(net, loader, layer="nope", device="cpu")
    with pytest.raises(ValueError, match="has no nn.Linear"):
        extract(nn.Sequential(nn.ReLU()), loader, device="cpu")
    with pytest.raises(ValueError, match="'spare' was not called"):
        extract(Unused(), loader, device="cpu")
    twice = nn.Sequential(nn.Linear(5, 5))
    twice.forward = lambda x: twice[0](twice[0](x))
    with pytest.raises(ValueError, match="ran 2 times"):
        extract(twice, loader, device="cpu")
    with pytest.raises(ValueError, match="no batches"):
        extract(net, [], device="cpu")
    with pytest.raises(TypeError, match="pairs"):
        extract(net, [torch.randn(2, 5)], device="cpu")


def test_audit_torchvision_example_runs(tmp_path):
    """examples/audit_torchvision.py on a tiny image folder (random model, 32 px)."""
    from PIL import Image

    for c in range(3):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (80 * c, 40 * i, 0)).save(tmp_path / "imgs" / f"class{c}" / f"{i}.png")
    args = [str(tmp_path / "imgs"), "--image-size", "32", "--max-per-class", "2", "--device", "cpu",
            "--out", str(tmp_path / "audit")]
    result = load_example("audit_torchvision").main(args)
    assert result.summary["num_samples"] == 6 and result.summary["dim"] == 512
    assert (tmp_path / "audit" / "report.pdf").is_file()
