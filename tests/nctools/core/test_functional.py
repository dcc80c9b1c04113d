"""The functional forms nc1 / nc4 run only the parts their one number needs, and give exactly the
numbers of nctools.analyze (same chunks, same sums, same float64 arithmetic)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nctools
from nctools import functional as F
from nctools.core.rows import RowSource
from tests.helpers.datagen import lt_counts, make_features
from tests.helpers.launch import run_processes


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    """These tests compare two routes bit for bit, which holds for one BLAS: on a CUDA machine,
    device="auto" would take the GPU, whose GEMMs of other widths reduce in another order."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

CASES = {
    "balanced float64": dict(counts=[30] * 5, dim=8, dtype=torch.float64),
    "imbalanced float32": dict(counts=lt_counts(300, 12, 50), dim=20, dtype=torch.float32),
    "imbalanced float16": dict(counts=lt_counts(200, 6, 20), dim=10, dtype=torch.float16),
    "more classes than dims": dict(counts=[15] * 24, dim=6, dtype=torch.float32),
    "nearly collapsed float32": dict(counts=[60, 30, 20, 12, 8], dim=32, dtype=torch.float32,
                                     spread=3e-4, offset=20.0),
}


def _data(case, seed=3):
    kw = dict(CASES[case])
    return make_features(kw.pop("counts"), kw.pop("dim"), seed=seed, **kw)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("center", ["class", "sample"])
def test_nc1_equals_analyze_exactly(case, center):
    feats, labels, _, _ = _data(case)
    assert F.nc1(feats, labels, center=center) == nctools.analyze(feats, labels, center=center).summary["nc1"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("center", ["class", "sample"])
def test_balanced_nc1_equals_analyze_exactly(case, center):
    feats, labels, _, _ = _data(case)
    want = nctools.analyze(feats, labels, center=center).summary
    assert F.nc1(feats, labels, center=center, balanced=True) == want["nc1_balanced"]
    assert (want["nc1_balanced"] == want["nc1"]) == case.startswith(("balanced", "more classes"))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_bias", [True, False])
def test_nc4_equals_analyze_exactly(case, with_bias):
    feats, labels, w, b = _data(case)
    b = b if with_bias else None
    assert F.nc4(feats, labels, w, b) == nctools.analyze(feats, labels, w, b).summary["nc4_ncc_mismatch"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_absent_class_is_left_out_as_analyze_does(dtype):
    feats, labels, w, b = make_features(lt_counts(200, 7, 30), 12, dtype=dtype, seed=5)
    keep = labels != 2
    feats, labels = feats[keep], labels[keep]
    means_only = nctools.analyze(feats, labels, num_classes=7).summary
    assert means_only["num_classes"] == 6
    assert F.nc1(feats, labels, num_classes=7) == means_only["nc1"]
    assert F.nc4(feats, labels, w, b) == nctools.analyze(feats, labels, w, b).summary["nc4_ncc_mismatch"]


def test_inputs_analyze_takes_give_the_same_numbers():
    """numpy arrays (big-endian, unsigned labels), memory maps read by the chunk, parameters that
    require grad, and features on disk behind the RowSource interface."""
    feats, labels, w, b = _data("imbalanced float32")
    want1 = nctools.analyze(feats, labels).summary["nc1"]
    want4 = nctools.analyze(feats, labels, w, b).summary["nc4_ncc_mismatch"]
    big_endian, unsigned = feats.numpy().astype(">f4"), labels.numpy().astype(np.uint32)
    assert F.nc1(big_endian, unsigned) == want1
    assert F.nc4(big_endian, unsigned, w.numpy(), b.numpy()) == want4
    assert F.nc4(feats.requires_grad_(), labels, w.requires_grad_(), b) == want4

    class Rows(RowSource):
        shape, dtype = tuple(feats.shape), feats.dtype

        def read(self, start, stop):
            return feats[start:stop].detach()

    assert F.nc1(Rows(), labels) == want1


def test_coinciding_means_give_none_like_analyze():
    labels = torch.arange(3).repeat(5)
    feats = torch.ones(15, 4)
    assert nctools.analyze(feats, labels).summary["nc1"] is None
    assert F.nc1(feats, labels) is None
    assert nctools.analyze(feats, labels).summary["nc1_balanced"] is None
    assert F.nc1(feats, labels, balanced=True) is None


@pytest.mark.parametrize("call,error,message", [
    (lambda f, y, w: F.nc1(f, y, center="median"), ValueError, "center must be one of"),
    (lambda f, y, w: F.nc1(f[:, 0], y), ValueError, "features must be 2-D"),
    (lambda f, y, w: F.nc1(f, y[:-1]), ValueError, "inconsistent numbers of samples"),
    (lambda f, y, w: F.nc1(f, y, num_classes=2), ValueError, r"labels must lie in \[0, 2\)"),
    (lambda f, y, w: F.nc1(f, y * 0, num_classes=3), ValueError, "need samples of at least 2 classes, got 1"),
    (lambda f, y, w: F.nc1(f, y, device="gpu"), ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (lambda f, y, w: F.nc4(f, y, w[:, :4]), ValueError, "weight has 4 columns but the features have dim 5"),
    (lambda f, y, w: F.nc4(f, y, w * float("nan")), ValueError, "weight must be finite"),
])
def test_bad_input_is_refused_like_analyze(call, error, message):
    feats, labels, w, _ = make_features([20, 12, 8], 5, dtype=torch.float32)
    with pytest.raises(error, match=message):
        call(feats, labels, w)


@pytest.mark.parametrize("metric", ["nc1", "nc4"])
def test_nan_in_a_later_chunk_names_the_row(metric):
    feats, labels, w, b = make_features([12000, 10000], 3, dtype=torch.float32)
    assert nctools.core.analysis.auto_chunk_size(2, 3) < 20000  # in the second chunk
    feats[20000, 1] = float("nan")
    args = (feats, labels) if metric == "nc1" else (feats, labels, w, b)
    with pytest.raises(ValueError, match=r"1 entry is NaN or Inf \(first: features\[20000, 1\] = nan\)"):
        getattr(F, metric)(*args)


def _worker(rank: int, world: int) -> dict:
    feats, labels, w, b = _data("imbalanced float32")
    mine = slice(rank, None, world)
    return {"nc1": F.nc1(feats[mine], labels[mine], num_classes=12), "nc4": F.nc4(feats[mine], labels[mine], w, b)}


def test_two_gloo_processes_reduce_the_sums(tmp_path):
    merged = run_processes(_worker, tmp_path=tmp_path)
    feats, labels, w, b = _data("imbalanced float32")
    full = nctools.analyze(feats, labels, w, b).summary
    # float32 products run on other chunk shapes in the two runs: equal to float32 rounding.
    assert merged["nc1"] == pytest.approx(full["nc1"], rel=1e-6)
    assert merged["nc4"] == full["nc4_ncc_mismatch"]
