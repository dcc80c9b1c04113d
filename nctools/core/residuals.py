"""Pass 2: each residual against the frozen class means, one matrix product per chunk.

Pass 2 measures each residual ``r = h - mu_y`` against the means frozen after pass 1
(docs/DEFINITIONS.md, "Conventions: Two passes"): ``r @ [V | W^T]`` gives the coordinates of ``r``
in the span ``V`` of the centred means, which is all that ``tr(Sigma_W Sigma_B^+)`` and the
nearest-class-centre rule need, and the logits (accuracy, NC4). Residuals are formed before any
product, so nearly collapsed features keep their digits (the textbook ``E[hh^T] - mu mu^T`` does
not).

:func:`make_plan` derives once, from the pass-1 sums, everything pass 2 needs; :func:`add_residuals`
adds one chunk's per-class sums into a pass-2 state (:func:`pass2_spec`), whichever entries it
holds; :func:`nc1_value` and :func:`mismatch_rate` read the reduced sums.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .geometry import squared_distances
from .reducer import Entry, State, StateSpec
from .sums import Scratch

__all__ = ["Pass2Plan", "make_plan", "pseudo_inverse_directions", "centre_of", "compute_dtype_for", "pass2_spec",
           "add_residuals", "exact_matmul", "nc1_value", "mismatch_rate", "GRAM_EIGEN_FLOOR"]

_F64 = torch.float64


@contextlib.contextmanager
def exact_matmul() -> Iterator[None]:
    """Keep TF32 out of float32 products on GPUs (it would cost about three digits)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def compute_dtype_for(features_dtype: torch.dtype) -> torch.dtype:
    """The dtype of pass 2's products: float64 for float64 features, float32 for any other."""
    return _F64 if features_dtype == _F64 else torch.float32


@dataclass
class Pass2Plan:
    """Everything pass 2 needs, derived once from the pass-1 sums (all on one device)."""

    present: torch.Tensor  # (C,) bool: classes with at least one sample
    present_ids: torch.Tensor  # (C',) class index of each present class
    index: torch.Tensor  # (C,) position among present classes, -1 if absent
    means: torch.Tensor  # (C', d) float64 class means
    center: torch.Tensor  # (d,) float64 global centre mu_G
    centred: torch.Tensor  # (C', d) float64, M~ = means - center
    basis: torch.Tensor  # (d, k) float64 right singular vectors of M~ kept for the pseudo-inverse
    singular: torch.Tensor  # (k,) float64 their singular values
    compute_dtype: torch.dtype
    means_c: torch.Tensor  # (C', d) means rounded to the compute dtype
    # One product r @ [V | W^T] per chunk: a single wide GEMM runs near the BLAS peak, two
    # narrower ones (measured on 2 cores) about 20% below it.
    projector: torch.Tensor  # (d, k + C), or (d, k) without a classifier, in the compute dtype
    # Decisions are scored against the sample's own class, so that float32 rounding scales with
    # the gaps between classes, not with the size of the features (two nearly merged tail means
    # stay apart; a large common offset cancels):
    logit_gap: torch.Tensor | None  # (C', C) (w_c - w_y).mu_y + b_c - b_y: logits - own logit at h = mu_y
    mean_dist_sq: torch.Tensor | None  # (C', C') ||mu_c - mu_y||^2 (None: no nearest-centre tables)
    to_scores: torch.Tensor | None  # (k, C') (U S)^T = V^T M~^T: projections -> dot products with M~
    inv_singular: torch.Tensor  # (k,) 1/s, float64 when the means are too ill-conditioned for float32
    # Pass 2 measures r = h - round(mu_y); these undo the rounding, per class and exactly, since
    # the class sum of round-off residuals is n_c (mu - round(mu)) (docs/DEFINITIONS.md: results
    # match the float64 brute force).
    delta_sq: torch.Tensor  # (C',) float64 ||mu - round(mu)||^2
    nc1_offset_sq: torch.Tensor  # (C',) float64 ||S^-1 V^T (mu - round(mu))||^2


# Eigenvalues of the Gram matrix M~ M~^T are exact to about eps64 * lambda_max, so the Gram route
# gives singular values to ~1e-10 relative while lambda_min >= 1e-6 lambda_max; past that the
# (slower) SVD of M~ itself resolves them.
GRAM_EIGEN_FLOOR = 1e-6


def pseudo_inverse_directions(centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right singular vectors V and values s of M~ kept for Sigma_B^+.

    docs/DEFINITIONS.md ("Pseudo-inverse"): at most C'-1 directions (the rank of centred means),
    dropping singular values below max(C', d) * eps64 * s_max.
    """
    c, d = centred.shape
    k_max = min(c - 1, d)
    # The smaller Gram matrix: M~ M~^T (C', C') gives U, then V = M~^T U S^-1; M~^T M~ (d, d)
    # gives V directly (iNaturalist: C' = 8,142 > d = 2,048).
    evals, evecs = torch.linalg.eigh(centred @ centred.T if c <= d else centred.T @ centred)  # ascending
    evals, evecs = evals.flip(0)[:k_max], evecs.flip(1)[:, :k_max]
    if k_max == 0 or evals[0] <= 0:
        return centred.new_zeros(d, 0), centred.new_zeros(0)
    if evals[-1] >= GRAM_EIGEN_FLOOR * evals[0]:
        s = evals.sqrt()
        return ((centred.T @ evecs) / s if c <= d else evecs.contiguous()), s
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    tol = max(c, d) * torch.finfo(_F64).eps * s[0]
    keep = int(min(k_max, int((s > tol).sum())))
    return vh[:keep].T.contiguous(), s[:keep].contiguous()


def centre_of(means: torch.Tensor, counts: torch.Tensor, center: str) -> torch.Tensor:
    """mu_G: the unweighted mean of class means (``class``) or the sample mean (``sample``)."""
    if center == "class":
        return means.mean(0)
    weights = counts.to(_F64) / counts.sum()
    return weights @ means


def make_plan(counts, sums, weight, bias, center: str, compute_dtype: torch.dtype, *,
              nearest: bool = True) -> Pass2Plan:
    """Freeze the class means of the pass-1 ``counts`` and ``sums`` (at least 2 classes present)
    and derive pass 2's tables; ``nearest=False`` leaves out the nearest-class-centre tables
    (``mean_dist_sq``, ``to_scores``: (C', C') and (k, C')) for a pass 2 that needs no decisions."""
    present = counts > 0
    present_ids = present.nonzero().squeeze(1)
    index = torch.full_like(counts, -1)
    index[present_ids] = torch.arange(len(present_ids), device=counts.device)
    means = sums[present_ids] / counts[present_ids].to(_F64).unsqueeze(1)
    mu_g = centre_of(means, counts[present_ids], center)
    centred = means - mu_g
    basis, singular = pseudo_inverse_directions(centred)
    means_c = means.to(compute_dtype)
    delta = means - means_c.to(_F64)  # (C', d) round-off of the means
    logit_gap = None
    if weight is not None:  # (C', C), a block of classes at a time (C'^2 float64 is 530 MB for iNat)
        logit_gap = torch.empty(len(present_ids), weight.shape[0], dtype=compute_dtype, device=means.device)
        for start in range(0, len(present_ids), 1024):
            rows = slice(start, start + 1024)
            logits = means_c[rows].to(_F64) @ weight.T + (0.0 if bias is None else bias)  # at the rounded means
            logit_gap[rows] = logits - logits.gather(1, present_ids[rows].unsqueeze(1))
    return Pass2Plan(
        present=present,
        present_ids=present_ids,
        index=index,
        means=means,
        center=mu_g,
        centred=centred,
        basis=basis,
        singular=singular,
        compute_dtype=compute_dtype,
        means_c=means_c,
        projector=(basis if weight is None else torch.cat([basis, weight.T], dim=1)).to(compute_dtype).contiguous(),
        logit_gap=logit_gap,
        mean_dist_sq=squared_distances(centred, dtype=compute_dtype) if nearest else None,
        to_scores=(centred @ basis).T.to(compute_dtype).contiguous() if nearest else None,
        inv_singular=(1.0 / singular).to(compute_dtype if _well_conditioned(singular) else _F64),
        delta_sq=delta.square().sum(1),
        nc1_offset_sq=((delta @ basis) / singular).square().sum(1),
    )


def _well_conditioned(singular: torch.Tensor) -> bool:
    # (p / s)^2 in float32 overflows or underflows only for condition numbers far past 1e6.
    return singular.numel() == 0 or bool(singular[-1] >= 1e-6 * singular[0])


def pass2_spec(classifier: bool) -> StateSpec:
    """The full pass-2 state: per class, sums of ``||r||^2`` (``resid_sq``), of the NC1 terms
    ``||S^-1 V^T r||^2`` (``nc1_terms``), nearest-centre hits, the sample count (checked against
    pass 1) and, with a classifier, its hits and its disagreements with the nearest centre."""
    entries = [Entry("resid_sq"), Entry("nc1_terms"), Entry("ncc_hits"), Entry("counts", torch.long)]
    if classifier:
        entries += [Entry("hits"), Entry("mismatch")]
    return StateSpec(*entries)


def add_residuals(state: State, plan: Pass2Plan, h: torch.Tensor, y: torch.Tensor, scratch: Scratch, *,
                  check: bool = True) -> None:
    """Add one chunk's pass-2 sums into ``state``, in place: each entry of :func:`pass2_spec`
    that ``state`` holds (a state of fewer entries skips the work of the others).

    ``h`` (n, d) and ``y`` (n,) int64 lie on the plan's device; with ``check``, a class that pass 1
    never saw raises ``ValueError``.
    """
    if plan.projector is None:
        raise RuntimeError("pass 2's tables were freed (free_buffers(tables=True)); call reset() to start again")
    yp = plan.index[y]  # position among present classes
    if check and bool((yp < 0).any()):
        raise ValueError("pass 2 saw a class that pass 1 never saw: both passes must see the same data")
    decisions = "ncc_hits" in state or "mismatch" in state
    logits = "hits" in state or "mismatch" in state
    with exact_matmul():
        hc = h.to(plan.compute_dtype)
        r = scratch.gather("r", plan.means_c, yp)
        torch.sub(hc, r, out=r)  # (n, d) residual to the rounded class mean
        k = plan.basis.shape[1]
        out = torch.mm(r, plan.projector, out=scratch.get("out", r.shape[0], plan.projector.shape[1], r.dtype))
        proj = out[:, :k]  # (n, k) V^T r
        if decisions:
            # ||h - mu_c||^2 = ||r||^2 + 2 r.(mu~_y - mu~_c) + ||mu_y - mu_c||^2, and r.mu~_c = (V^T r).(V^T mu~_c):
            # minus a per-sample constant, the score is ||mu_y - mu_c||^2 - 2 (V^T r).(V^T mu~_c).
            scores = scratch.gather("scores", plan.mean_dist_sq, yp).addmm_(proj, plan.to_scores, alpha=-2.0)
            nearest = scores.argmin(1)
        add = lambda name, values: state[name].index_add_(0, y, values.to(_F64))  # noqa: E731
        if "counts" in state:
            state["counts"] += torch.bincount(y, minlength=plan.index.shape[0])
        # Sums of positive terms: float32 loses no digits that matter here.
        if "resid_sq" in state:
            add("resid_sq", torch.linalg.vector_norm(r, dim=1).square())
        if "nc1_terms" in state:  # scales proj in place: after the scores, which read it
            scaled = proj.mul_(plan.inv_singular) if proj.dtype == plan.inv_singular.dtype else proj * plan.inv_singular
            add("nc1_terms", torch.linalg.vector_norm(scaled, dim=1).square())
        if "ncc_hits" in state:
            add("ncc_hits", nearest == yp)
        if logits:
            # W h + b minus the sample's own-class logit (a per-sample constant): W r + gap[y].
            predicted = out[:, k:].add_(scratch.gather("logits", plan.logit_gap, yp)).argmax(1)
            if "hits" in state:
                add("hits", predicted == y)
            if "mismatch" in state:
                add("mismatch", predicted != plan.present_ids[nearest])


def nc1_value(counts: torch.Tensor, nc1_terms: torch.Tensor, plan: Pass2Plan) -> float | None:
    """``nc1`` = tr(Sigma_W Sigma_B^+) / C from the reduced pass-1 ``counts`` and pass-2 ``nc1_terms``,
    as :class:`~nctools.NCResult` reports it: ``None`` when the class means coincide or it is not finite."""
    ids = plan.present_ids
    n = counts[ids].to(_F64)
    terms = nc1_terms[ids] - n * plan.nc1_offset_sq  # undo the rounding of the means
    if not plan.singular.numel():
        return None
    value = float(terms.sum() / n.sum())
    return value if math.isfinite(value) else None


def mismatch_rate(counts: torch.Tensor, mismatch: torch.Tensor, plan: Pass2Plan) -> float:
    """``nc4_ncc_mismatch`` from the reduced pass-1 ``counts`` and pass-2 ``mismatch`` sums."""
    ids = plan.present_ids
    return float(mismatch[ids].sum() / counts[ids].to(_F64).sum())
