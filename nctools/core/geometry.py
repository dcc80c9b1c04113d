"""Pure functions on a set of class vectors: the NC2 / NC3 / ICPA geometry.

Every function takes float tensors of shape (k, d) (k class vectors: centred class means or
classifier rows) and returns a float64 tensor or a Python float. Conventions follow
docs/DEFINITIONS.md: pair statistics run over the k(k-1)/2 unordered pairs with the population std,
equinorm uses the unbiased std over classes, the ETF target cosine is -1/(k-1).

>>> import torch
>>> etf = simplex_etf(4, 6)
>>> round(cos_std(etf), 12), round(etf_error(etf), 12), round(max_angle(etf), 12)
(0.0, 0.0, 0.0)
>>> round(icpa_optimum_deg(10), 2)
96.38
"""
from __future__ import annotations

import math

import torch

from .pair_angles import PairAngles

__all__ = [
    "simplex_etf",
    "frame_summary",
    "duality_summary",
    "icpa_optimum_deg",
    "cosine_matrix",
    "icpa_degrees",
    "mean_pair_angle",
    "equinorm",
    "cos_std",
    "max_angle",
    "etf_error",
    "self_duality",
    "wh_etf_error",
    "duality_cosines",
    "squared_distances",
    "cdnv_mean",
]


def simplex_etf(num_classes: int, dim: int, *, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A (num_classes, dim) simplex equiangular tight frame with unit rows, randomly rotated.

    Needs ``dim >= num_classes - 1``.
    """
    if dim < num_classes - 1:
        raise ValueError(f"a simplex ETF of {num_classes} vectors needs dim >= {num_classes - 1}, got {dim}")
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=gen, dtype=torch.float64))
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    # Rows of centred are in the (C-1)-dim subspace orthogonal to ones; rotate them into R^dim.
    frame = centred @ basis[:, :num_classes].T if dim >= num_classes else _embed_low(centred, dim)
    return (frame / frame.norm(dim=1, keepdim=True)).to(dtype)


def _embed_low(centred: torch.Tensor, dim: int) -> torch.Tensor:
    # dim == C - 1: express the rows in an orthonormal basis of the sum-zero subspace.
    u, _, _ = torch.linalg.svd(centred)
    return centred @ u[:, :dim]


def icpa_optimum_deg(num_classes: int) -> float:
    """The simplex-ETF angle arccos(-1/(C-1)) in degrees (96.38 for C = 10)."""
    return math.degrees(math.acos(-1.0 / (num_classes - 1)))


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(k, k) cosines between rows; a zero row gives NaN in its row and column."""
    gram = _gram(vectors)
    norms = gram.diagonal().sqrt()
    # zero norm -> NaN, on purpose: an angle to a zero vector is undefined
    return (gram / norms.unsqueeze(0) / norms.unsqueeze(1)).clamp(-1.0, 1.0)


def _gram(vectors: torch.Tensor) -> torch.Tensor:
    v = vectors.double()
    return v @ v.T


# Rows per block where a (k, k) temporary would otherwise be made: at C = 8,142 each full
# float64 (k, k) matrix is 530 MB, so only the matrices that are results are held whole.
_BLOCK = 1024
_BLOCK_VALUES = 1 << 23  # and a block's float64 temporaries stay near 64 MB however many classes


def upper_blocks(square: torch.Tensor, index: torch.Tensor = None):
    """The unordered pairs (strict upper triangle) of a (k, k) matrix, or of its sub-matrix on
    ``index``, as flat tensors of at most ``_BLOCK`` rows' pairs each."""
    if index is None:
        index = torch.arange(square.shape[0], device=square.device)
    m = index.shape[0]
    for start in range(0, m - 1, _BLOCK):
        block = square[index[start:start + _BLOCK]][:, index]  # (b, m)
        yield block[torch.ones_like(block, dtype=torch.bool).triu_(start + 1)]


# Up to this many classes the angle matrix is float64; above it float32, half the memory (two of them
# are 3.2 GB at 20,000 classes instead of 6.4). Every summary number is still summed in float64.
FLOAT64_ANGLES_UP_TO = 4096


def rows_per_block(k: int) -> int:
    """Rows of a (k, k) matrix to take at once so that a block stays near 64 MB of float64."""
    return max(1, min(_BLOCK, _BLOCK_VALUES // max(k, 1)))


def _gram_norm(left: torch.Tensor, right: torch.Tensor) -> float:
    """||L R^T||_F from the (d, d) products: ||L R^T||_F^2 = tr(L^T L R^T R), no (k, k) matrix."""
    return math.sqrt(max(float(((left.T @ left) * (right.T @ right)).sum()), 0.0))


def _etf_gap_block(block: torch.Tensor, start: int, scale: float, k: int) -> float:
    """Rows ``start..`` of || G/||G||_F - (I - 11^T/k)/sqrt(k-1) ||_F^2 (``block`` is left as it was)."""
    c = 1.0 / math.sqrt(k - 1)
    block = block / scale + c / k  # G/g - T off the diagonal
    rows = torch.arange(block.shape[0], device=block.device)
    block[rows, rows + start] -= c  # and on it
    return _square_sum(block)


def _square_sum(t: torch.Tensor) -> float:
    """Sum of squares as one BLAS dot product: no squared copy of a block."""
    flat = t.reshape(-1)
    return float(torch.dot(flat, flat))


def frame_summary(vectors: torch.Tensor, keep_angles: bool = True) -> dict:
    """Every NC2 / ICPA number of one set of class vectors, from one pass over row blocks of the Gram matrix.

    Keys: ``equinorm``, ``cos_std``, ``max_angle``, ``etf_error``, ``icpa`` (the (k, k) angle
    matrix in degrees: float64 up to :data:`FLOAT64_ANGLES_UP_TO` classes, float32 above; with
    ``keep_angles=False`` a :class:`~nctools.core.pair_angles.PairAngles` that makes its rows when
    read), ``icpa_mean``, ``icpa_min``, ``nearest`` (per row, the angle to the nearest other row),
    ``norms``.

    No (k, k) temporary is made beside the angle matrix itself. The pair statistics are sums over
    the off-diagonal entries of each block (the matrix is symmetric, so half of them is the sum over
    unordered pairs) of the cosines shifted by the ETF target -1/(k-1): near an ETF those sums are
    small, and the variance keeps its digits.
    """
    v = vectors.double()
    k = v.shape[0]
    norms = v.square().sum(1).sqrt()
    target = -1.0 / (k - 1)
    # the float64 angle matrix holds the Gram matrix first, then its angles
    whole = keep_angles and k <= FLOAT64_ANGLES_UP_TO
    icpa = torch.empty(k, k, dtype=torch.float64 if whole else torch.float32, device=v.device) if keep_angles else None
    nearest = torch.empty(k, dtype=torch.float64, device=v.device)
    if whole:
        torch.mm(v, v.T, out=icpa)
    scale = float(icpa.norm()) if whole else _gram_norm(v, v)
    gap = shift = shift_sq = shift_abs = angle_sum = 0.0
    step = rows_per_block(k)
    for start in range(0, k, step):
        rows = torch.arange(min(step, k - start), device=v.device)
        gram = icpa[start:start + step] if whole else v[start:start + step] @ v.T  # (b, k)
        gap += _etf_gap_block(gram, start, scale, k)
        cos = gram.div_(norms[start:start + step].unsqueeze(1)).div_(norms.unsqueeze(0)).clamp_(-1.0, 1.0)
        cos[rows, rows + start] = target  # the diagonal adds nothing to the shifted sums
        dev = cos - target
        shift += float(dev.sum())
        shift_sq += _square_sum(dev)
        shift_abs += float(dev.abs_().sum())
        del dev
        angles = cos.arccos_().rad2deg_()  # (b, k), in place of the cosines
        angles[rows, rows + start] = math.inf
        nearest[start:start + step] = angles.amin(dim=1)
        angles[rows, rows + start] = 0.0
        angle_sum += float(angles.sum())
        if keep_angles and not whole:
            icpa[start:start + step] = angles
    pairs = k * (k - 1)  # ordered pairs: each unordered one is counted twice above
    mean_shift = shift / pairs
    return {
        "norms": norms,
        "equinorm": float(norms.std(correction=1) / norms.mean()),
        "cos_std": math.sqrt(max(shift_sq / pairs - mean_shift ** 2, 0.0)),
        "max_angle": shift_abs / pairs,
        "etf_error": math.sqrt(gap),
        "icpa": icpa if keep_angles else PairAngles(v),
        "icpa_mean": angle_sum / pairs,
        "icpa_min": float(nearest.min()) if k else math.inf,
        "nearest": nearest,
    }


def mean_pair_angle(vectors: torch.Tensor) -> float:
    """Mean angle in degrees over the unordered pairs of rows, a block of rows at a time: the ``icpa_mean``
    of :func:`frame_summary` without its (k, k) matrix (the few-shot classes' angle at 20,000 classes).

    >>> round(mean_pair_angle(simplex_etf(10, 16)), 2)
    96.38
    """
    v = vectors.double()
    k = v.shape[0]
    norms = v.square().sum(1).sqrt()
    step, total = rows_per_block(k), 0.0
    for start in range(0, k, step):
        cos = (v[start:start + step] @ v.T).div_(norms[start:start + step].unsqueeze(1)).div_(norms.unsqueeze(0))
        rows = torch.arange(cos.shape[0], device=v.device)
        cos.clamp_(-1.0, 1.0)[rows, rows + start] = 1.0  # angle 0 to itself
        total += float(cos.arccos_().rad2deg_().sum())
    return total / (k * (k - 1))


def icpa_degrees(vectors: torch.Tensor) -> torch.Tensor:
    """Inter-class pairwise angles in degrees, (k, k), zero on the diagonal."""
    return frame_summary(vectors)["icpa"]


def equinorm(vectors: torch.Tensor) -> float:
    """std / mean of the row norms (unbiased std): 0 when all classes have equal norms."""
    return frame_summary(vectors)["equinorm"]


def cos_std(vectors: torch.Tensor) -> float:
    """Population std of the pairwise cosines (equiangularity): 0 for an ETF."""
    return frame_summary(vectors)["cos_std"]


def max_angle(vectors: torch.Tensor) -> float:
    """Mean over pairs of |cos + 1/(k-1)|: 0 when every angle is the ETF angle."""
    return frame_summary(vectors)["max_angle"]


def etf_error(vectors: torch.Tensor) -> float:
    """|| G/||G||_F - (I - 11^T/k)/sqrt(k-1) ||_F with G the Gram matrix of the rows."""
    return frame_summary(vectors)["etf_error"]


def duality_summary(weight: torch.Tensor, centred_means: torch.Tensor) -> dict:
    """NC3 from the cross-Gram W M^T, a block of rows at a time (no (k, k) matrix): ``self_duality``
    (Papyan), ``wh_etf_error`` (Zhu et al.) and the per-class ``cosines`` cos(w_c, mu_c - mu_G)."""
    w, m = weight.double(), centred_means.double()
    k = w.shape[0]
    w_norms, m_norms = w.norm(dim=1), m.norm(dim=1)
    w_fro, m_fro = w_norms.norm(), m_norms.norm()
    cross = w @ m.T if k <= FLOAT64_ANGLES_UP_TO else None  # (k, k) while small; else row blocks of it
    scale = float(cross.norm()) if cross is not None else _gram_norm(w, m)
    step, gap = rows_per_block(k), 0.0
    for start in range(0, k, step):
        block = cross[start:start + step] if cross is not None else w[start:start + step] @ m.T
        gap += _etf_gap_block(block, start, scale, k)
    return {
        "self_duality": float((w / w_fro - m / m_fro).square().sum()),
        "wh_etf_error": math.sqrt(gap),
        "cosines": (w * m).sum(1) / (w_norms * m_norms),
    }


def self_duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Papyan's NC3: || W/||W||_F - M/||M||_F ||_F^2 (rows paired by class)."""
    return duality_summary(weight, centred_means)["self_duality"]


def wh_etf_error(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Zhu et al.'s NC3: || W M^T / ||W M^T||_F - (I - 11^T/k)/sqrt(k-1) ||_F."""
    return duality_summary(weight, centred_means)["wh_etf_error"]


def duality_cosines(weight: torch.Tensor, centred_means: torch.Tensor) -> torch.Tensor:
    """Per class cos(w_c, mu_c - mu_G), (k,)."""
    return duality_summary(weight, centred_means)["cosines"]


def distance_rows(v: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(len(rows), k) squared distances from the rows ``rows`` of ``v`` (k, d) to every row, in ``v``'s
    dtype (float64); ``sq`` holds each row's squared norm."""
    scale = sq[rows].unsqueeze(1) + sq.unsqueeze(0)
    block = torch.addmm(scale, v[rows], v.T, alpha=-2.0).clamp_min_(0.0)  # one pass: no temporaries
    # ||a||^2 + ||b||^2 - 2 a.b cancels for pairs much closer than their norms: recompute those
    # as ||a - b||^2 (relative error of the Gram form there > ~1e-13).
    i, j = torch.nonzero(block < scale.mul_(1e-3), as_tuple=True)
    block[i, j] = (v[rows[i]] - v[j]).square().sum(1)
    block[torch.arange(len(rows), device=v.device), rows] = 0.0
    return block


def squared_distances(vectors: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(k, k) squared distances between rows, computed in float64 (a block of rows at a time)
    and returned in ``dtype``."""
    v = vectors.double()
    sq = v.square().sum(1)
    out = torch.empty(v.shape[0], v.shape[0], dtype=dtype, device=v.device)
    for start in range(0, v.shape[0], _BLOCK):
        out[start:start + _BLOCK] = distance_rows(v, sq, torch.arange(start, min(start + _BLOCK, v.shape[0]),
                                                                      device=v.device))
    return out


def cdnv_mean(within_var: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Mean over unordered pairs of (V_c + V_c') / (2 ||mu_c - mu_c'||^2) (CDNV, Galanti et al. 2022)."""
    v = centred_means.double()
    k, sq, total = v.shape[0], v.square().sum(1), 0.0
    step = rows_per_block(k)  # a block's float64 temporaries near 64 MB each, however many classes
    for start in range(0, k, step):
        block = distance_rows(v, sq, torch.arange(start, min(start + step, k), device=v.device))
        ratio = (within_var[start:start + step].unsqueeze(1) + within_var.unsqueeze(0)) / (2.0 * block)
        upper = torch.ones_like(ratio, dtype=torch.bool).triu_(start + 1)  # the pairs c < c'
        total += float(ratio[upper].sum())
    return total / (k * (k - 1) / 2)
