"""The losses, as pure functions of tensors.

- ``cross_entropy`` and ``logit_adjusted_ce`` (Menon et al. 2021: add tau * log prior to the logits
  while training, predict with the plain logits).
- ``hycon_loss`` (NC1): supervised contrastive loss (Khosla et al. 2020, the L_out form) on
  normalised vectors whose positives are the other views of the anchor's class AND the class
  prototype, and whose negatives are the other samples and the other prototypes. Prototypes cover
  every class, so a rare class is present in every batch. Anchors come from the predictor, keys and
  prototypes are targets (stop-gradient, the asymmetry that a predictor exists for in SimSiam/BYOL).
- ``p2p_loss`` (NC2, NC3): ties each classifier row to its centred class mean (1 - cos), and pushes
  rows and means toward the simplex ETF: pairwise cosines to -1/(C-1), and equal norms.

>>> import torch
>>> from nctools.core.geometry import simplex_etf
>>> W = simplex_etf(5, 8, dtype=torch.float32); float(p2p_loss(3 * W, 2 * W)[0]) < 1e-6
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, C) logits, computed in float32."""
    return F.cross_entropy(logits.float(), labels)


def logit_adjusted_ce(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0
                      ) -> torch.Tensor:
    """Cross-entropy of ``logits + tau * log_prior`` (C,): the logit-adjusted loss of Menon et al. 2021."""
    return F.cross_entropy(logits.float() + tau * log_prior.to(logits.device), labels)


def hycon_loss(anchors: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
               temperature: float = 0.1, valid_prototypes: torch.Tensor | None = None) -> torch.Tensor:
    """Hybrid contrastive loss.

    anchors, keys: (B, V, p) (V views of B samples); labels: (B,); prototypes: (C, p), one per class;
    valid_prototypes: (C,) bool, prototypes not yet estimated are left out. Gradients flow into
    ``anchors`` only. Returns the mean over the B * V anchors of
    -1/|P(i)| sum_{p in P(i)} log softmax_j(<a_i, k_j> / T) over j in {keys except i} U {prototypes}.
    """
    B, V, _ = anchors.shape
    C = prototypes.shape[0]
    a = F.normalize(anchors.float().flatten(0, 1), dim=1)  # (N, p), N = B * V
    k = F.normalize(keys.detach().float().flatten(0, 1), dim=1)  # (N, p)
    proto = F.normalize(prototypes.detach().float(), dim=1)  # (C, p)
    y = labels.repeat_interleave(V)  # (N,)
    N = a.shape[0]
    logits = a @ torch.cat([k, proto]).T / temperature  # (N, N + C)
    valid = torch.ones(N + C, dtype=torch.bool, device=a.device).expand(N, -1).clone()
    valid[:, :N].fill_diagonal_(False)  # an anchor is not its own key
    if valid_prototypes is not None:
        valid[:, N:] &= valid_prototypes.to(a.device)
    positive = torch.cat([y[:, None] == y[None, :], y[:, None] == torch.arange(C, device=a.device)[None, :]], 1)
    positive &= valid
    log_prob = logits.masked_fill(~valid, float("-inf")).log_softmax(dim=1)  # (N, N + C)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1) / positive.sum(1).clamp(min=1)
    has_positive = positive.any(1)
    return per_anchor[has_positive].mean() if has_positive.any() else anchors.sum() * 0.0


def _offdiag_cos_gap(vectors: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over ordered pairs c != c' of (cos(v_c, v_c') + 1/(C-1))^2; (K, d) -> scalar."""
    v = F.normalize(vectors, dim=1)
    cos = v @ v.T  # (K, K)
    K = cos.shape[0]
    if K < 2:
        return cos.sum() * 0.0
    off = ~torch.eye(K, dtype=torch.bool, device=cos.device)
    return ((cos[off] + 1.0 / (num_classes - 1)) ** 2).mean()


def _norm_cv2(vectors: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of the row norms (0 when all rows have one norm)."""
    n = vectors.norm(dim=1)
    return n.var(unbiased=False) / n.mean().clamp(min=1e-12) ** 2 if len(n) > 1 else n.sum() * 0.0


def p2p_loss(weight: torch.Tensor, centred_means: torch.Tensor, align_weight: float = 1.0, angle_weight: float = 1.0,
             norm_weight: float = 1.0, num_classes: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Peer-to-peer loss between classifier rows W (K, d) and centred class means M~ (K, d).

    K may be a subset of the C classes (``num_classes``, default K); the ETF cosine is -1/(C-1).
    Zero exactly when W and M~ are aligned simplex ETFs (any scales). Returns (loss, parts).
    """
    C = num_classes or weight.shape[0]
    W, M = weight.float(), centred_means.float()
    align = (1 - F.cosine_similarity(W, M, dim=1, eps=1e-12)).mean()
    angle = _offdiag_cos_gap(W, C) + _offdiag_cos_gap(M, C)
    norm = _norm_cv2(W) + _norm_cv2(M)
    loss = align_weight * align + angle_weight * angle + norm_weight * norm
    return loss, {"p2p_align": align.detach(), "p2p_angle": angle.detach(), "p2p_norm": norm.detach()}


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums (C, d) and counts (C,) of a batch; differentiable in ``features``."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums, counts


def ema_class_means(running: torch.Tensor, seen: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                    momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Running class means updated with a batch: (means (C, d), seen (C,)).

    Classes in the batch: momentum * running + (1 - momentum) * batch mean (or the batch mean when
    first seen); classes absent: the running value. Differentiable in ``features`` (the running
    estimate is detached), so a loss on the result trains the features of the batch.
    """
    sums, counts = class_sums(features.float(), labels, running.shape[0])
    present = counts > 0
    batch_mean = sums / counts.clamp(min=1)[:, None]
    old = running.detach().float()
    blended = torch.where(seen[:, None], momentum * old + (1 - momentum) * batch_mean, batch_mean)
    return torch.where(present[:, None], blended, old), seen | present
