"""A fixed simplex-ETF classifier trained with the dot-regression (DR) loss.

Yang, Chen, Li, Xie, Lin, Tao (Yibo Yang, Shixiang Chen, Xiangtai Li, Liang Xie, Zhouchen Lin,
Dacheng Tao), "Inducing Neural Collapse in Imbalanced Learning: Do We Really
Need a Learnable Classifier at the End of Deep Neural Network?", NeurIPS 2022; official code
github.com/NeuralCollapseApplications/ImbalancedLearning (``methods.py``: ``dot_loss`` with
``criterion == 'reg_dot_loss'``; ``train.py``; ``models/resnet_cifar.py``: ``ETF_Classifier``).
Nothing here is copied from it.

The DR loss of a feature h with label y against the fixed rows W (C, d)::

    L(h, y) = (w_y^T h - E_W E_H)^2 / (2 E_W E_H),   E_W, E_H the lengths of w_y and h

Only the target row enters: there is no "push" away from the other rows, unlike cross-entropy.
What we checked in the official code, and follow:

- ``E_W`` and ``E_H`` are the current lengths ||w_y|| and ||h_i|| (clamped at 1e-8), computed under
  ``torch.no_grad()``: constants for the gradient, so dL/dh = (cos(w_y, h) - 1) w_y, a multiple of
  w_y whatever the length of h, and L = 0 whenever h points along w_y (:func:`dot_regression_loss`,
  ``feature_norm=None``). In the paper's layer-peeled model the lengths are fixed by its norm
  constraints; ``feature_norm=E_H`` uses such a constant instead of the measured ||h||.
- The official code divides by ``H_length`` only, not by ``M_length * H_length``; its ETF columns
  have unit length (M = sqrt(C/(C-1)) P (I - 11^T/C)), so the two agree. We divide by E_W E_H as
  the paper does, which equals the official value whenever the rows have unit norm (our default
  ``method.etf_scale`` = 1) and keeps the paper's scaling otherwise.
- The mean over the batch is taken, as there.
- Before the ETF the official ``ETF_Classifier.forward`` applies ``BatchNorm1d(d)`` (learnable
  affine) and L2-normalises the feature; logits at training and test time are ``normalised_h @ M``.
  We follow it: :class:`NormalisedFeatures` wraps the backbone, so ``NCModel.features(x)`` is the
  normalised feature the fixed classifier reads, and dumps show that feature.
- Not followed: ``reg_lam`` (a penalty reg_lam * mean ||h||, 0.01 in the ImageNet-LT config; on the
  L2-normalised feature ||h|| = 1, so it has no gradient); ``GivenEw`` (per-batch rescaled target
  rows, set in none of the configs we read); mixup (on in their configs, CE baselines included: a
  data augmentation, not part of the method).

>>> import torch
>>> from nctools.core.geometry import simplex_etf
>>> W = simplex_etf(4, 6, dtype=torch.float64)  # unit rows
>>> y = torch.tensor([0, 2])
>>> h = 3.0 * W[y]  # aligned with w_y, length 3
>>> round(float(dot_regression_loss(h, y, W)), 12)  # measured E_H (official): zero at any length
0.0
>>> round(float(dot_regression_loss(h, y, W, feature_norm=3.0)), 12)  # the paper's E_H = 3: the right norm
0.0
>>> round(float(dot_regression_loss(h, y, W, feature_norm=1.0)), 12)  # wrong norm: (3 - 1)^2 / (2 * 1)
2.0
>>> round(float(dot_regression_loss(W[[1, 3]], y, W)), 4)  # wrong vertex: cos = -1/3, (4/3)^2 / 2
0.8889
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import NCModel, backbone_from_config
from ..schema import Config, ConfigError
from .method import Batch, Method, Objective, StepLoss, refuse_parts
from .plain import check_etf_dimension

__all__ = ["ETF_DR", "NormalisedFeatures", "build_etf_dr_model", "dot_regression_loss", "etf_dr_loss"]


def dot_regression_loss(features: torch.Tensor, labels: torch.Tensor, etf_weight: torch.Tensor,
                        feature_norm: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Mean DR loss of features (B, d) with labels (B,) against fixed classifier rows (C, d).

    L_i = (w_{y_i}^T h_i - E_W E_H)^2 / (2 E_W E_H), E_W = ||w_{y_i}||, E_H = ||h_i|| (both detached,
    clamped at ``eps``: the official code) or E_H = ``feature_norm`` (the paper's constant). The
    rows are detached: a fixed classifier receives no gradient. Computed in float32 or wider.
    """
    h = features if features.dtype == torch.float64 else features.float()
    w = etf_weight.detach().to(h.dtype)[labels]  # (B, d): only the target rows enter
    dot = (h * w).sum(1)  # (B,)
    with torch.no_grad():
        e_w = w.norm(dim=1).clamp(min=eps)
        e_h = h.norm(dim=1).clamp(min=eps) if feature_norm is None else torch.full_like(dot, float(feature_norm))
        target = e_w * e_h
    return ((dot - target) ** 2 / (2 * target)).mean()


class NormalisedFeatures(nn.Module):
    """backbone -> BatchNorm1d(d) -> L2 normalisation: the official code's feature before the ETF.

    ``out_dim`` is the backbone's; ``batch_norm=False`` keeps only the normalisation.
    """

    def __init__(self, backbone: nn.Module, batch_norm: bool = True, eps: float = 1e-8):
        super().__init__()
        self.backbone = backbone
        self.out_dim = backbone.out_dim
        self.bn = nn.BatchNorm1d(self.out_dim) if batch_norm else nn.Identity()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)  # (B, d)
        if self.training and h.shape[0] == 1 and isinstance(self.bn, nn.BatchNorm1d):
            # a batch of one has no batch statistics (the last batch of an epoch can be one sample):
            # normalise it with the running ones and leave them as they are
            h = nn.functional.batch_norm(h, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                                         False, 0.0, self.bn.eps)
        else:
            h = self.bn(h)
        return h / h.norm(dim=1, keepdim=True).clamp(min=self.eps)


def build_etf_dr_model(cfg: Config, num_classes: int, num_samples: int, batch_norm: bool = True) -> NCModel:
    """NCModel with the fixed simplex ETF (rows of norm ``method.etf_scale``, no bias) reading the
    BN + L2-normalised backbone feature (``num_samples`` sizes the free-feature table of ``ufm``)."""
    m = cfg.model
    backbone = NormalisedFeatures(backbone_from_config(cfg, num_samples), batch_norm)
    return NCModel(backbone, num_classes, fixed_etf=True, etf_scale=cfg.method.etf_scale, bias=False,
                   projection=bool(cfg.hycon.enabled), proj_hidden=m.proj_hidden, proj_dim=m.proj_dim)


def etf_dr_loss(model: NCModel, batch, feature_norm: float | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DR loss of one step on every view of ``batch`` = (x (B, V, ...), y (B,)): (loss, parts).

    ``model.weight`` must be the fixed ETF (``model.classifier is None``). parts: detached ``dr``
    and ``loss``.
    """
    if getattr(model, "classifier", None) is not None:
        raise ValueError("etf_dr_loss: the model has a learnable classifier; the DR loss needs the fixed ETF.")
    x, y = batch
    V = x.shape[1]
    h = model.features(x.flatten(0, 1)).float()  # (B*V, d)
    dr = dot_regression_loss(h, y.repeat_interleave(V), model.weight)
    return dr, {"dr": dr.detach(), "loss": dr.detach()}


class DotRegressionObjective(Objective):
    """The DR loss on every view of the conventional batch (no re-balancing branch)."""

    def loss(self, model: NCModel, batch: Batch) -> StepLoss:
        loss, parts = etf_dr_loss(model, batch.conventional)
        return StepLoss(loss, parts, None)


def check_etf_dr(cfg: Config) -> None:
    """A fixed ETF of dimension d >= C - 1, its own loss, no re-balancing branch."""
    check_etf_dimension(cfg)
    refuse_parts(cfg)
    if cfg.gbbn.enabled:
        raise ConfigError("method etf_dr has no re-balancing branch: set gbbn.enabled to false.")


ETF_DR = Method("etf_dr", "a fixed simplex-ETF classifier with the dot-regression loss (Yang et al. 2022)",
                build_etf_dr_model, lambda cfg, counts, device: DotRegressionObjective(cfg), check=check_etf_dr,
                recipe={"method": {"name": "etf_dr", "etf_scale": 1.0}})
