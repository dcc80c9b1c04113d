"""BBN: the bilateral-branch network with cumulative learning, as a self-contained baseline.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020; official code github.com/Megvii-Nanjing/BBN (``lib/backbone/
resnet.py``, ``lib/net/network.py``, ``lib/core/combiner.py``). Nothing here is copied from it.

The network: every layer is shared except the last residual block, which exists twice, once for
the conventional branch (instance-balanced batch x_c) and once for the re-balancing branch
(reversed-sampler batch x_r). Each branch feature is globally average pooled to f_c, f_r (B, d),
and one linear classifier reads the concatenation (C, 2d)::

    training    z = W s [alpha f_c(x_c); (1 - alpha) f_r(x_r)] + b
                L = alpha CE(z, y_c) + (1 - alpha) CE(z, y_r),   alpha = 1 - (t / T)^2, t the 0-based epoch
    inference   z = W s [0.5 f_c(x); 0.5 f_r(x)] + b = classify(features(x))

with s = ``mix_scale``. What we checked in the official code, and where we differ:

- ``combiner.py`` (``bbn_mix``) mixes ``2 * cat(l * feature_a, (1 - l) * feature_b)``: the factor 2
  is s = 2 (our default), and its inference (``network.py``: the backbone's plain forward returns
  ``cat(cb_block(x), rb_block(x))``, then GAP and the classifier) is the same formula at alpha = 0.5,
  so ``features(x) = s * cat(0.5 f_c, 0.5 f_r)`` is exactly what the official classifier reads.
  ``mix_scale=1`` gives the paper's equation (z = alpha W_c f_c + (1 - alpha) W_r f_r); the two
  differ by a factor 2 on the logits, which changes training (not the argmax at a fixed W).
- ``l = 1 - ((epoch - 1) / div_epoch) ** 2`` with 1-based epochs: our ``gbbn_eta(t, T, 2.0)`` with
  0-based t. The official ``div_epoch`` is T except for T = 90 or 180, where it is rounded up to 100
  or 200 (alpha then never gets near 0); we always divide by T.
- Branch blocks (``BBN_ResNet_Cifar``, ``BBN_ResNet``): the last stage loses its last block and
  gains two stride-1 identity-shortcut blocks, initialised independently. We duplicate the last
  block of the existing backbone: for ResNet-32 the last BasicBlock of stage 3 (64w -> 64w, stride
  1: the official shape), for torchvision ResNet-50 / ResNeXt-50 ``layer4[-1]`` (2048 -> 2048, the
  official shape); the copy is re-initialised with the backbone's own rule.
- The classifier is ``nn.Linear(2d, C, bias)`` as in ``network.py``; we initialise it as
  :class:`allnc_train.models.NCModel` does (Kaiming-normal rows, zero bias), not with PyTorch's
  default, so every method of this trainer starts its classifier alike.
- Both batches go through the shared layers in training mode, so BatchNorm statistics of the shared
  layers see both samplers, as in the official two forward calls.

The unconstrained-features model (:class:`allnc_train.models.FreeFeatures`) has no residual blocks;
our adaptation (not in the paper) gives each branch a learnable d x d linear map initialised at the
identity, applied to the shared free feature: f_c = A_c t_i, f_r = A_r t_i.

>>> import torch
>>> from allnc_train.models import FreeFeatures
>>> model = BBNModel(bbn_backbone(FreeFeatures(5, 3)), num_classes=2)
>>> idx = torch.tensor([4, 0])
>>> model.features(idx).shape, model.feature_dim, model.weight.shape
(torch.Size([2, 6]), 6, torch.Size([2, 6]))
>>> torch.equal(model(idx), model.classify(model.features(idx)))
True
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import FreeFeatures, ResNetCifar, backbone_from_config
from ..schedules import gbbn_eta
from ..schema import Config, ConfigError
from .losses import cross_entropy
from .method import Batch, Method, Objective, StepLoss, refuse_parts

__all__ = ["BBN", "BBNBackbone", "BBNModel", "bbn_alpha", "bbn_backbone", "bbn_loss", "build_bbn_model"]


# ---------------------------------------------------------------------------------------------
# Splitting a backbone into shared layers and two branch blocks
# ---------------------------------------------------------------------------------------------

class _CifarTrunk(nn.Module):
    """ResNet-32's stem and every basic block but the last (the layers BBN shares)."""

    def __init__(self, net: ResNetCifar):
        super().__init__()
        self.conv1, self.bn1 = net.conv1, net.bn1
        self.layers = nn.Sequential(*list(net.layers)[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.relu(self.bn1(self.conv1(x))))  # (B, c, H, W) before the branch block


class _TorchvisionTrunk(nn.Module):
    """torchvision ResNet / ResNeXt up to, not including, ``layer4[-1]``; module names kept."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = nn.Sequential(*list(net.layer4)[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _identity_map(dim: int) -> nn.Linear:
    lin = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(dim))
    return lin


def _reinit_convs(block: nn.Module, **kaiming) -> nn.Module:
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, **kaiming)
    return block


def _pool(out: torch.Tensor) -> torch.Tensor:
    """Global average pooling of a (B, c, H, W) map to (B, c); a (B, d) feature passes unchanged."""
    return F.adaptive_avg_pool2d(out, 1).flatten(1) if out.dim() > 2 else out


class BBNBackbone(nn.Module):
    """Shared layers + a conventional-branch block + a re-balancing-branch block.

    ``forward(x)`` is the inference feature ``mix_scale * cat(0.5 f_c(x), 0.5 f_r(x))`` (B, 2d),
    so ``nn.Sequential(backbone, linear_head)`` is the whole inference network. ``out_dim`` = 2d,
    ``branch_dim`` = d.
    """

    def __init__(self, shared: nn.Module, conventional_block: nn.Module, rebalancing_block: nn.Module,
                 branch_dim: int, mix_scale: float = 2.0):
        super().__init__()
        self.shared = shared
        self.conventional_block = conventional_block
        self.rebalancing_block = rebalancing_block
        self.branch_dim, self.out_dim = branch_dim, 2 * branch_dim
        self.mix_scale = float(mix_scale)

    def conventional(self, x: torch.Tensor) -> torch.Tensor:
        """f_c (B, d): the shared layers, the conventional block, global average pooling."""
        return _pool(self.conventional_block(self.shared(x)))

    def rebalancing(self, x: torch.Tensor) -> torch.Tensor:
        """f_r (B, d): the shared layers, the re-balancing block, global average pooling."""
        return _pool(self.rebalancing_block(self.shared(x)))

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_c(x), f_r(x)), both branch blocks applied to one pass of the shared layers."""
        s = self.shared(x)
        return _pool(self.conventional_block(s)), _pool(self.rebalancing_block(s))

    def mix(self, f_c: torch.Tensor, f_r: torch.Tensor, alpha: float) -> torch.Tensor:
        """What the classifier reads: ``mix_scale * cat(alpha f_c, (1 - alpha) f_r)`` (B, 2d)."""
        return self.mix_scale * torch.cat([alpha * f_c, (1.0 - alpha) * f_r], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(*self.branches(x), 0.5)


def bbn_backbone(net: nn.Module, mix_scale: float = 2.0) -> BBNBackbone:
    """Split one of :mod:`allnc_train.models`' backbones into BBN's shared layers and two branches.

    ``net`` is consumed: its modules become the shared layers and the conventional block.
    ResNetCifar: the last BasicBlock of stage 3 is duplicated; torchvision ResNet / ResNeXt:
    ``layer4[-1]``; FreeFeatures: two d x d linear maps initialised at the identity (our adaptation).
    """
    if isinstance(net, ResNetCifar):
        block = net.layers[-1]
        rebal = _reinit_convs(copy.deepcopy(block))  # ResNetCifar's rule: Kaiming-normal (LDAM-DRW)
        return BBNBackbone(_CifarTrunk(net), block, rebal, net.out_dim, mix_scale)
    if isinstance(net, FreeFeatures):
        return BBNBackbone(net, _identity_map(net.out_dim), _identity_map(net.out_dim), net.out_dim, mix_scale)
    if hasattr(net, "layer4") and hasattr(net, "conv1"):  # torchvision ResNet / ResNeXt
        block = net.layer4[-1]
        rebal = _reinit_convs(copy.deepcopy(block), mode="fan_out", nonlinearity="relu")  # torchvision's rule
        return BBNBackbone(_TorchvisionTrunk(net), block, rebal, net.out_dim, mix_scale)
    raise TypeError(f"bbn_backbone: cannot split a {type(net).__name__} into BBN branches "
                    "(expected ResNetCifar, FreeFeatures or a torchvision ResNet).")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class BBNModel(nn.Module):
    """BBN with :class:`allnc_train.models.NCModel`'s public surface; ``forward(x)`` is inference.

    ``features(x)`` is the inference feature (B, 2d) and ``weight`` (C, 2d) / ``bias`` (C,) the one
    classifier, so ``model(x) == classify(features(x))`` and a dump of features plus classifier rows
    describes the inference network. Buffers ``class_means`` (C, 2d), ``prototypes`` (C, 1),
    ``seen``, ``proto_seen`` exist as in NCModel so generic code keeps working (BBN uses none).
    """

    def __init__(self, backbone: BBNBackbone, num_classes: int, bias: bool = True):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.num_classes, self.feature_dim = num_classes, d
        self.classifier = nn.Linear(d, num_classes, bias=bias)
        nn.init.kaiming_normal_(self.classifier.weight)
        if bias:
            nn.init.zeros_(self.classifier.bias)
        self.projector = self.predictor = None  # no HyCon heads
        self.register_buffer("class_means", torch.zeros(num_classes, d))
        self.register_buffer("prototypes", torch.zeros(num_classes, 1))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("proto_seen", torch.zeros(num_classes, dtype=torch.bool))

    @property
    def weight(self) -> torch.Tensor:
        """Classifier rows W (C, 2d)."""
        return self.classifier.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.classifier.bias

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The inference feature ``mix_scale * cat(0.5 f_c(x), 0.5 f_r(x))`` (B, 2d)."""
        return self.backbone(x)

    def mix(self, f_c: torch.Tensor, f_r: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.backbone.mix(f_c, f_r, alpha)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.to(h.dtype), None if self.bias is None else self.bias.to(h.dtype))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


# ---------------------------------------------------------------------------------------------
# Loss and schedule
# ---------------------------------------------------------------------------------------------

def bbn_alpha(epoch: int, total_epochs: int) -> float:
    """BBN's cumulative-learning weight alpha = 1 - (t / T)^2 for the 0-based epoch t.

    >>> [bbn_alpha(t, 4) for t in range(4)]
    [1.0, 0.9375, 0.75, 0.4375]
    """
    return gbbn_eta(epoch, total_epochs, 2.0)


def bbn_loss(model: BBNModel, batch, rebal_batch, alpha: float,
             class_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BBN's loss of one step: (loss, parts), parts = detached ``ce``, ``ce_rebal`` and ``loss``.

    ``batch`` = (x (B, V, ...), y (B,)) from the instance-balanced sampler, ``rebal_batch`` likewise
    from the reversed sampler; view 0 of each is used. z = W s [alpha f_c(x_c); (1 - alpha) f_r(x_r)]
    + b and loss = alpha class_loss(z, y_c) + (1 - alpha) class_loss(z, y_r). ``class_loss(logits,
    labels)`` defaults to cross-entropy (BBN's); pass a logit-adjusted one to combine. Features are
    cast to float32 before the classifier, as in the cross-entropy family's objective
    (:mod:`allnc_train.methods.components`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"bbn_loss: alpha must lie in [0, 1], got {alpha!r}.")
    (x, y), (xr, yr) = batch, rebal_batch
    f_c = model.backbone.conventional(x[:, 0]).float()  # (B, d)
    f_r = model.backbone.rebalancing(xr[:, 0]).float()  # (B', d)
    z = model.classify(model.mix(f_c, f_r, alpha))  # (B, C); needs B' == B, as the two samplers give
    ce, ce_rebal = class_loss(z, y), class_loss(z, yr)
    loss = alpha * ce + (1.0 - alpha) * ce_rebal
    return loss, {"ce": ce.detach(), "ce_rebal": ce_rebal.detach(), "loss": loss.detach()}


# ---------------------------------------------------------------------------------------------
# From a config
# ---------------------------------------------------------------------------------------------

def build_bbn_model(cfg: Config, num_classes: int, num_samples: int, mix_scale: float = 2.0) -> BBNModel:
    """The BBN model for ``cfg.model`` (``num_samples`` sizes the free-feature table of ``ufm``).

    ``mix_scale`` 2 is the official code's, 1 the paper's equation (see the module docstring).
    """
    if cfg.hycon.enabled:
        raise ValueError("build_bbn_model: BBN has no HyCon projection heads; set hycon.enabled to false.")
    return BBNModel(bbn_backbone(backbone_from_config(cfg, num_samples), mix_scale), num_classes, bias=cfg.model.bias)


class BBNObjective(Objective):
    """BBN's loss with alpha = eta(t) (gamma 2: :func:`bbn_alpha`), cross-entropy on both branches."""

    def loss(self, model: BBNModel, batch: Batch) -> StepLoss:
        loss, parts = bbn_loss(model, batch.conventional, batch.rebalancing, self.eta)
        return StepLoss(loss, parts, None)


def check_bbn(cfg: Config) -> None:
    """BBN is its own model and loss, with its paper's schedule and one classifier reading both branches."""
    refuse_parts(cfg)
    if cfg.gbbn.gamma != 2 or cfg.gbbn.encoder_grad != "full":
        raise ConfigError("method bbn is BBN's cumulative learning, alpha = 1 - (t/T)^2 with both branches training "
                          "the features: leave gbbn.gamma at 2 and gbbn.encoder_grad at full (other choices are "
                          "GBBN's, method allnc).")
    if not cfg.gbbn.enabled or cfg.gbbn.heads != 1:
        raise ConfigError("method bbn mixes its two branches with eta(t): set gbbn.enabled to true and gbbn.heads to 1 "
                          "(BBN's classifier reads both branch features).")


BBN = Method("bbn", "BBN: bilateral-branch network with cumulative learning (Zhou et al. 2020)", build_bbn_model,
             lambda cfg, counts, device: BBNObjective(cfg), components={"gbbn": True, "hycon": False, "p2p": False},
             check=check_bbn, recipe={"method": {"name": "bbn"}, "gbbn": {"enabled": True, "gamma": 2.0,
                                      "sampler": "reversed", "heads": 1, "encoder_grad": "full"}})
