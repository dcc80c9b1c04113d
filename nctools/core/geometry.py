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

__all__ = [
    "simplex_etf",
    "frame_summary",
    "duality_summary",
    "icpa_optimum_deg",
    "cosine_matrix",
    "icpa_degrees",
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


def upper_blocks(square: torch.Tensor, index: torch.Tensor = None):
    """The unordered pairs (strict upper triangle) of a (k, k) matrix, or of its sub-matrix on
    ``index``, as flat tensors of at most ``_BLOCK`` rows' pairs each."""
    if index is None:
        index = torch.arange(square.shape[0], device=square.device)
    m = index.shape[0]
    for start in range(0, m - 1, _BLOCK):
        block = square[index[start:start + _BLOCK]][:, index]  # (b, m)
        yield block[torch.ones_like(block, dtype=torch.bool).triu_(start + 1)]


def frame_summary(vectors: torch.Tensor) -> dict:
    """Every NC2 / ICPA number of one set of class vectors from a single Gram matrix.

    Keys: ``equinorm``, ``cos_std``, ``max_angle``, ``etf_error``, ``icpa`` (the (k, k) angle
    matrix in degrees), ``icpa_mean``, ``icpa_min``, ``norms``.
    """
    gram = _gram(vectors)
    k = gram.shape[0]
    norms = gram.diagonal().sqrt()
    etf = _etf_gap(gram)
    # From here on the Gram matrix is turned, in place, into the cosines and then the angles;
    # the pair statistics are sums over blocks of the upper triangle (no k^2/2 copies).
    cos = gram.div_(norms.unsqueeze(1)).div_(norms.unsqueeze(0)).clamp_(-1.0, 1.0)
    pairs = k * (k - 1) / 2
    mean_cos = sum(float(b.sum()) for b in upper_blocks(cos)) / pairs
    cos_std = math.sqrt(sum(float((b - mean_cos).square().sum()) for b in upper_blocks(cos)) / pairs)
    max_angle = sum(float((b + 1.0 / (k - 1)).abs().sum()) for b in upper_blocks(cos)) / pairs
    icpa = cos.arccos_().rad2deg_().fill_diagonal_(0.0)
    return {
        "norms": norms,
        "equinorm": float(norms.std(correction=1) / norms.mean()),
        "cos_std": cos_std,
        "max_angle": max_angle,
        "etf_error": etf,
        "icpa": icpa,
        "icpa_mean": sum(float(b.sum()) for b in upper_blocks(icpa)) / pairs,
        "icpa_min": min(float(b.min()) for b in upper_blocks(icpa)),
    }


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


def _etf_gap(gram: torch.Tensor) -> float:
    """|| G/||G||_F - T ||_F with T = (I - 11^T/k)/sqrt(k-1), a block of rows at a time."""
    k = gram.shape[0]
    scale, c = float(gram.norm()), 1.0 / math.sqrt(k - 1)
    total = 0.0
    for start in range(0, k, _BLOCK):
        block = gram[start:start + _BLOCK] / scale + c / k  # G/g - T off the diagonal
        rows = torch.arange(block.shape[0], device=gram.device)
        block[rows, rows + start] -= c  # and on it
        total += float(block.square().sum())
    return math.sqrt(total)


def etf_error(vectors: torch.Tensor) -> float:
    """|| G/||G||_F - (I - 11^T/k)/sqrt(k-1) ||_F with G the Gram matrix of the rows."""
    return frame_summary(vectors)["etf_error"]


def duality_summary(weight: torch.Tensor, centred_means: torch.Tensor) -> dict:
    """NC3 from the one cross-Gram W M^T: ``self_duality`` (Papyan), ``wh_etf_error`` (Zhu et
    al.) and the per-class ``cosines`` cos(w_c, mu_c - mu_G)."""
    w, m = weight.double(), centred_means.double()
    cross = w @ m.T  # (k, k), dropped on return
    w_norms, m_norms = w.norm(dim=1), m.norm(dim=1)
    w_fro, m_fro = w_norms.norm(), m_norms.norm()
    return {
        "self_duality": float((w / w_fro - m / m_fro).square().sum()),
        "wh_etf_error": _etf_gap(cross),
        "cosines": cross.diagonal() / (w_norms * m_norms),
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


def _distance_block(v: torch.Tensor, sq: torch.Tensor, start: int) -> torch.Tensor:
    """Squared distances from rows start.. of v (a block) to every row, float64."""
    rows = slice(start, start + _BLOCK)
    scale = sq[rows].unsqueeze(1) + sq.unsqueeze(0)
    block = (scale - 2.0 * (v[rows] @ v.T)).clamp_min_(0.0)
    # ||a||^2 + ||b||^2 - 2 a.b cancels for pairs much closer than their norms: recompute those
    # as ||a - b||^2 (relative error of the Gram form there > ~1e-13).
    i, j = torch.nonzero(block < 1e-3 * scale, as_tuple=True)
    block[i, j] = (v[i + start] - v[j]).square().sum(1)
    diag = torch.arange(block.shape[0], device=v.device)
    block[diag, diag + start] = 0.0
    return block


def squared_distances(vectors: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(k, k) squared distances between rows, computed in float64 (a block of rows at a time)
    and returned in ``dtype``."""
    v = vectors.double()
    sq = v.square().sum(1)
    out = torch.empty(v.shape[0], v.shape[0], dtype=dtype, device=v.device)
    for start in range(0, v.shape[0], _BLOCK):
        out[start:start + _BLOCK] = _distance_block(v, sq, start)
    return out


def cdnv_mean(within_var: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Mean over unordered pairs of (V_c + V_c') / (2 ||mu_c - mu_c'||^2) (CDNV, Galanti et al. 2022)."""
    v = centred_means.double()
    k, sq, total = v.shape[0], v.square().sum(1), 0.0
    for start in range(0, k, _BLOCK):
        block = _distance_block(v, sq, start)
        ratio = (within_var[start:start + _BLOCK].unsqueeze(1) + within_var.unsqueeze(0)) / (2.0 * block)
        upper = torch.ones_like(ratio, dtype=torch.bool).triu_(start + 1)  # the pairs c < c'
        total += float(ratio[upper].sum())
    return total / (k * (k - 1) / 2)
