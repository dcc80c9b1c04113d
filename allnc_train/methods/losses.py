"""The losses, as pure functions of tensors.

- ``cross_entropy`` and ``logit_adjusted_ce`` (Menon et al. 2021: add tau * log prior to the logits
  while training, predict with the plain logits).
- ``hycon_loss`` (NC1): supervised contrastive loss (Khosla et al. 2020, the L_out form) on
  normalised vectors whose positives are the other samples and views of the anchor's class AND the
  class prototype, and whose negatives are the other samples and the other prototypes. Prototypes
  cover every class, so a rare class is present in every batch; with ``balanced`` the denominator
  averages within each class before summing over classes (BCL, Zhu et al. CVPR 2022), so a rare
  class weighs as much as a frequent one. Keys are targets (stop-gradient).
- ``p2p_loss`` (NC2, NC3): ties each classifier row to its centred class mean (1 - cos), and pushes
  rows and means toward the simplex ETF: pairwise cosines to -1/(C-1), and equal norms. Its class
  means are either the batch's own (``batch_class_means``) or running ones (``ema_class_means``).
- ``scale_gradient``: identity forward, scaled backward (GBBN's feature-classifier decoupling).

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


def class_balanced_weights(valid: torch.Tensor, column_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Denominator weights (N, K) of the class-balanced contrastive loss (BCL, Zhu et al. CVPR 2022).

    ``valid`` (N, K) marks the columns each anchor row may see, ``column_labels`` (K,) their classes.
    A valid column of class c gets 1 / (number of valid columns of class c in that row), so that
    every class present in a row weighs 1 in total, whatever its count in the batch; invalid columns 0.

    >>> w = class_balanced_weights(torch.ones(1, 4, dtype=torch.bool), torch.tensor([0, 0, 0, 1]), 2)
    >>> [round(v, 4) for v in w[0].tolist()]
    [0.3333, 0.3333, 0.3333, 1.0]
    """
    onehot = F.one_hot(column_labels, num_classes).to(torch.float32)  # (K, C)
    per_class = valid.to(torch.float32) @ onehot  # (N, C): valid columns of each class, per row
    count = per_class[:, column_labels]  # (N, K)
    return torch.where(valid, 1.0 / count.clamp(min=1), torch.zeros_like(count))


def hycon_loss(anchors: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
               temperature: float = 0.1, valid_prototypes: torch.Tensor | None = None, balanced: bool = False
               ) -> torch.Tensor:
    """Hybrid contrastive loss.

    anchors, keys: (N, p) with labels (N,) (key j is anchor j's own vector or its target), or the
    older (B, V, p) form with labels (B,) (V views of B samples); prototypes: (C, p), one per class;
    valid_prototypes: (C,) bool, prototypes not yet estimated are left out. ``keys`` are targets
    (detached); ``prototypes`` keep whatever gradient they carry (detach them to make them targets).
    Returns the mean over the anchors that have a positive of
    -1/|P(i)| sum_{p in P(i)} log [exp(s_ip) / sum_j w_ij exp(s_ij)], s = <a_i, k_j> / T, over
    j in {keys except i} U {prototypes}; P(i) = the keys of i's class (except i) and its prototype.
    ``balanced`` false: w_ij = 1 (the SupCon / L_out form); true: w_ij = 1 / |class of j in row i|,
    BCL's class-averaged denominator, in which every class weighs the same however many samples of it
    the batch holds (:func:`class_balanced_weights`).
    """
    if anchors.dim() == 3:
        V = anchors.shape[1]
        anchors, keys, labels = anchors.flatten(0, 1), keys.flatten(0, 1), labels.repeat_interleave(V)
    C = prototypes.shape[0]
    a = F.normalize(anchors.float(), dim=1)  # (N, p)
    k = F.normalize(keys.detach().float(), dim=1)  # (N, p)
    proto = F.normalize(prototypes.float(), dim=1)  # (C, p)
    y = labels
    N = a.shape[0]
    classes = torch.arange(C, device=a.device)
    logits = a @ torch.cat([k, proto]).T / temperature  # (N, N + C)
    valid = torch.ones(N + C, dtype=torch.bool, device=a.device).expand(N, -1).clone()
    valid[:, :N].fill_diagonal_(False)  # an anchor is not its own key
    if valid_prototypes is not None:
        valid[:, N:] &= valid_prototypes.to(a.device)
    positive = torch.cat([y[:, None] == y[None, :], y[:, None] == classes[None, :]], 1)
    positive &= valid
    if balanced:
        w = class_balanced_weights(valid, torch.cat([y, classes]), C)
        shifted = logits + w.clamp(min=1e-30).log()
    else:
        shifted = logits
    log_den = shifted.masked_fill(~valid, float("-inf")).logsumexp(dim=1, keepdim=True)  # (N, 1)
    log_prob = logits - log_den  # (N, N + C)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1) / positive.sum(1).clamp(min=1)
    has_positive = positive.any(1).to(per_anchor.dtype)
    # a masked mean rather than boolean indexing: no device-to-host sync in the training step
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1)


def _offdiag_cos_gap(vectors: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over ordered pairs c != c' of (cos(v_c, v_c') + 1/(C-1))^2; (K, d) -> scalar."""
    v = F.normalize(vectors, dim=1)
    cos = v @ v.T  # (K, K)
    K = cos.shape[0]
    if K < 2:
        return cos.sum() * 0.0
    off = 1.0 - torch.eye(K, dtype=cos.dtype, device=cos.device)
    return (((cos + 1.0 / (num_classes - 1)) ** 2) * off).sum() / (K * (K - 1))


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
    # index_add rather than bincount, which reads the labels' range back to the host on CUDA
    counts = torch.zeros(num_classes, dtype=torch.int64, device=labels.device).index_add_(0, labels,
                                                                                          torch.ones_like(labels))
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


def batch_class_means(features: torch.Tensor, labels: torch.Tensor, running: torch.Tensor, seen: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means of the batch itself, the running means standing in for absent classes.

    Returns (means (C, d), known (C,)): a class present in the batch gets its batch mean, with
    gradient into ``features``; an absent class gets its running mean, detached; ``known`` marks the
    classes that have either (present now or seen before).
    """
    sums, counts = class_sums(features.float(), labels, running.shape[0])
    present = counts > 0
    means = torch.where(present[:, None], sums / counts.clamp(min=1)[:, None], running.detach().float())
    return means, present | seen


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass.

    >>> x = torch.ones(2, requires_grad=True); scale_gradient(x, 0.25).sum().backward(); x.grad.tolist()
    [0.25, 0.25]
    """
    if scale == 1.0:
        return x
    return x * scale + x.detach() * (1.0 - scale)
