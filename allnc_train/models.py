"""Backbones and the wrapper that gives feature, projection, predictor and classifier.

- ``ResNetCifar``: ResNet-32 for CIFAR as in He et al. 2016 and LDAM-DRW's ``resnet_cifar.py``
  (16/32/64 channels times a width multiplier, 5 basic blocks per stage, option-A shortcuts:
  strided identity padded with zero channels, Kaiming-normal init), 64 * width-d feature.
- torchvision ResNet-50 / ResNeXt-50 (32x4d) with the final ``fc`` removed (2048-d feature).
- ``FreeFeatures``: the unconstrained-features (layer-peeled) model of Fang et al. 2021: a learnable
  table with one free feature vector per training sample, looked up by sample index.
- ``NCModel``: backbone -> feature h; classifier (linear, or a fixed simplex ETF); optional
  projection MLP and predictor for HyCon (``projection``); running class statistics for HyCon and P2P as buffers,
  so they live in checkpoints. Inference is one plain forward: ``model(x)`` gives logits.
  With ``two_heads`` (GBBN's two classification heads) the conventional head is
  ``classifier + head_delta`` and the re-balancing head ``classifier - head_delta``: the inference
  classifier ``classifier`` (``model.weight`` / ``model.bias``) is exactly the mean of the two heads,
  and it is what dumps store and nctools measures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nctools.core.geometry import simplex_etf

from .schema import Config

# ---------------------------------------------------------------------------------------------
# ResNet-32 for CIFAR
# ---------------------------------------------------------------------------------------------

class _OptionA(nn.Module):
    """Option-A shortcut: subsample spatially, pad the new channels with zeros (no parameters)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _OptionA((planes - in_planes) // 2) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 images; ``blocks=5`` gives ResNet-32. Output: (B, 64 * width)."""

    def __init__(self, blocks: int = 5, width: int = 1):
        super().__init__()
        c1, c2, c3 = 16 * width, 32 * width, 64 * width
        self.conv1 = nn.Conv2d(3, c1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        layers, in_planes = [], c1
        for planes, stride in ((c1, 1), (c2, 2), (c3, 2)):
            for b in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.out_dim = c3
        for m in self.modules():  # Kaiming-normal init, as in LDAM-DRW's resnet_cifar.py
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class FreeFeatures(nn.Module):
    """Unconstrained features: ``forward(index)`` returns row ``index`` of a learnable (N, d) table."""

    def __init__(self, num_samples: int, dim: int, init_std: float = 0.1):
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_samples, dim) * init_std)
        self.out_dim = dim

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


def torchvision_backbone(arch: str) -> nn.Module:
    """ResNet-50 or ResNeXt-50 (32x4d) from torchvision, randomly initialised, ``fc`` replaced by identity."""
    import torchvision

    net = torchvision.models.resnet50() if arch == "resnet50" else torchvision.models.resnext50_32x4d()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


# ---------------------------------------------------------------------------------------------
# The wrapper
# ---------------------------------------------------------------------------------------------

def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear (SimSiam's heads): BN keeps the projection from being dominated by the
    biases when features are small, which would make every normalised projection point one way."""
    return nn.Sequential(nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d_out))


class NCModel(nn.Module):
    """Backbone + classifier (+ HyCon heads); ``forward(x)`` is plain inference (logits).

    Buffers: ``class_means`` (C, d) running feature means for P2P, ``prototypes`` (C, p) running
    mean normalised projections for HyCon, ``seen`` / ``proto_seen`` (C) which classes have
    updated them so far.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, fixed_etf: bool = False, etf_scale: float = 1.0,
                 bias: bool = True, projection: bool = False, proj_hidden: int = 512, proj_dim: int = 128,
                 two_heads: bool = False):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.num_classes, self.feature_dim = num_classes, d
        if fixed_etf:  # a buffer, not a parameter: the classifier never trains (Yang et al. 2022)
            self.register_buffer("etf_weight", simplex_etf(num_classes, d, dtype=torch.float32) * etf_scale)
            self.classifier = None
        else:
            self.classifier = nn.Linear(d, num_classes, bias=bias)
            nn.init.kaiming_normal_(self.classifier.weight)
            if bias:
                nn.init.zeros_(self.classifier.bias)
        self.head_delta = None  # (W_delta, b_delta): conventional head = classifier + delta, re-balancing = - delta
        if two_heads:
            if self.classifier is None:
                raise ValueError("two classification heads need a trainable classifier, not a fixed ETF.")
            self.head_delta = nn.Linear(d, num_classes, bias=bias)
            nn.init.zeros_(self.head_delta.weight)  # the heads start equal; they part as the branches train them
            if bias:
                nn.init.zeros_(self.head_delta.bias)
        self.projector = _mlp(d, proj_hidden, proj_dim) if projection else None
        self.predictor = _mlp(proj_dim, proj_hidden, proj_dim) if projection else None
        self.register_buffer("class_means", torch.zeros(num_classes, d))
        self.register_buffer("prototypes", torch.zeros(num_classes, proj_dim if projection else 1))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("proto_seen", torch.zeros(num_classes, dtype=torch.bool))

    @property
    def weight(self) -> torch.Tensor:
        """Classifier rows W (C, d)."""
        return self.etf_weight if self.classifier is None else self.classifier.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.classifier is None else self.classifier.bias

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, d)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.to(h.dtype), None if self.bias is None else self.bias.to(h.dtype))  # (B, C)

    def classify_branch(self, h: torch.Tensor, branch: str) -> torch.Tensor:
        """Logits of GBBN's ``"conventional"`` or ``"rebalancing"`` head; the inference head with one head."""
        if self.head_delta is None:
            return self.classify(h)
        sign = 1.0 if branch == "conventional" else -1.0
        weight = self.weight + sign * self.head_delta.weight
        bias = None if self.bias is None else self.bias + sign * self.head_delta.bias
        return F.linear(h, weight.to(h.dtype), None if bias is None else bias.to(h.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def backbone_from_config(cfg: Config, num_samples: int) -> nn.Module:
    """The plain backbone ``cfg.model`` names (``num_samples`` sizes the free-feature table of ``ufm``)."""
    m = cfg.model
    if m.arch == "resnet32":
        return ResNetCifar(5, m.width)
    if m.arch == "ufm":
        return FreeFeatures(num_samples, m.feature_dim, m.ufm_init_std)
    return torchvision_backbone(m.arch)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
