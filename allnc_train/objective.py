"""One training step's loss for every method, and the running-statistics update after it.

    ce / la / etf   L = CE(conv)                      (la adds tau * log prior; etf fixes W)
    bbn             L = eta * CE(conv) + (1 - eta) * CE(rebal)
    allnc           L = eta * [CE(conv) + w_h HyCon(conv views)] + (1 - eta) * CE(rebal) + w_p P2P

"conv" is the conventional branch's batch (instance-balanced sampler, ``hycon.views`` augmented
views per image when HyCon is on); "rebal" the re-balancing branch's batch (reversed sampler). Both
branches share every weight (our reading of GBBN), so inference stays one plain forward. P2P's
class means are the running means updated with both branches' features of this batch, so tail
classes, over-drawn by the reversed sampler, move the means every step. With ``gbbn.enabled``
false, eta is 1 and there is no re-balancing batch. Each component switches off on its own.
"""
from __future__ import annotations

import torch

from .config import Config
from .losses import cross_entropy, ema_class_means, hycon_loss, logit_adjusted_ce, p2p_loss
from .models import NCModel


def class_loss(cfg: Config, logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    if cfg.method.name == "la":
        return logit_adjusted_ce(logits, labels, log_prior, cfg.method.la_tau)
    return cross_entropy(logits, labels)


def training_loss(model: NCModel, cfg: Config, batch, rebal_batch, eta: float, log_prior: torch.Tensor
                  ) -> tuple[torch.Tensor, dict, dict]:
    """Loss of one step. ``batch`` = (x (B, V, ...), y (B,)); ``rebal_batch`` likewise or None.

    Returns (loss, parts, stats): ``parts`` maps names to detached scalars for logging, ``stats`` is
    what :func:`update_running_stats` needs after the optimiser step.
    """
    x, y = batch
    B, V = y.shape[0], x.shape[1]
    h = model.features(x.flatten(0, 1)).float()  # (B*V, d)
    yv = y.repeat_interleave(V)  # (B*V,)
    ce = class_loss(cfg, model.classify(h), yv, log_prior)
    parts = {"ce": ce.detach()}
    conv, z = ce, None
    if cfg.hycon.enabled:
        z = model.projector(h)  # (B*V, p)
        q = model.predictor(z)  # (B*V, p)
        hy = hycon_loss(q.view(B, V, -1), z.view(B, V, -1), y, model.prototypes.clone(), cfg.hycon.temperature,
                        model.proto_seen)
        conv = conv + cfg.hycon.weight * hy
        parts["hycon"] = hy.detach()
    feats, labels = h.view(B, V, -1)[:, 0], y  # one view per image for the class means
    if rebal_batch is not None:
        xr, yr = rebal_batch
        hr = model.features(xr[:, 0]).float()  # (B, d)
        rebal = class_loss(cfg, model.classify(hr), yr, log_prior)
        parts["ce_rebal"] = rebal.detach()
        loss = eta * conv + (1 - eta) * rebal
        feats, labels = torch.cat([feats, hr]), torch.cat([y, yr])
    else:
        loss = conv
    if cfg.p2p.enabled:
        means, seen = ema_class_means(model.class_means, model.seen, feats, labels, cfg.p2p.momentum)  # (C, d)
        centred = means[seen] - means[seen].mean(0)  # class-centred over the classes estimated so far
        p2p, p2p_parts = p2p_loss(model.weight[seen], centred, cfg.p2p.align_weight, cfg.p2p.angle_weight,
                                  cfg.p2p.norm_weight, num_classes=model.num_classes)
        loss = loss + cfg.p2p.weight * p2p
        parts.update(p2p=p2p.detach(), **p2p_parts)
    parts["loss"] = loss.detach()
    stats = (feats.detach(), labels, None if z is None else z.detach(), yv)
    return loss, parts, stats


@torch.no_grad()
def update_running_stats(model: NCModel, cfg: Config, stats) -> None:
    """Fold this step's features into the running class means and the HyCon prototypes."""
    feats, labels, z, zlabels = stats
    if cfg.p2p.enabled:
        means, seen = ema_class_means(model.class_means, model.seen, feats, labels, cfg.p2p.momentum)
        model.class_means.copy_(means)
        model.seen.copy_(seen)
    if z is not None:
        protos, seen = ema_class_means(model.prototypes, model.proto_seen,
                                       torch.nn.functional.normalize(z, dim=1), zlabels, cfg.hycon.prototype_momentum)
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
