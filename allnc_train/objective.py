"""One training step's loss for every method, and the running-statistics update after it.

    ce / la / etf   L = CE(conv)                      (la adds tau * log prior; etf fixes W)
    etf_dr          L = DR(conv)                      (fixed ETF, dot-regression loss: allnc_train.dot_regression)
    bbn             L = a CE(z, y_c) + (1 - a) CE(z, y_r), z = W [a f_c; (1 - a) f_r]   (allnc_train.bbn)
    allnc           L = eta * CE_c(conv) + (1 - eta) * CE_r(rebal) + w_h * HyCon + w_p * P2P

"conv" is the conventional branch's batch (instance-balanced sampler; ``hycon.views`` views per
image when HyCon is on, view 0 with the standard augmentation, the others with the contrastive
one); "rebal" the re-balancing branch's batch (``gbbn.sampler``, one view). Our reading of AllNC,
component by component (docs/ALLNC.md says why):

- GBBN: with ``gbbn.heads`` 2, CE_c and CE_r use the two heads (conventional = W + D,
  re-balancing = W - D) and inference uses their mean W (``model.weight``); with 1 head both use W.
  With ``gbbn.encoder_grad`` eta the re-balancing CE's gradient into the features is scaled by
  eta(t) while its head gets it in full: the re-balancing branch ends up training the classifier.
  Without GBBN, eta is 1 and there is no re-balancing batch. CE is taken on view 0 only.
- HyCon: on the penultimate features h (share ``hycon.feature_share``; the rest on the projection
  heads), class-balanced (``hycon.balanced``), class prototypes as positives and in every
  denominator (h-space prototypes: the inference rows, or running class means), anchors = every
  view of the conventional batch and (``hycon.rebal_anchors``) the re-balancing batch. Multiplied
  by eta only with ``hycon.fade``.
- P2P: on the batch's own class means (view 0 of conv plus rebal; ``p2p.means`` batch), gradient
  into the features, running means standing in (detached) for classes absent from the batch; the
  classifier is the inference one, ``model.weight``. ``p2p.means`` running is the older variant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import Config
from .losses import (
    batch_class_means,
    cross_entropy,
    ema_class_means,
    hycon_loss,
    logit_adjusted_ce,
    p2p_loss,
    scale_gradient,
)
from .models import NCModel

_NO_STATS = (None, None, None, None)  # methods without running statistics (P2P and HyCon are off)


def class_loss(cfg: Config, logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    if cfg.method.name == "la":
        return logit_adjusted_ce(logits, labels, log_prior, cfg.method.la_tau)
    return cross_entropy(logits, labels)


def _hycon(model: NCModel, cfg: Config, anchors: torch.Tensor, labels: torch.Tensor, parts: dict
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """HyCon on h (and on the projection for ``1 - feature_share``); returns (loss, projections or None)."""
    c = cfg.hycon
    loss, z = anchors.new_zeros(()), None
    if c.feature_share > 0:
        if c.prototypes == "classifier":
            protos, valid = model.weight.float(), None
        else:
            protos, valid = model.class_means.clone(), model.seen
        protos = protos if c.prototype_grad else protos.detach()
        hy = hycon_loss(anchors, anchors, labels, protos, c.temperature, valid, balanced=c.balanced)
        loss = loss + c.feature_share * hy
        parts["hycon_h"] = hy.detach()
    if c.feature_share < 1:
        z = model.projector(anchors)  # (N, p)
        q = model.predictor(z)  # (N, p)
        hz = hycon_loss(q, z, labels, model.prototypes.clone(), c.temperature, model.proto_seen, balanced=c.balanced)
        loss = loss + (1 - c.feature_share) * hz
        parts["hycon_z"] = hz.detach()
    return loss, z


def _full_precision(like: torch.Tensor):
    """Autocast switched off (on ``like``'s device) for a loss whose inputs are already float32."""
    return torch.autocast(like.device.type, enabled=False)


def _p2p(model: NCModel, cfg: Config, feats: torch.Tensor, labels: torch.Tensor, parts: dict) -> torch.Tensor:
    """The weighted P2P term on this step's class means (batch or running; ``p2p.means``)."""
    if cfg.p2p.means == "batch":
        means, known = batch_class_means(feats, labels, model.class_means, model.seen)  # (C, d)
    else:
        means, known = ema_class_means(model.class_means, model.seen, feats, labels, cfg.p2p.momentum)
    centred = means[known] - means[known].mean(0)  # class-centred over the classes known so far
    p2p, p2p_parts = p2p_loss(model.weight[known].float(), centred, cfg.p2p.align_weight, cfg.p2p.angle_weight,
                              cfg.p2p.norm_weight, num_classes=model.num_classes)
    parts.update(p2p=p2p.detach(), **p2p_parts)
    return cfg.p2p.weight * p2p


def training_loss(model: NCModel, cfg: Config, batch, rebal_batch, eta: float, log_prior: torch.Tensor
                  ) -> tuple[torch.Tensor, dict, dict]:
    """Loss of one step. ``batch`` = (x (B, V, ...), y (B,)); ``rebal_batch`` = (x (B, 1, ...), y) or None.

    Returns (loss, parts, stats): ``parts`` maps names to detached scalars for logging, ``stats`` is
    what :func:`update_running_stats` needs after the optimiser step.
    """
    if cfg.method.name == "bbn":  # BBN's own two-branch model; alpha = eta(t) with gamma 2 (bbn_alpha)
        from .bbn import bbn_loss

        loss, parts = bbn_loss(model, batch, rebal_batch, eta, lambda z, t: class_loss(cfg, z, t, log_prior))
        return loss, parts, _NO_STATS
    if cfg.method.name == "etf_dr":
        from .dot_regression import etf_dr_loss

        loss, parts = etf_dr_loss(model, batch)
        return loss, parts, _NO_STATS
    x, y = batch
    B, V = y.shape[0], x.shape[1]
    h_all = model.features(x.flatten(0, 1)).float()  # (B*V, d)
    yv = y.repeat_interleave(V)  # (B*V,)
    h0 = h_all.view(B, V, h_all.shape[-1])[:, 0]  # view 0: the standard augmentation
    ce = class_loss(cfg, model.classify_branch(h0, "conventional"), y, log_prior)
    parts = {"ce": ce.detach()}
    feats, labels = h0, y  # one view per image for the class means
    anchors, anchor_labels = h_all, yv
    loss = ce
    if rebal_batch is not None:
        xr, yr = rebal_batch
        hr = model.features(xr[:, 0]).float()  # (B, d)
        to_head = scale_gradient(hr, eta) if cfg.gbbn.encoder_grad == "eta" else hr
        rebal = class_loss(cfg, model.classify_branch(to_head, "rebalancing"), yr, log_prior)
        parts["ce_rebal"] = rebal.detach()
        loss = eta * ce + (1 - eta) * rebal
        feats, labels = torch.cat([feats, hr]), torch.cat([y, yr])
        if cfg.hycon.rebal_anchors:
            anchors, anchor_labels = torch.cat([anchors, hr]), torch.cat([yv, yr])
    z = None
    if cfg.hycon.enabled:
        with _full_precision(h_all):  # temperature-scaled cosines near 1: bf16 would quantise them (~0.04)
            hy, z = _hycon(model, cfg, anchors, anchor_labels, parts)
        loss = loss + cfg.hycon.weight * (eta if cfg.hycon.fade else 1.0) * hy
        parts["hycon"] = hy.detach()
    if cfg.p2p.enabled:
        with _full_precision(h_all):  # pairwise cosines near -1/(C-1): a float32 matter
            loss = loss + _p2p(model, cfg, feats, labels, parts)
    parts["loss"] = loss.detach()
    stats = (feats.detach(), labels, None if z is None else z.detach(), anchor_labels)
    return loss, parts, stats


@torch.no_grad()
def update_running_stats(model: NCModel, cfg: Config, stats) -> None:
    """Fold this step's features into the running class means and the HyCon prototypes."""
    feats, labels, z, zlabels = stats
    if cfg.p2p.enabled or (cfg.hycon.enabled and cfg.hycon.prototypes == "running"):
        means, seen = ema_class_means(model.class_means, model.seen, feats, labels, cfg.p2p.momentum)
        model.class_means.copy_(means)
        model.seen.copy_(seen)
    if z is not None:
        protos, seen = ema_class_means(model.prototypes, model.proto_seen, F.normalize(z, dim=1), zlabels,
                                       cfg.hycon.prototype_momentum)
        model.prototypes.copy_(protos)
        model.proto_seen.copy_(seen)


def train_step(model: NCModel, cfg: Config, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch, rebal_batch, eta: float, log_prior: torch.Tensor, autocast: torch.dtype | None = None,
               loss_forward=None
               ) -> dict[str, torch.Tensor]:
    """Forward, backward, optimiser step, running-statistics update. Returns the logged parts.

    ``loss_forward``: :func:`training_loss` wrapped in DistributedDataParallel (see ``distributed.wrap``)
    when training across processes; None computes the loss directly. ``autocast``: the autocast dtype
    (bfloat16 / float16), or None for full precision.
    """
    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        if loss_forward is None:
            loss, parts, stats = training_loss(model, cfg, batch, rebal_batch, eta, log_prior)
        else:
            loss, parts, stats = loss_forward(batch, rebal_batch, eta, log_prior)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    update_running_stats(model, cfg, stats)
    return parts
