"""Functional forms of the metrics, for one number at a time.

``nc1`` and ``nc4`` run the two streaming passes of :func:`nctools.analyze` with the same parts
(pass-1 sums, pass-2 residuals, the reducer: one implementation of the math), in the same chunks,
but keep only the state their one number needs and build no result tables: ``nc1(h, y)`` is
``analyze(h, y).summary["nc1"]``, ``nc1(h, y, balanced=True)`` is its ``"nc1_balanced"`` and
``nc4(h, y, W, b)`` is ``analyze(h, y, W, b).summary["nc4_ncc_mismatch"]``, bit for bit. ``nc2``,
``nc3`` and ``icpa`` are the geometry helpers. All return plain floats or tensors.

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

import numpy as np
import torch

from .analysis import auto_chunk_size, chunks
from .device import resolve_device
from .geometry import duality_summary, frame_summary, icpa_degrees
from .reducer import Entry, State, StateSpec
from .residuals import (
    Pass2Plan,
    add_residuals,
    compute_dtype_for,
    make_plan,
    mismatch_rate,
    nc1_balanced_value,
    nc1_value,
)
from .statistics import CENTERS
from .sums import PASS1, Scratch, chunk_sums, on_device
from .validation import CheckedInputs, check_finite, check_inputs

__all__ = ["nc1", "nc2", "nc3", "nc4", "icpa"]

# The one pass-2 sum each metric reads (the full state is residuals.pass2_spec).
_NC1_TERMS = StateSpec(Entry("nc1_terms"))
_MISMATCH = StateSpec(Entry("mismatch"))


@torch.no_grad()
def nc1(features, labels, *, center: str = "class", num_classes: int | None = None,
        device="auto", balanced: bool = False) -> float | None:
    """tr(Sigma_W Sigma_B^+) / C of features (N, d) with labels (N,); ``None`` where
    :func:`nctools.analyze` reports null (the class means coincide). With ``balanced=True``, the
    class-balanced form ``nc1_balanced``: Sigma_W replaced by the mean of the per-class covariances."""
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    checked = check_inputs(features, labels, num_classes=num_classes, finite=False)
    counts, second, plan = _two_passes(features, checked, _NC1_TERMS, center, device)
    return (nc1_balanced_value if balanced else nc1_value)(counts, second["nc1_terms"], plan)


@torch.no_grad()
def nc4(features, labels, weight, bias=None, *, device="auto") -> float:
    """Fraction of samples whose classifier prediction differs from the nearest class mean."""
    checked = check_inputs(features, labels, weight, bias, finite=False)
    for name, t in (("weight", checked.weight), ("bias", checked.bias)):
        if t is not None:
            check_finite(t, name)
    counts, second, plan = _two_passes(features, checked, _MISMATCH, "class", device)
    return mismatch_rate(counts, second["mismatch"], plan)


def _two_passes(features, checked: CheckedInputs, spec: StateSpec, center: str,
                device) -> tuple[torch.Tensor, State, Pass2Plan]:
    """:func:`nctools.analyze`'s two passes, in its chunks, keeping the pass-2 sums of ``spec``:
    the reduced pass-1 counts, the reduced pass-2 state and the plan."""
    dev = resolve_device(device)
    c, d = checked.num_classes, checked.features.shape[1]
    weight = None if checked.weight is None else checked.weight.detach().to(dev, torch.float64)
    bias = None if checked.bias is None else checked.bias.detach().to(dev, torch.float64)
    feats = features if isinstance(features, np.ndarray) else checked.features
    rows = auto_chunk_size(c, d)
    scratch, first, seen, dtype = Scratch(dev), PASS1.zeros(c, d, dev), 0, None
    for h, y in chunks(feats, checked.labels, rows):
        dtype = dtype or compute_dtype_for(h.dtype)
        h, y = on_device(h, y, dev)
        PASS1.merge_(first, chunk_sums(h, y, c, scratch, row_offset=seen))
        seen += h.shape[0]
    first = PASS1.all_reduce(first, dev)
    present = int((first["counts"] > 0).sum())
    if present < 2:
        raise ValueError(f"need samples of at least 2 classes, got {present}")
    plan = make_plan(first["counts"], first["sums"], weight, bias, center, dtype,
                     nearest="mismatch" in spec.names or "ncc_hits" in spec.names)
    second = spec.zeros(c, d, dev)
    for h, y in chunks(feats, checked.labels, rows):
        add_residuals(second, plan, *on_device(h, y, dev), scratch)
    return first["counts"], spec.all_reduce(second, dev), plan


def nc2(vectors: torch.Tensor) -> dict[str, object]:
    """NC2 of a set of class vectors (centred means or classifier rows), (k, d): ``equinorm``,
    ``cos_std``, ``max_angle``, ``etf_error``, ``icpa`` (degrees), ``icpa_mean``, ``icpa_min``,
    ``nearest`` (per vector, the angle to its nearest other one) and ``norms``."""
    return frame_summary(vectors)


def nc3(weight: torch.Tensor, centred_means: torch.Tensor) -> dict[str, object]:
    """NC3 of classifier rows against centred class means, both (k, d): ``self_duality``,
    ``wh_etf_error`` and the per-class ``cosines``."""
    return duality_summary(weight, centred_means)


def icpa(vectors: torch.Tensor) -> torch.Tensor:
    """(k, k) inter-class pairwise angles in degrees."""
    return icpa_degrees(vectors)
