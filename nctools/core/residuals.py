"""Pass 2: each residual against the frozen class means, one matrix product per chunk.

Pass 2 measures each residual ``r = h - mu_y`` against the means frozen after pass 1
(docs/DEFINITIONS.md, "Conventions: Two passes"): ``r @ [V | W^T]`` gives the coordinates of ``r``
in the span ``V`` of the centred means, which is all that ``tr(Sigma_W Sigma_B^+)`` and the
nearest-class-centre rule need, and the logits (accuracy, NC4). Residuals are formed before any
product, so nearly collapsed features keep their digits (the textbook ``E[hh^T] - mu mu^T`` does
not).

:func:`make_plan` derives once, from the pass-1 sums, everything pass 2 needs; :func:`add_residuals`
adds one chunk's per-class sums into a pass-2 state (:func:`pass2_spec`), whichever entries it
holds; :func:`nc1_value`, :func:`nc1_balanced_value`, :func:`nc1_per_class` and :func:`mismatch_rate`
read the reduced sums, and :func:`check_same_data` compares a per-class checksum of the residuals
with what pass 1 summed.

Features far from 1 in size (1e20, or 1e-25, in float32) would overflow or underflow the squares
of pass 2's float32 products; the plan then measures residuals in units of a power of two near the
class means' size (:func:`power_of_two_scale`): scaling by a power of two is exact, so the decisions
and sums are those of the unscaled numbers, and inputs of ordinary size are not scaled at all.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .geometry import distance_rows
from .reducer import Entry, State, StateSpec
from .sums import Scratch

__all__ = ["Pass2Plan", "make_plan", "pseudo_inverse_directions", "centre_of", "compute_dtype_for", "pass2_spec",
           "add_residuals", "exact_matmul", "nc1_value", "nc1_balanced_value", "nc1_per_class", "mismatch_rate",
           "check_same_data", "power_of_two_scale", "GRAM_EIGEN_FLOOR"]

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
    # Pass 2 works on scale * h (a power of two, 1 for features of ordinary size) and on classifier
    # rows times weight_scale: exact, and it keeps float32 squares and logits in range.
    scale: float
    weight_scale: float
    means_c: torch.Tensor  # (C', d) scale * means, rounded to the compute dtype
    # One product r @ [V | W^T] per chunk: a single wide GEMM runs near the BLAS peak, two
    # narrower ones (measured on 2 cores) about 20% below it.
    projector: torch.Tensor  # (d, k + C), or (d, k) without a classifier, in the compute dtype
    # Decisions are scored against the sample's own class, so that float32 rounding scales with
    # the gaps between classes, not with the size of the features (two nearly merged tail means
    # stay apart; a large common offset cancels). These three tables are in the scaled units:
    # Above WHOLE_TABLES_UP_TO classes the first two are TableRows: the rows a chunk's labels need.
    logit_gap: torch.Tensor | TableRows | None  # (C', C) (w_c - w_y).mu_y + b_c - b_y: logits - own logit at h = mu_y
    mean_dist_sq: torch.Tensor | TableRows | None  # (C', C') ||mu_c - mu_y||^2 (None: no nearest-centre tables)
    to_scores: torch.Tensor | None  # (k, C') (U S)^T = V^T M~^T: projections -> dot products with M~
    inv_singular: torch.Tensor  # (k,) 1/s, float64 when the means are too ill-conditioned for float32
    # Pass 2 measures r = h - round(mu_y); these undo the rounding, per class and exactly, since
    # the class sum of round-off residuals is n_c (mu - round(mu)) (docs/DEFINITIONS.md: results
    # match the float64 brute force).
    delta_sq: torch.Tensor  # (C',) float64 ||mu - round(mu)||^2
    nc1_offset_sq: torch.Tensor  # (C',) float64 ||S^-1 V^T (mu - round(mu))||^2
    delta_sum: torch.Tensor  # (C',) float64 sum_j (mu - round(mu))_j: a class's checksum is n_c times it


# Above this many present classes pass 2 does not hold its (C', C') and (C', C) look-up tables (float32:
# 1.6 GB each at 20,000 classes, 10 GB at 50,000) but makes, per chunk, the rows its labels need.
WHOLE_TABLES_UP_TO = 8192


@dataclass(frozen=True)
class TableRows:
    """A look-up table of pass 2 made a few rows at a time: for each chunk, the rows of its labels (the
    same values as the whole table's rows)."""

    make: Callable[[torch.Tensor], torch.Tensor]  # positions among the present classes (u,) -> rows (u, width)

    def gather(self, positions: torch.Tensor) -> torch.Tensor:
        """``table[positions]``, each distinct row made once."""
        distinct, inverse = torch.unique(positions, return_inverse=True)
        return self.make(distinct)[inverse]


def _table(make: Callable[[torch.Tensor], torch.Tensor], count: int, width: int, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor | TableRows:
    """The (count, width) table whose rows ``make`` gives: whole, filled 1024 rows at a time (a float64
    block of C'^2 is 530 MB at iNaturalist's size), or above WHOLE_TABLES_UP_TO rows a TableRows."""
    if count > WHOLE_TABLES_UP_TO:
        return TableRows(make)
    table = torch.empty(count, width, dtype=dtype, device=device)
    for start in range(0, count, 1024):
        table[start:start + 1024] = make(torch.arange(start, min(start + 1024, count), device=device))
    return table


def _table_rows(scratch: Scratch, name: str, table: torch.Tensor | TableRows, positions: torch.Tensor) -> torch.Tensor:
    """Rows ``positions`` of a pass-2 table, in the scratch tensor ``name`` when the table is whole."""
    return table.gather(positions) if isinstance(table, TableRows) else scratch.gather(name, table, positions)


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


def power_of_two_scale(values: torch.Tensor, compute_dtype: torch.dtype) -> float:
    """1 when the largest magnitude in ``values`` lies within 2^-e ... 2^e, e a quarter of the compute
    dtype's exponent range (2^+-32 for float32: squares, sums of squares and logits stay far from
    overflow and underflow); else the power of two that brings it into [0.5, 1).

    >>> power_of_two_scale(torch.tensor([3.0, -1e3]), torch.float32)
    1.0
    >>> power_of_two_scale(torch.tensor([1e20]), torch.float32) == 2.0 ** -67
    True
    """
    size = float(values.abs().max()) if values.numel() else 0.0
    if size == 0.0 or not math.isfinite(size):
        return 1.0
    exponent = math.frexp(size)[1]  # size in [2^(exponent-1), 2^exponent)
    limit = math.frexp(torch.finfo(compute_dtype).max)[1] // 4
    return 1.0 if -limit <= exponent <= limit else math.ldexp(1.0, -exponent)


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
    # Powers of two: every scaled number below is the unscaled one times the factor, exactly.
    scale = power_of_two_scale(means, compute_dtype)
    weight_scale = 1.0 if weight is None else power_of_two_scale(weight, compute_dtype)
    centred_s = centred if scale == 1.0 else centred * scale
    basis, singular_s = pseudo_inverse_directions(centred_s)
    singular = singular_s if scale == 1.0 else singular_s / scale
    means_c = (means if scale == 1.0 else means * scale).to(compute_dtype)
    rounded = means_c.to(_F64) if scale == 1.0 else means_c.to(_F64) / scale  # round(mu), unscaled
    delta = means - rounded  # (C', d) round-off of the means
    count, device = len(present_ids), means.device
    logit_gap = mean_dist_sq = None
    if weight is not None:
        def gap_rows(rows: torch.Tensor) -> torch.Tensor:
            # logits at the rounded means
            logits = rounded[rows] @ weight.T if bias is None else torch.addmm(bias, rounded[rows], weight.T)
            gap = logits.sub_(logits.gather(1, present_ids[rows].unsqueeze(1)))
            return (gap if scale * weight_scale == 1.0 else gap * (scale * weight_scale)).to(compute_dtype)

        logit_gap = _table(gap_rows, count, weight.shape[0], compute_dtype, device)
    if nearest:
        norms_sq = centred_s.square().sum(1)
        mean_dist_sq = _table(lambda rows: distance_rows(centred_s, norms_sq, rows).to(compute_dtype),
                              count, count, compute_dtype, device)
    rows_t = None if weight is None else weight.T if weight_scale == 1.0 else weight.T * weight_scale
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
        scale=scale,
        weight_scale=weight_scale,
        means_c=means_c,
        projector=(basis if weight is None else torch.cat([basis, rows_t], dim=1)).to(compute_dtype).contiguous(),
        logit_gap=logit_gap,
        mean_dist_sq=mean_dist_sq,
        to_scores=(centred_s @ basis).T.to(compute_dtype).contiguous() if nearest else None,
        inv_singular=(1.0 / singular_s).to(compute_dtype if _well_conditioned(singular_s) else _F64),
        delta_sq=delta.square().sum(1),
        nc1_offset_sq=((delta @ basis) / singular).square().sum(1),
        delta_sum=delta.sum(1),
    )


def _well_conditioned(singular: torch.Tensor) -> bool:
    # (p / s)^2 in float32 overflows or underflows only for condition numbers far past 1e6.
    return singular.numel() == 0 or bool(singular[-1] >= 1e-6 * singular[0])


def pass2_spec(classifier: bool) -> StateSpec:
    """The full pass-2 state: per class, sums of ``||r||^2`` (``resid_sq``), of the NC1 terms
    ``||S^-1 V^T r||^2`` (``nc1_terms``), nearest-centre hits, the sample count and the sum of
    every entry of the residuals (``checksum``; both checked against pass 1,
    :func:`check_same_data`) and, with a classifier, its hits and its disagreements with the
    nearest centre."""
    entries = [Entry("resid_sq"), Entry("nc1_terms"), Entry("ncc_hits"), Entry("counts", torch.long),
               Entry("checksum")]
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
        if plan.scale != 1.0:  # exact: a power of two (h may be the caller's tensor: not in place)
            hc = torch.mul(hc, plan.scale, out=scratch.get("scaled", hc.shape[0], hc.shape[1], hc.dtype))
        r = scratch.gather("r", plan.means_c, yp)
        torch.sub(hc, r, out=r)  # (n, d) residual to the rounded class mean (times plan.scale)
        k = plan.basis.shape[1]
        out = torch.mm(r, plan.projector, out=scratch.get("out", r.shape[0], plan.projector.shape[1], r.dtype))
        proj = out[:, :k]  # (n, k) V^T r
        if decisions:
            # ||h - mu_c||^2 = ||r||^2 + 2 r.(mu~_y - mu~_c) + ||mu_y - mu_c||^2, and r.mu~_c = (V^T r).(V^T mu~_c):
            # minus a per-sample constant, the score is ||mu_y - mu_c||^2 - 2 (V^T r).(V^T mu~_c).
            scores = _table_rows(scratch, "scores", plan.mean_dist_sq, yp).addmm_(proj, plan.to_scores, alpha=-2.0)
            nearest = scores.argmin(1)
        add = lambda name, values: state[name].index_add_(0, y, values.to(_F64))  # noqa: E731
        unscaled = lambda values, power: values.to(_F64).mul_(1.0 / plan.scale ** power)  # noqa: E731 - exact
        if "counts" in state:
            state["counts"] += torch.bincount(y, minlength=plan.index.shape[0])
        if "checksum" in state:  # O(n d) float32 adds: a cheap fingerprint of the data, per class
            total = r.sum(1)
            add("checksum", total if plan.scale == 1.0 else unscaled(total, 1))
        # Sums of positive terms: float32 loses no digits that matter here.
        if "resid_sq" in state:
            norms_sq = torch.linalg.vector_norm(r, dim=1).square()
            add("resid_sq", norms_sq if plan.scale == 1.0 else unscaled(norms_sq, 2))
        if "nc1_terms" in state:  # scales proj in place: after the scores, which read it
            scaled = proj.mul_(plan.inv_singular) if proj.dtype == plan.inv_singular.dtype else proj * plan.inv_singular
            add("nc1_terms", torch.linalg.vector_norm(scaled, dim=1).square())
        if "ncc_hits" in state:
            add("ncc_hits", nearest == yp)
        if logits:
            # W h + b minus the sample's own-class logit (a per-sample constant): W r + gap[y].
            predicted = out[:, k:].add_(_table_rows(scratch, "logits", plan.logit_gap, yp)).argmax(1)
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


def nc1_per_class(counts: torch.Tensor, nc1_terms: torch.Tensor, plan: Pass2Plan) -> torch.Tensor | None:
    """(C',) float64 ``tr(Sigma_W^(c) Sigma_B^+) / C`` of each present class, with ``Sigma_W^(c)`` the
    class's own covariance (normalised by ``n_c``): the ``nc1`` column of the per-class table. ``None``
    when the class means coincide (``Sigma_B`` is zero)."""
    if not plan.singular.numel():
        return None
    n = counts[plan.present_ids].to(_F64)
    return (nc1_terms[plan.present_ids] - n * plan.nc1_offset_sq) / n  # undo the rounding of the means


def nc1_balanced_value(counts: torch.Tensor, nc1_terms: torch.Tensor, plan: Pass2Plan) -> float | None:
    """``nc1_balanced`` = tr(Sigma_W^bal Sigma_B^+) / C, ``Sigma_W^bal`` the mean of the per-class covariances
    over the present classes: the mean of :func:`nc1_per_class`. ``None`` where :func:`nc1_value` is."""
    ids = plan.present_ids
    n = counts[ids].to(_F64)
    terms = nc1_terms[ids] - n * plan.nc1_offset_sq  # undo the rounding of the means
    if not plan.singular.numel():
        return None
    # (1/C') sum_c terms_c / n_c written as nc1_value's sum with class weights N / (C' n_c): exact integers
    # divided once, so the weights are exactly 1 on balanced data and the two values are the same bits.
    total = n.sum()
    value = float((terms * (total / (len(ids) * n))).sum() / total)
    return value if math.isfinite(value) else None


def mismatch_rate(counts: torch.Tensor, mismatch: torch.Tensor, plan: Pass2Plan) -> float:
    """``nc4_ncc_mismatch`` from the reduced pass-1 ``counts`` and pass-2 ``mismatch`` sums."""
    ids = plan.present_ids
    return float(mismatch[ids].sum() / counts[ids].to(_F64).sum())


def check_same_data(counts: torch.Tensor, second: dict[str, torch.Tensor], plan: Pass2Plan) -> None:
    """Raise ``ValueError`` when the reduced pass-2 sums ``second`` (with ``checksum`` and
    ``resid_sq``) cannot come from the samples whose reduced pass-1 ``counts`` made ``plan``.

    A class's ``checksum`` (the sum of every entry of its residuals ``h - round(mu)``) must equal
    ``n_c`` times the sum of the entries of ``mu - round(mu)``, up to round-off: a bound of the
    rounding of the residuals and of their float32 sums (from ``sum |r| <= sqrt(n d sum ||r||^2)``)
    and of the float64 sums of both passes. Different samples of the same class sizes (a random
    augmentation, another split, shuffled labels) move it by about ``sqrt(n_c d)`` times the spread.
    """
    ids = plan.present_ids
    n = counts[ids].to(_F64)
    d = plan.means.shape[1]
    got, resid_sq = second["checksum"][ids], second["resid_sq"][ids]
    unit, unit64 = torch.finfo(plan.compute_dtype).eps / 2, torch.finfo(_F64).eps / 2
    spread = (n * d * resid_sq).sqrt()  # >= sum over the class of |r_ij|
    size = (2 * n * d * (resid_sq + n * plan.means.square().sum(1))).sqrt()  # >= sum of |h_ij|
    tol = 4 * ((math.log2(d) + 4) * unit * spread + (n + d) * unit64 * size)
    bad = ((got - n * plan.delta_sum).abs() > tol).nonzero()  # NaN (unchecked NaN features) is not flagged
    if len(bad):
        raise ValueError(
            f"pass 2 saw different data than pass 1: the features of class {int(ids[bad[0, 0]])} do not add up "
            "to what pass 1 summed; give both passes the same samples (no random augmentation)"
        )
