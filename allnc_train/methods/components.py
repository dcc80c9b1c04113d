"""The cross-entropy family's objective and model, with AllNC's parts as switches.

    L = eta * CE_c(conv) + (1 - eta) * CE_r(rebal) + w_h * HyCon + w_p * P2P

"conv" is the conventional branch's batch (instance-balanced sampler; ``hycon.views`` views per
image when HyCon is on, view 0 with the standard augmentation, the others with the contrastive
one); "rebal" the re-balancing branch's batch (``gbbn.sampler``, one view). CE is cross-entropy,
or logit-adjusted cross-entropy for method ``la``. Every method of this family (ce, la, etf,
allnc) may switch each part on; allnc switches all three on by default. Our reading of AllNC,
component by component (docs/ALLNC.md says why):

- GBBN: with ``gbbn.heads`` 2, CE_c and CE_r use the two heads (conventional = W + D,
  re-balancing = W - D) and inference uses their mean W (``model.weight``); with 1 head both use W.
  With ``gbbn.encoder_grad`` eta the re-balancing CE's gradient into the features is scaled by
  eta(t) while its head gets it in full: the re-balancing branch ends up training the classifier.
  Without GBBN, eta is 1 and there is no re-balancing batch. CE is taken on view 0 only, or on
  every view with ``hycon.views_to_ce`` (which makes the views even with HyCon off).
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

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..models import NCModel, backbone_from_config
from ..schema import Config
from .losses import batch_class_means, ema_class_means, hycon_loss, p2p_loss, scale_gradient
from .method import Batch, Objective, StepLoss, StepStats

__all__ = ["ComponentsObjective", "nc_model"]

ClassLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B, C), labels (B,)) -> scalar


def nc_model(cfg: Config, num_classes: int, num_samples: int, fixed_etf: bool = False) -> NCModel:
    """The family's model: the backbone, a linear classifier (or the fixed simplex ETF), HyCon's
    projection heads when HyCon puts weight on them, GBBN's two heads when asked for."""
    m = cfg.model
    return NCModel(backbone_from_config(cfg, num_samples), num_classes, fixed_etf=fixed_etf,
                   etf_scale=cfg.method.etf_scale, bias=m.bias,
                   projection=bool(cfg.hycon.enabled) and cfg.hycon.feature_share < 1,
                   proj_hidden=m.proj_hidden, proj_dim=m.proj_dim,
                   two_heads=bool(cfg.gbbn.enabled) and cfg.gbbn.heads == 2)


def _full_precision(like: torch.Tensor):
    """Autocast switched off (on ``like``'s device) for a loss whose inputs are already float32."""
    return torch.autocast(like.device.type, enabled=False)


class ComponentsObjective(Objective):
    """CE (``class_loss``) on the conventional branch plus whichever of GBBN, HyCon and P2P the config
    switches on (see the module docstring)."""

    def __init__(self, cfg: Config, class_loss: ClassLoss):
        super().__init__(cfg)
        self.class_loss = class_loss

    def loss(self, model: NCModel, batch: Batch) -> StepLoss:
        cfg, eta = self.cfg, self.eta
        x, y = batch.conventional
        B, V = y.shape[0], x.shape[1]
        h_all = model.features(x.flatten(0, 1)).float()  # (B*V, d)
        yv = y.repeat_interleave(V)  # (B*V,)
        h0 = h_all.view(B, V, h_all.shape[-1])[:, 0]  # view 0: the standard augmentation
        if cfg.hycon.views_to_ce:  # every view, each with its own augmentation, is a CE sample
            ce = self.class_loss(model.classify_branch(h_all, "conventional"), yv)
        else:
            ce = self.class_loss(model.classify_branch(h0, "conventional"), y)
        parts = {"ce": ce.detach()}
        feats, labels = h0, y  # one view per image for the class means
        anchors, anchor_labels = h_all, yv
        loss = ce
        if batch.rebalancing is not None:
            xr, yr = batch.rebalancing
            hr = model.features(xr[:, 0]).float()  # (B, d)
            to_head = scale_gradient(hr, eta) if cfg.gbbn.encoder_grad == "eta" else hr
            rebal = self.class_loss(model.classify_branch(to_head, "rebalancing"), yr)
            parts["ce_rebal"] = rebal.detach()
            loss = eta * ce + (1 - eta) * rebal
            feats, labels = torch.cat([feats, hr]), torch.cat([y, yr])
            if cfg.hycon.rebal_anchors:
                anchors, anchor_labels = torch.cat([anchors, hr]), torch.cat([yv, yr])
        z = None
        if cfg.hycon.enabled:
            with _full_precision(h_all):  # temperature-scaled cosines near 1: bf16 would quantise them (~0.04)
                hy, z = self._hycon(model, anchors, anchor_labels, parts)
            loss = loss + cfg.hycon.weight * (eta if cfg.hycon.fade else 1.0) * hy
            parts["hycon"] = hy.detach()
        if cfg.p2p.enabled:
            with _full_precision(h_all):  # pairwise cosines near -1/(C-1): a float32 matter
                loss = loss + self._p2p(model, feats, labels, parts)
        parts["loss"] = loss.detach()
        return StepLoss(loss, parts, StepStats(feats.detach(), labels, None if z is None else z.detach(),
                                               anchor_labels))

    def _hycon(self, model: NCModel, anchors: torch.Tensor, labels: torch.Tensor, parts: dict
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """HyCon on h (and on the projection for ``1 - feature_share``); returns (loss, projections or None)."""
        c = self.cfg.hycon
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
            hz = hycon_loss(q, z, labels, model.prototypes.clone(), c.temperature, model.proto_seen,
                            balanced=c.balanced)
            loss = loss + (1 - c.feature_share) * hz
            parts["hycon_z"] = hz.detach()
        return loss, z

    def _p2p(self, model: NCModel, feats: torch.Tensor, labels: torch.Tensor, parts: dict) -> torch.Tensor:
        """The weighted P2P term on this step's class means (batch or running; ``p2p.means``)."""
        p = self.cfg.p2p
        if p.means == "batch":
            means, known = batch_class_means(feats, labels, model.class_means, model.seen)  # (C, d)
        else:
            means, known = ema_class_means(model.class_means, model.seen, feats, labels, p.momentum)
        centred = means[known] - means[known].mean(0)  # class-centred over the classes known so far
        p2p, p2p_parts = p2p_loss(model.weight[known].float(), centred, p.align_weight, p.angle_weight,
                                  p.norm_weight, num_classes=model.num_classes)
        parts.update(p2p=p2p.detach(), **p2p_parts)
        return p.weight * p2p

    @torch.no_grad()
    def update(self, model: NCModel, stats: StepStats | None) -> None:
        """Fold this step's features into the running class means and the HyCon prototypes."""
        cfg = self.cfg
        if cfg.p2p.enabled or (cfg.hycon.enabled and cfg.hycon.prototypes == "running"):
            means, seen = ema_class_means(model.class_means, model.seen, stats.features, stats.labels,
                                          cfg.p2p.momentum)
            model.class_means.copy_(means)
            model.seen.copy_(seen)
        if stats.projections is not None:
            protos, seen = ema_class_means(model.prototypes, model.proto_seen, F.normalize(stats.projections, dim=1),
                                           stats.projection_labels, cfg.hycon.prototype_momentum)
            model.prototypes.copy_(protos)
            model.proto_seen.copy_(seen)
