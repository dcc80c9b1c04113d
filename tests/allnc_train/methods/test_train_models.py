"""Backbones and the NCModel wrapper."""
from __future__ import annotations

import pytest
import torch

from allnc_train.config import resolve
from allnc_train.methods import build_model
from allnc_train.models import FreeFeatures, NCModel, ResNetCifar, num_parameters, torchvision_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_resnet32_shape_size_and_option_a_shortcuts():
    net = ResNetCifar(5, 1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert num_parameters(net) == 463_504  # He et al.'s 0.46M (plus the 650 of a 10-way classifier)
    assert len(net.layers) == 15  # 3 stages x 5 basic blocks: 6n + 2 = 32 layers
    shortcut_params = sum(num_parameters(b.shortcut) for b in net.layers)
    assert shortcut_params == 0  # option A: zero-padded identity, no projection
    wide = ResNetCifar(5, 2)
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 128) and wide.out_dim == 128


def test_torchvision_backbones_give_2048d_features():
    for arch in ("resnet50", "resnext50"):
        net = torchvision_backbone(arch)
        assert net.out_dim == 2048 and isinstance(net.fc, torch.nn.Identity)
    assert sum(p.numel() for p in torchvision_backbone("resnext50").parameters()) == 22_979_904


def test_free_features_and_wrapper():
    model = NCModel(FreeFeatures(7, 3), num_classes=2, projection=True, proj_hidden=4, proj_dim=5)
    idx = torch.tensor([6, 0])
    assert torch.equal(model.features(idx), model.backbone.table[idx])
    assert model(idx).shape == (2, 2) and model.weight.shape == (2, 3)
    assert model.projector(model.features(idx)).shape == (2, 5)
    state = model.state_dict()
    assert {"class_means", "prototypes", "seen", "proto_seen"} <= set(state)


def test_build_model_from_config():
    cfg = resolve({"method": {"name": "etf"}, "data": {"dataset": "cifar100"}, "model": {"width": 2}})
    model = build_model(cfg, 100, 10)
    W = model.weight
    assert model.classifier is None and W.shape == (100, 128) and model.bias is None
    cos = torch.nn.functional.normalize(W, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    assert torch.allclose(cos[0, 1:], torch.full((99,), -1 / 99), atol=1e-5)
    torch.manual_seed(0)
    a = build_model(resolve({"method": {"name": "allnc"}}), 10, 1)
    torch.manual_seed(0)
    b = build_model(resolve({"method": {"name": "allnc"}}), 10, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
