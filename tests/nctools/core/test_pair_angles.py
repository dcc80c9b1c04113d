"""Angle matrices made when read (many classes): PairAngles against a float64 brute force, and a result
built with them against the same result built with whole matrices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nctools
from nctools.core import result as result_module
from nctools.core.geometry import frame_summary, simplex_etf
from nctools.core.pair_angles import PairAngles
from nctools.report.many_classes import pair_cosine_counts, pooled
from nctools.report.writer import analysis_figures
from tests.helpers.datagen import lt_counts, make_features


def _brute_angles(vectors: np.ndarray) -> np.ndarray:
    """Angle in degrees of every pair of rows, one pair at a time; 0 on the diagonal, NaN for NaN rows."""
    k = len(vectors)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            a, b = vectors[i], vectors[j]
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                out[i, j] = math.nan
            elif i != j:
                cos = float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))
                out[i, j] = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    return out


def _vectors(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if kind == "random":
        return torch.randn(9, 5, generator=g, dtype=torch.float64)
    if kind == "near_collapsed":  # pairs 1e-5 apart: the arccos near 0 is where digits go
        base = torch.randn(3, 6, generator=g, dtype=torch.float64)
        return base.repeat_interleave(3, 0) + 1e-5 * torch.randn(9, 6, generator=g, dtype=torch.float64)
    if kind == "etf":
        return simplex_etf(7, 12)
    if kind == "absent":  # classes with no samples are NaN rows, d < C - 1
        v = torch.randn(8, 3, generator=g, dtype=torch.float64)
        v[[2, 5]] = math.nan
        return v
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["random", "near_collapsed", "etf", "absent"])
def test_pair_angles_match_brute_force(kind):
    v = _vectors(kind)
    expected = _brute_angles(v.numpy())
    angles = PairAngles(v)
    np.testing.assert_allclose(angles.full().numpy(), expected, atol=1e-6, rtol=0, equal_nan=True)
    assert angles.shape == expected.shape and len(angles) == len(expected)


def test_every_index_form_reads_the_same_entries():
    v = _vectors("absent")
    expected = _brute_angles(v.numpy())
    angles = PairAngles(v)
    rows, cols = np.array([4, 0, 7]), np.array([1, 3])
    mask = np.zeros(8, dtype=bool)
    mask[[1, 6]] = True
    cases = [
        (angles[3], expected[3]),
        (angles[-1], expected[-1]),
        (angles[1:6:2], expected[1:6:2]),
        (angles[rows], expected[rows]),
        (angles[torch.as_tensor(rows)], expected[rows]),
        (angles[list(rows)], expected[rows]),
        (angles[mask], expected[mask]),
        (angles[rows, cols], expected[rows][:, cols]),
        (angles[rows][:, cols], expected[rows][:, cols]),
        (np.asarray(angles), expected),
    ]
    for got, want in cases:
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, equal_nan=True)
    with pytest.raises(IndexError, match="rows"):
        angles[0, 1, 2]
    with pytest.raises(ValueError, match=r"\(C, d\)"):
        PairAngles(torch.ones(3))
    assert "GiB" in repr(angles)


@pytest.mark.parametrize("kind", ["random", "near_collapsed", "etf"])
def test_frame_summary_without_the_matrix_is_the_same(kind):
    v = _vectors(kind)
    whole, lazy = frame_summary(v), frame_summary(v, keep_angles=False)
    assert isinstance(lazy["icpa"], PairAngles)
    for key in ("equinorm", "cos_std", "max_angle", "etf_error", "icpa_mean", "icpa_min"):
        # one code path; only the ETF gap's scale ||G||_F is taken from the (d, d) products instead of G
        assert lazy[key] == pytest.approx(whole[key], rel=1e-12, abs=1e-15), key
    brute = _brute_angles(v.numpy())
    np.fill_diagonal(brute, np.inf)
    np.testing.assert_allclose(lazy["nearest"].numpy(), brute.min(1), atol=1e-6, rtol=0)
    np.testing.assert_allclose(lazy["icpa"].full().numpy(), whole["icpa"].numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("absent", [False, True])
def test_a_result_made_with_pair_angles_equals_the_whole_one(monkeypatch, absent):
    """The summary, per-class table, audit and verdict do not depend on whether the angle matrices are
    held whole (few classes) or made when read (many classes, here forced at 12)."""
    counts = lt_counts(40, 12, 20)
    if absent:
        counts[4] = 0
    h, y, w, b = make_features(counts, 8)
    kw = dict(num_classes=12, device="cpu")
    whole = nctools.analyze(h, y, w, b, **kw)
    monkeypatch.setattr(result_module, "KEEP_ANGLES_UP_TO", 3)
    lazy = nctools.analyze(h, y, w, b, **kw)
    assert isinstance(lazy.icpa_means, PairAngles) and isinstance(lazy.icpa_classifier, PairAngles)
    assert lazy.verdict == whole.verdict and lazy.notes == whole.notes
    for key, value in whole.summary.items():
        if isinstance(value, float):
            assert lazy.summary[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert lazy.summary[key] == value, key
    np.testing.assert_allclose(lazy.per_class.select_dtypes("number").to_numpy(dtype=float),
                               whole.per_class.select_dtypes("number").to_numpy(dtype=float), atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(lazy.audit.select_dtypes("number").to_numpy(dtype=float),
                               whole.audit.select_dtypes("number").to_numpy(dtype=float), atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(lazy.icpa_means.full().numpy(), whole.icpa_means.numpy(), atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(lazy.icpa_classifier.full().numpy(), whole.icpa_classifier.numpy(), atol=1e-5)
    figures = analysis_figures(lazy)  # the report reads PairAngles like the matrices
    assert set(figures) == {"icpa", "per_class", "cosines"}
    order = np.random.default_rng(0).permutation(12)  # the pooled heatmaps and the histogram, block by block
    np.testing.assert_allclose(pooled(lazy.icpa_means, order, cells=5), pooled(whole.icpa_means, order, cells=5),
                               atol=1e-6)
    bins = np.linspace(-1, 1, 41)
    np.testing.assert_array_equal(pair_cosine_counts(lazy.icpa_classifier, bins),
                                  pair_cosine_counts(whole.icpa_classifier, bins))
