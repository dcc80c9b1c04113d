"""Functional forms of the metrics, for one number at a time.

Each function runs the same two-pass accumulator as :func:`nctools.analyze` (one implementation
of the math), or the same geometry helpers, and returns plain floats or tensors.

>>> import torch
>>> from nctools.core.geometry import simplex_etf
>>> means = simplex_etf(4, 6)
>>> labels = torch.arange(4).repeat(3)
>>> round(nc1(means[labels], labels), 12), nc4(means[labels], labels, means)
(0.0, 0.0)
>>> round(nc2(means)["cos_std"], 12), round(nc3(means, means)["self_duality"], 12)
(0.0, 0.0)
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .analysis import analyze
from .geometry import duality_summary, frame_summary, icpa_degrees

__all__ = ["nc1", "nc2", "nc3", "nc4", "icpa"]


def nc1(features, labels, *, center: str = "class", num_classes: Optional[int] = None, device="auto") -> float:
    """tr(Sigma_W Sigma_B^+) / C of features (N, d) with labels (N,)."""
    return analyze(features, labels, center=center, num_classes=num_classes, device=device).summary["nc1"]


def nc4(features, labels, weight, bias=None, *, device="auto") -> float:
    """Fraction of samples whose classifier prediction differs from the nearest class mean."""
    return analyze(features, labels, weight, bias, device=device).summary["nc4_ncc_mismatch"]


def nc2(vectors: torch.Tensor) -> Dict[str, object]:
    """NC2 of a set of class vectors (centred means or classifier rows), (k, d): ``equinorm``,
    ``cos_std``, ``max_angle``, ``etf_error``, ``icpa`` (degrees), ``icpa_mean``, ``icpa_min``."""
    return frame_summary(vectors)


def nc3(weight: torch.Tensor, centred_means: torch.Tensor) -> Dict[str, object]:
    """NC3 of classifier rows against centred class means, both (k, d): ``self_duality``,
    ``wh_etf_error`` and the per-class ``cosines``."""
    return duality_summary(weight, centred_means)


def icpa(vectors: torch.Tensor) -> torch.Tensor:
    """(k, k) inter-class pairwise angles in degrees."""
    return icpa_degrees(vectors)
