"""Properties every NC measurement must have: the ETF optimum, invariances, streaming = one shot."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nctools
from nctools.core.geometry import simplex_etf
from tests.helpers.datagen import make_features, random_orthogonal

FAST = settings(max_examples=25, deadline=None)


def summaries_close(a, b, rtol=1e-9, atol=1e-10):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) or isinstance(y, float):
            assert x is not None and y is not None, key
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=atol), f"{key}: {x} vs {y}"
        else:
            assert x == y, key


@FAST
@given(c=st.integers(2, 12), extra_dim=st.integers(0, 6), scale=st.floats(0.1, 100.0),
       per_class=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_exact_simplex_etf_is_optimal(c, extra_dim, scale, per_class, seed):
    d = c - 1 + extra_dim
    means = scale * simplex_etf(c, d, seed=seed)
    labels = torch.arange(c).repeat(per_class)
    offset = torch.full((d,), 0.7, dtype=torch.float64)  # any offset: the bias cancels it in the logits
    result = nctools.analyze(means[labels] + offset, labels, weight=means, bias=-(means @ offset))
    s = result.summary
    for key in ("nc1", "nc1_trace_ratio", "nc1_cdnv", "nc2_cos_std_means", "nc2_cos_std_classifier",
                "nc2_maxangle_means", "nc2_maxangle_classifier", "nc2_etf_error_means",
                "nc2_etf_error_classifier", "nc3_self_duality", "nc3_wh_etf_error",
                "nc2_equinorm_means", "nc2_equinorm_classifier", "nc4_ncc_mismatch"):
        assert s[key] == pytest.approx(0.0, abs=1e-6), key
    assert s["nc3_cos_mean"] == pytest.approx(1.0)
    assert s["accuracy"] == 1.0
    optimum = math.degrees(math.acos(-1 / (c - 1)))
    off_diagonal = ~torch.eye(c, dtype=torch.bool)
    assert torch.allclose(result.icpa_means[off_diagonal], torch.tensor(optimum, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(result.icpa_classifier[off_diagonal], torch.tensor(optimum, dtype=torch.float64), atol=1e-5)


@FAST
@given(seed=st.integers(0, 10_000), center=st.sampled_from(["class", "sample"]))
def test_rotation_invariance(seed, center):
    feats, labels, w, b = make_features([12, 9, 5, 7, 3], 8, seed=seed)
    q = random_orthogonal(8, seed=seed + 1)
    base = nctools.analyze(feats, labels, w, b, center=center)
    turned = nctools.analyze(feats @ q, labels, w @ q, b, center=center)
    summaries_close(base.summary, turned.summary, rtol=1e-7, atol=1e-9)


@FAST
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_class_permutation_permutes_the_table(seed, perm_seed):
    feats, labels, w, b = make_features([12, 9, 5, 7, 3, 20], 8, seed=seed)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(perm_seed))  # class c -> perm[c]
    inverse = torch.argsort(perm)
    base = nctools.analyze(feats, labels, w, b)
    moved = nctools.analyze(feats, perm[labels], w[inverse], b[inverse])
    summaries_close(base.summary, moved.summary, rtol=1e-9)
    expected = base.per_class.drop(columns="class").iloc[inverse.numpy()].reset_index(drop=True)
    got = moved.per_class.drop(columns="class")
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)
    assert torch.allclose(moved.icpa_means, base.icpa_means[inverse][:, inverse], equal_nan=True)


@FAST
@given(chunk=st.integers(1, 200), seed=st.integers(0, 10_000), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_chunked_streaming_equals_one_shot(chunk, seed, dtype):
    feats, labels, w, b = make_features([40, 25, 10, 3], 6, seed=seed, dtype=dtype)
    one_shot = nctools.analyze(feats, labels, w, b, chunk_size=len(labels))
    chunked = nctools.analyze(feats, labels, w, b, chunk_size=chunk)
    summaries_close(one_shot.summary, chunked.summary, rtol=1e-6 if dtype == torch.float32 else 1e-10)


@FAST
@given(seed=st.integers(0, 10_000), cls=st.integers(0, 4), copies=st.integers(2, 6))
def test_nc1_balanced_ignores_how_often_a_class_is_sampled(seed, cls, copies):
    """Repeating every sample of one class changes its n_c but not its mean or covariance: with the
    class centre, Sigma_B and Sigma_W^bal stay, so nc1_balanced stays while the pooled nc1 moves."""
    feats, labels, _, _ = make_features([12, 9, 5, 7, 3], 6, seed=seed, classifier=False)
    mine = labels == cls
    more = torch.cat([feats] + [feats[mine]] * (copies - 1)), torch.cat([labels] + [labels[mine]] * (copies - 1))
    base, repeated = nctools.analyze(feats, labels).summary, nctools.analyze(*more).summary
    assert repeated["nc1_balanced"] == pytest.approx(base["nc1_balanced"], rel=1e-9)
    groups = (1e9, 1e9)  # every class few-shot: tail_nc1 is nc1_balanced
    assert nctools.analyze(*more, groups=groups).summary["tail_nc1"] == pytest.approx(base["nc1_balanced"], rel=1e-9)


def _two_pass(acc, parts):
    for h, y in parts:
        acc.update(h, y)


@FAST
@given(split=st.integers(1, 77), seed=st.integers(0, 10_000))
def test_merge_equals_concatenation(split, seed):
    feats, labels, w, b = make_features([30, 20, 15, 13], 5, seed=seed)
    whole = nctools.NeuralCollapse(4, w, b)
    whole.update(feats, labels)
    whole.next_pass()
    whole.update(feats, labels)
    left, right = (feats[:split], labels[:split]), (feats[split:], labels[split:])
    a = nctools.NeuralCollapse(4, w, b)
    b_acc = a.spawn()
    a.update(*left)
    b_acc.update(*right)
    a.merge(b_acc)
    a.next_pass()
    twin = a.spawn()
    a.update(*left)
    twin.update(*right)
    a.merge(twin)
    summaries_close(whole.compute().summary, a.compute().summary, rtol=1e-10)


def test_pass1_only_gives_the_geometry_and_says_what_is_missing():
    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    result = acc.compute()
    full = nctools.analyze(feats, labels, w, b)
    assert result.summary["nc1"] is None and result.summary["accuracy"] is None
    assert result.summary["nc2_cos_std_means"] == pytest.approx(full.summary["nc2_cos_std_means"])
    assert any("pass 2" in n for n in result.notes)


def test_reset_forgets_the_data():
    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats * 5, labels)
    acc.reset()
    for _ in range(2):
        acc.update(feats, labels)
        if acc.pass_index == 1:
            acc.next_pass()
    summaries_close(acc.compute().summary, nctools.analyze(feats, labels, w, b).summary)


def test_pass2_on_other_data_is_refused():
    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    acc.next_pass()
    acc.update(feats[:10], labels[:10])
    with pytest.raises(ValueError, match="pass 2 saw different data than pass 1"):
        acc.compute()


def test_json_round_trip_has_the_summary_keys():
    import json

    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    result = nctools.analyze(feats, labels, w, b)
    data = json.loads(result.to_json())
    assert tuple(data["summary"]) == nctools.SUMMARY_KEYS
    assert data["options"]["center"] == "class"
    assert len(data["per_class"]) == 4
    assert list(result.per_class.columns[:3]) == ["class", "count", "group"]
    assert isinstance(repr(result), str) and "nc1" in repr(result)
    assert np.isfinite(result.icpa_means.numpy()).all()


def test_memmap_features_equal_in_memory(tmp_path):
    feats, labels, w, b = make_features([30, 20, 15, 13], 5, dtype=torch.float32)
    mm = np.lib.format.open_memmap(tmp_path / "h.npy", mode="w+", dtype=np.float16, shape=tuple(feats.shape))
    mm[:] = feats.numpy()
    mm.flush()
    mapped = np.load(tmp_path / "h.npy", mmap_mode="r")
    from_disk = nctools.analyze(mapped, labels.numpy(), w, b, chunk_size=16)
    in_memory = nctools.analyze(torch.from_numpy(np.asarray(mapped)), labels, w, b)
    summaries_close(from_disk.summary, in_memory.summary, rtol=1e-6)


def test_functional_forms_match_analyze():
    from nctools import functional as F

    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    full = nctools.analyze(feats, labels, w, b)
    assert F.nc1(feats, labels) == pytest.approx(full.summary["nc1"], rel=1e-12)
    assert F.nc4(feats, labels, w, b) == full.summary["nc4_ncc_mismatch"]
    assert F.nc2(w)["cos_std"] == pytest.approx(full.summary["nc2_cos_std_classifier"], rel=1e-12)


def test_training_counts_drive_the_groups_of_a_test_set():
    feats, labels, w, b = make_features([10] * 6, 8)  # a balanced test set
    train_counts = torch.tensor([500, 150, 60, 25, 12, 5])
    result = nctools.analyze(feats, labels, w, b, class_counts=train_counts)
    table = result.per_class
    assert table["train_count"].tolist() == train_counts.tolist()
    assert table["group"].tolist() == ["many", "many", "medium", "medium", "few", "few"]
    assert result.audit.set_index("group").loc["few", "num_classes"] == 2
    assert result.summary["tail_icpa_mean_deg_classifier"] == pytest.approx(
        float(nctools.core.functional.icpa(w[4:])[0, 1]))
    custom = nctools.analyze(feats, labels, w, b, class_counts=train_counts, groups=(200, 30))
    assert custom.per_class["group"].tolist() == ["many", "medium", "medium", "few", "few", "few"]
    assert custom.options["groups"] == [200.0, 30.0]


def test_blocked_geometry_equals_dense():
    """More classes than one block (1,024 rows): the blocked (k, k) work equals dense formulas."""
    import math

    from nctools.core import geometry as geo

    gen = torch.Generator().manual_seed(7)
    v = torch.randn(1500, 8, generator=gen, dtype=torch.float64)
    k = v.shape[0]
    dense_d2 = (v.unsqueeze(0) - v.unsqueeze(1)).square().sum(-1)
    assert torch.allclose(geo.squared_distances(v), dense_d2, rtol=1e-10, atol=1e-12)
    var = torch.rand(k, generator=gen, dtype=torch.float64)
    iu = torch.triu_indices(k, k, 1)
    dense_cdnv = float(((var[iu[0]] + var[iu[1]]) / (2 * dense_d2[iu[0], iu[1]])).mean())
    assert math.isclose(geo.cdnv_mean(var, v), dense_cdnv, rel_tol=1e-10)
    gram = v @ v.T
    target = (torch.eye(k, dtype=torch.float64) - 1.0 / k) / math.sqrt(k - 1)
    frame = geo.frame_summary(v)
    assert math.isclose(frame["etf_error"], float((gram / gram.norm() - target).norm()), rel_tol=1e-10)
    cos = (gram / gram.diagonal().sqrt().outer(gram.diagonal().sqrt())).clamp(-1, 1)
    assert math.isclose(frame["cos_std"], float(cos[iu[0], iu[1]].std(correction=0)), rel_tol=1e-10)
    assert torch.allclose(frame["icpa"][iu[0], iu[1]], torch.rad2deg(torch.arccos(cos[iu[0], iu[1]])))
