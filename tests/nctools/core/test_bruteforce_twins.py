"""Every metric against its float64 brute-force twin, on balanced, imbalanced, near-collapsed and degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nctools
from nctools import functional
from nctools.core.keys import ETF_GAPS
from nctools.core.pair_angles import PairAngles
from tests.helpers.bruteforce import SUMMARY_TWINS, brute_force
from tests.helpers.datagen import as_numpy64, lt_counts, make_features


def assert_matches_twin(result, twin, rtol, atol=1e-12, skip=()):
    for key, twin_key in SUMMARY_TWINS.items():
        if key in skip or twin_key not in twin:
            continue
        ours, expected = result.summary[key], twin[twin_key]
        assert ours is not None, f"{key} is null: {result.notes}"
        # arccos is ill-conditioned near 0 and 180 degrees: angles are good to 1e-5 degrees there
        tol = max(atol, 1e-5) if key.startswith("icpa") else atol
        assert math.isclose(ours, expected, rel_tol=rtol, abs_tol=tol), f"{key}: {ours} vs {expected}"
    table = result.per_class.set_index("class")
    for c, v in twin["within_var"].items():
        assert math.isclose(table.loc[c, "within_var"], v, rel_tol=rtol, abs_tol=atol)
        assert table.loc[c, "count"] == twin["counts"][c]
    for c, v in twin["nc1_class"].items():
        assert math.isclose(table.loc[c, "nc1"], v, rel_tol=rtol, abs_tol=atol), (c, table.loc[c, "nc1"], v)
    if "tail_nc1" not in skip:  # null exactly when there is no few-shot class
        ours, expected = result.summary["tail_nc1"], twin["tail_nc1"]
        assert (ours is None) == (expected is None), f"tail_nc1: {ours} vs {expected}"
        if expected is not None:
            assert math.isclose(ours, expected, rel_tol=rtol, abs_tol=atol), f"tail_nc1: {ours} vs {expected}"
    for c, v in twin.get("ncc_accuracy", {}).items():
        assert table.loc[c, "ncc_accuracy"] == pytest.approx(v, abs=1e-12)
    for c, v in twin.get("duality_cos", {}).items():
        assert math.isclose(table.loc[c, "self_duality_cos"], v, rel_tol=rtol, abs_tol=atol)


def run_both(features, labels, weight, bias, center="class", num_classes=None, class_counts=None,
             groups=(100, 20), **kwargs):
    result = nctools.analyze(features, labels, weight, bias, center=center, num_classes=num_classes,
                             class_counts=class_counts, groups=groups, **kwargs)
    twin = brute_force(as_numpy64(features), labels.numpy(), as_numpy64(weight), as_numpy64(bias),
                       center=center, num_classes=num_classes, class_counts=class_counts, groups=groups)
    return result, twin


CASES = {
    "balanced": dict(counts=[40] * 6, dim=16),
    "imbalanced_cifar_lt_r100": dict(counts=lt_counts(500, 10, 100), dim=24),
    "random": dict(counts=[30, 17, 25, 9, 12, 40, 22], dim=12, spread=4.0),
    "offset": dict(counts=[50, 20, 10, 5], dim=8, offset=100.0),
}


@pytest.mark.parametrize("center", ["class", "sample"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_inputs_match_twin(case, center):
    spec = dict(CASES[case])
    feats, labels, w, b = make_features(spec.pop("counts"), spec.pop("dim"), **spec)
    result, twin = run_both(feats, labels, w, b, center=center)
    assert_matches_twin(result, twin, rtol=1e-9)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_inputs_match_twin(case):
    spec = dict(CASES[case])
    feats, labels, w, b = make_features(spec.pop("counts"), spec.pop("dim"), dtype=torch.float32, **spec)
    result, twin = run_both(feats, labels, w, b, chunk_size=37)
    assert_matches_twin(result, twin, rtol=1e-6, atol=1e-9)


MANY_CLASS_CASES = {
    **CASES,
    "absent_class": dict(counts=[30, 0, 25, 9, 12, 0, 22], dim=12, spread=4.0),
    "d_below_c_minus_1": dict(counts=lt_counts(40, 12, 20), dim=5, spread=2.0),
    "near_collapsed": dict(counts=[60, 30, 20, 12, 8], dim=32, spread=3e-4, offset=20.0),
}


@pytest.mark.parametrize("case", sorted(MANY_CLASS_CASES))
def test_the_many_class_path_matches_twin(case, monkeypatch):
    """What runs above 8,192 classes, forced at 3: pass 2 makes its look-up table rows per chunk and the
    angle matrices are made when read (PairAngles); every number still matches the float64 twin."""
    from nctools.core import residuals
    from nctools.core import result as result_module

    monkeypatch.setattr(residuals, "WHOLE_TABLES_UP_TO", 3)
    monkeypatch.setattr(result_module, "KEEP_ANGLES_UP_TO", 3)
    spec = dict(MANY_CLASS_CASES[case])
    counts = spec.pop("counts")
    feats, labels, w, b = make_features(counts, spec.pop("dim"), dtype=torch.float32, **spec)
    result, twin = run_both(feats, labels, w, b, num_classes=len(counts), chunk_size=37)
    assert isinstance(result.icpa_means, PairAngles)
    skip = ETF_GAPS if case == "d_below_c_minus_1" else ()
    assert_matches_twin(result, twin, rtol=1e-6, atol=1e-9, skip=skip)


def test_cifar_lt_sized_input_matches_twin():
    """The full CIFAR-10-LT (ratio 100) counts: 12,406 samples."""
    counts = lt_counts(5000, 10, 100)
    assert sum(counts) == 12406
    feats, labels, w, b = make_features(counts, 16, spread=1.0, dtype=torch.float32, seed=3)
    result, twin = run_both(feats, labels, w, b)
    assert_matches_twin(result, twin, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("center", ["class", "sample"])
def test_nearly_collapsed_float32_is_exact(center):
    """Within-class spread 1e-4 of the between-class spread: NC1 to 1e-6 relative of the float64
    two-pass brute force on the same float32 numbers (the one-pass E[hh^T] - mu mu^T form fails this)."""
    feats, labels, w, b = make_features([60, 30, 20, 12, 8], 32, spread=3e-4, offset=20.0,
                                        dtype=torch.float32, seed=5)
    result, twin = run_both(feats, labels, w, b, center=center, chunk_size=64)
    for key in ("nc1", "nc1_trace_ratio", "nc1_cdnv"):
        assert math.isclose(result.summary[key], twin[key], rel_tol=1e-6), (key, result.summary[key], twin[key])
    assert result.summary["nc1"] < 1e-6  # truly near collapse
    assert_matches_twin(result, twin, rtol=1e-6, atol=1e-9)


def test_textbook_one_pass_form_loses_the_digits():
    """Documents why the residuals are formed first: E[hh^T] - mu mu^T in float32 is far off here."""
    feats, labels, _, _ = make_features([60, 30, 20, 12, 8], 32, spread=3e-4, offset=20.0,
                                        dtype=torch.float32, seed=5, classifier=False)
    twin = brute_force(as_numpy64(feats), labels.numpy())
    naive = 0.0  # N tr(Sigma_W) from second moments, float32 as a GPU would do it
    for c in range(5):
        hc = feats[labels == c]
        mu = hc.mean(0)
        naive += float((hc.T @ hc / len(hc) - torch.outer(mu, mu)).trace()) * len(hc)
    exact = sum(twin["within_var"][c] * twin["counts"][c] for c in range(5))
    ours = nctools.analyze(feats, labels).summary["nc1_trace_ratio"]
    assert abs(naive - exact) / exact > 1e-2
    assert math.isclose(ours, twin["nc1_trace_ratio"], rel_tol=1e-6)


# --------------------------------------------------------------------------------- degenerate
def test_one_sample_per_class():
    feats, labels, w, b = make_features([1] * 5, 8)
    result, twin = run_both(feats, labels, w, b)
    assert result.summary["nc1"] == 0.0 and result.summary["nc1_cdnv"] == 0.0
    assert_matches_twin(result, twin, rtol=1e-9)


def test_empty_class_is_left_out_with_a_note():
    feats, labels, w, b = make_features([20, 0, 15, 9, 0, 11], 10)
    result, twin = run_both(feats, labels, w, b, num_classes=6)
    assert result.summary["num_classes"] == 4
    assert any("2 of 6 classes have no samples" in n for n in result.notes)
    assert result.per_class.shape[0] == 6
    assert math.isnan(result.per_class.loc[1, "mean_norm"])
    assert torch.isnan(result.icpa_means[1]).all() and not torch.isnan(result.icpa_means[0, 2])
    assert_matches_twin(result, twin, rtol=1e-9)


def test_two_classes():
    feats, labels, w, b = make_features([30, 7], 5)
    result, twin = run_both(feats, labels, w, b)
    assert result.summary["nc2_cos_std_means"] == pytest.approx(0.0, abs=1e-12)  # one pair
    assert result.summary["icpa_optimum_deg"] == pytest.approx(180.0)
    assert_matches_twin(result, twin, rtol=1e-9)


def test_dim_below_c_minus_1_nulls_the_etf_gaps():
    feats, labels, w, b = make_features([15] * 8, 3)
    result, twin = run_both(feats, labels, w, b)
    gaps = ("nc2_maxangle_means", "nc2_maxangle_classifier", "nc2_etf_error_means",
            "nc2_etf_error_classifier", "nc3_wh_etf_error")
    assert all(result.summary[k] is None for k in gaps)
    assert any("no simplex ETF fits" in n for n in result.notes)
    assert_matches_twin(result, twin, rtol=1e-9, skip=gaps)


def test_float16_features():
    feats, labels, w, b = make_features([25, 18, 9, 30], 12, dtype=torch.float16, spread=0.3)
    result, twin = run_both(feats, labels, w.float(), b.float())
    assert_matches_twin(result, twin, rtol=1e-5, atol=1e-7)


def test_bfloat16_and_numpy_inputs():
    feats, labels, w, b = make_features([25, 18, 9, 30], 12, dtype=torch.float32)
    from_numpy = nctools.analyze(feats.numpy(), labels.numpy(), w.numpy(), b.numpy())
    from_torch = nctools.analyze(feats, labels, w, b)
    assert from_numpy.summary == from_torch.summary
    bf16 = nctools.analyze(feats.bfloat16(), labels, w, b)
    twin = brute_force(as_numpy64(feats.bfloat16()), labels.numpy(), as_numpy64(w), as_numpy64(b))
    assert_matches_twin(bf16, twin, rtol=1e-5, atol=1e-7)


def test_without_classifier():
    feats, labels, _, _ = make_features([20, 10, 5], 6, classifier=False)
    result, twin = run_both(feats, labels, None, None)
    assert result.summary["accuracy"] is None and result.summary["nc3_self_duality"] is None
    assert any("no classifier" in n for n in result.notes)
    assert_matches_twin(result, twin, rtol=1e-9)


def test_ill_conditioned_means_keep_nc1_exact():
    """Means spread over very different scales: the pseudo-inverse must not amplify float32 error."""
    gen = torch.Generator().manual_seed(11)
    c, d = 6, 10
    scales = torch.tensor([1.0, 1.0, 1e-2, 1e-3, 1e-3, 1.0], dtype=torch.float64)
    means = torch.randn(c, d, generator=gen, dtype=torch.float64) * scales.unsqueeze(1)
    labels = torch.arange(c).repeat(30)
    feats = (means[labels] + 1e-4 * torch.randn(len(labels), d, generator=gen, dtype=torch.float64)).float()
    result, twin = run_both(feats, labels, None, None)
    assert math.isclose(result.summary["nc1"], twin["nc1"], rel_tol=1e-5)


def test_tail_keys_follow_groups():
    feats, labels, w, b = make_features(lt_counts(300, 8, 100), 12, dtype=torch.float32)
    result = nctools.analyze(feats, labels, w, b)
    audit = result.audit.set_index("group")
    assert set(audit.index) == {"many", "medium", "few"}
    assert result.summary["tail_icpa_mean_deg_means"] == pytest.approx(audit.loc["few", "icpa_mean_deg_means"])
    counts = np.array(lt_counts(300, 8, 100))
    tail = np.flatnonzero(counts < 20)
    rows = w.double()[tail]
    cos = torch.nn.functional.cosine_similarity(rows[:, None], rows[None], dim=-1)
    angles = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    iu = torch.triu_indices(len(tail), len(tail), 1)
    assert result.summary["tail_icpa_mean_deg_classifier"] == pytest.approx(float(angles[iu[0], iu[1]].mean()))
    no_tail = nctools.analyze(feats, labels, w, b, groups=(100, 1))
    assert no_tail.summary["tail_icpa_mean_deg_means"] is None
    assert any("tail" in n for n in no_tail.notes)


def test_svd_route_equals_gram_route(monkeypatch):
    """The pseudo-inverse's two routes (Gram eigen-decomposition, SVD of M~) agree."""
    import nctools.core.residuals as residuals

    feats, labels, w, b = make_features(lt_counts(200, 12, 50), 20, dtype=torch.float64, seed=8)
    gram = nctools.analyze(feats, labels, w, b)
    monkeypatch.setattr(residuals, "GRAM_EIGEN_FLOOR", float("inf"))
    svd = nctools.analyze(feats, labels, w, b)
    for key, value in gram.summary.items():
        if isinstance(value, float):
            assert math.isclose(svd.summary[key], value, rel_tol=1e-10, abs_tol=1e-12), key


@pytest.mark.parametrize("condition", [1e3, 1e5, 1e7])
def test_ill_conditioned_means_against_the_design_pseudo_inverse(condition):
    """Means whose singular values span `condition`: both pseudo-inverse routes and the float64
    scaling branch, float32 features, against the twin's SVD with the documented cutoff."""
    gen = torch.Generator().manual_seed(12)
    c, d = 7, 12
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    u, _ = torch.linalg.qr(torch.randn(c, c, generator=gen, dtype=torch.float64))
    u = u - u.mean(0)  # rows of centred means sum to zero
    s = torch.logspace(0, -np.log10(condition), c, dtype=torch.float64)
    means = 5.0 * (u * s) @ q[:c]
    labels = torch.arange(c).repeat(40)
    feats = (means[labels] + 1e-3 / condition * torch.randn(len(labels), d, generator=gen, dtype=torch.float64))
    result, twin = run_both(feats.float(), labels, None, None)
    assert math.isclose(result.summary["nc1"], twin["nc1"], rel_tol=1e-5), (result.summary["nc1"], twin["nc1"])


def test_nearly_merged_tail_means_keep_their_nearest_centre():
    """Two class means 3e-3 apart among means of norm ~40: the nearest-centre rule and NC4 must
    still separate them in float32 (the minority-collapse case the audit exists for)."""
    gen = torch.Generator().manual_seed(3)
    means = 10 * torch.randn(6, 16, generator=gen, dtype=torch.float64)
    step = torch.nn.functional.normalize(torch.randn(16, generator=gen, dtype=torch.float64), dim=0)
    means[5] = means[4] + 3e-3 * step
    labels = torch.arange(6).repeat_interleave(torch.tensor([40, 30, 20, 15, 12, 8]))
    feats = means[labels] + 1e-4 * torch.randn(len(labels), 16, generator=gen, dtype=torch.float64)
    w = means - means.mean(0) + 0.01 * torch.randn(6, 16, generator=gen, dtype=torch.float64)
    result, twin = run_both(feats.float(), labels, w.float(), None)
    assert list(result.per_class["ncc_accuracy"]) == [1.0] * 6
    assert_matches_twin(result, twin, rtol=1e-5, atol=1e-9)


def test_large_common_offset_keeps_the_argmax():
    """Features with a common offset far above their spread: the classifier's decisions are
    scored against the own class, so float32 rounding of the huge logits does not flip them."""
    feats, labels, w, b = make_features([400, 300, 200, 100], 16, spread=0.2, offset=2000.0, seed=9)
    result, twin = run_both(feats.float(), labels, (w * 0.01).float(), b.float())
    assert result.summary["accuracy"] == twin["accuracy"]
    assert result.summary["nc4_ncc_mismatch"] == twin["nc4_ncc_mismatch"]


def test_pass1_float32_sums_at_the_default_chunk_size():
    """Many rows of a class per chunk and weak separation (early training): the float32 partial
    sums of pass 1 must not drift (they are re-centred every few hundred rows per class)."""
    gen = torch.Generator().manual_seed(4)
    means = 3.0 + 1e-3 * torch.randn(2, 8, generator=gen, dtype=torch.float64)
    labels = torch.arange(2).repeat(10_000)
    feats = (means[labels] + torch.randn(20_000, 8, generator=gen, dtype=torch.float64)).float()
    result = nctools.analyze(feats, labels)  # default chunk size: all rows in one chunk
    twin = brute_force(as_numpy64(feats), labels.numpy())
    for key in ("nc1", "nc1_trace_ratio", "nc1_cdnv"):
        assert math.isclose(result.summary[key], twin[key], rel_tol=1e-6), (key, result.summary[key], twin[key])


def test_cdnv_of_nearly_coincident_means():
    gen = torch.Generator().manual_seed(5)
    means = 10 * torch.randn(4, 8, generator=gen, dtype=torch.float64)
    means[1] = means[0] + 1e-5 * torch.randn(8, generator=gen, dtype=torch.float64)
    labels = torch.arange(4).repeat(10)
    feats = means[labels] + 1e-7 * torch.randn(40, 8, generator=gen, dtype=torch.float64)
    result, twin = run_both(feats, labels, None, None)
    assert math.isclose(result.summary["nc1_cdnv"], twin["nc1_cdnv"], rel_tol=1e-9)


# ------------------------------------------------------------------ class-balanced and tail NC1
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("center", ["class", "sample"])
def test_balanced_data_gives_nc1_balanced_equal_to_nc1(dtype, center):
    """Equal class sizes: the mean of the per-class covariances is the pooled one, and the two keys
    are the same number, bit for bit, in any chunking."""
    for counts, dim, chunk in (([40] * 6, 16, None), ([25] * 9, 5, 7), ([1] * 5, 8, 2)):
        feats, labels, w, b = make_features(counts, dim, dtype=dtype, seed=len(counts))
        result = nctools.analyze(feats, labels, w, b, center=center, chunk_size=chunk)
        assert result.summary["nc1_balanced"] == result.summary["nc1"], counts
        assert functional.nc1(feats, labels, center=center, balanced=True) == functional.nc1(feats, labels,
                                                                                              center=center)


@pytest.mark.parametrize("case", sorted(CASES))
def test_nc1_balanced_and_tail_nc1_match_twin(case):
    spec = dict(CASES[case])
    feats, labels, w, b = make_features(spec.pop("counts"), spec.pop("dim"), **spec)
    result, twin = run_both(feats, labels, w, b)
    assert math.isclose(result.summary["nc1_balanced"], twin["nc1_balanced"], rel_tol=1e-9)
    assert (result.summary["tail_nc1"] is None) == (twin["tail_nc1"] is None) == (case == "balanced")
    table = result.per_class.set_index("class")
    assert result.summary["nc1_balanced"] == pytest.approx(table["nc1"].mean(), rel=1e-12)
    few = table[table["group"] == "few"]
    if len(few):
        assert result.summary["tail_nc1"] == pytest.approx(few["nc1"].mean(), rel=1e-12)
        assert result.audit.set_index("group").loc["few", "nc1"] == result.summary["tail_nc1"]


def test_head_dominated_sigma_w_hides_the_tail_but_nc1_balanced_does_not():
    """Collapsed head classes, spread-out tail classes: the pooled Sigma_W (and nc1) is the heads',
    the class-balanced one and tail_nc1 show the tail's spread; all three match the twin."""
    gen = torch.Generator().manual_seed(21)
    counts = [500, 400, 300, 12, 8, 5]
    means = 4.0 * torch.randn(6, 10, generator=gen, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(torch.tensor(counts))
    spread = torch.tensor([1e-3, 1e-3, 1e-3, 1.0, 1.0, 1.0], dtype=torch.float64)[labels].unsqueeze(1)
    feats = means[labels] + spread * torch.randn(len(labels), 10, generator=gen, dtype=torch.float64)
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-6)):
        result, twin = run_both(feats.to(dtype), labels, None, None, chunk_size=101)
        assert_matches_twin(result, twin, rtol=rtol, atol=1e-9)
        s = result.summary
        assert s["nc1"] < 0.05 * s["nc1_balanced"] and s["nc1_balanced"] < s["tail_nc1"]
        assert math.isclose(s["tail_nc1"], twin["tail_nc1"], rel_tol=rtol)


def test_tail_nc1_follows_training_counts_and_groups():
    """A balanced test set split by training counts: the few-shot group comes from class_counts."""
    feats, labels, w, b = make_features([10] * 6, 8, spread=0.8, seed=4)
    train_counts = torch.tensor([500, 150, 60, 25, 12, 5])
    result, twin = run_both(feats, labels, w, b, class_counts=train_counts)
    assert_matches_twin(result, twin, rtol=1e-9)
    table = result.per_class
    assert result.summary["tail_nc1"] == pytest.approx(table["nc1"][4:].mean(), rel=1e-12)
    assert result.summary["nc1_balanced"] == result.summary["nc1"]  # balanced test set
    one_few, twin_one = run_both(feats, labels, w, b, class_counts=train_counts, groups=(100, 6))
    assert_matches_twin(one_few, twin_one, rtol=1e-9)
    assert one_few.summary["tail_nc1"] == pytest.approx(table["nc1"][5], rel=1e-12)  # one class is enough
    assert one_few.summary["tail_icpa_mean_deg_means"] is None  # the angles need two
    none, twin_none = run_both(feats, labels, w, b, class_counts=train_counts, groups=(100, 5))
    assert twin_none["tail_nc1"] is None and none.summary["tail_nc1"] is None
    assert none.summary["tail_nc3_cos_mean"] is None
    assert any("no few-shot classes" in n and "tail_" in n for n in none.notes)
    assert_matches_twin(none, twin_none, rtol=1e-9)


def test_single_sample_classes_count_with_zero_covariance():
    """A class with one sample has covariance 0: it counts in C' for nc1_balanced and in the tail."""
    feats, labels, w, b = make_features([30, 25, 1, 1, 14], 6, seed=2)
    result, twin = run_both(feats, labels, w, b)
    assert_matches_twin(result, twin, rtol=1e-9)
    table = result.per_class.set_index("class")
    assert table.loc[2, "nc1"] == 0.0 and table.loc[3, "nc1"] == 0.0
    assert result.summary["nc1_balanced"] == pytest.approx(table["nc1"].sum() / 5, rel=1e-12)
    assert result.summary["tail_nc1"] == pytest.approx(table.loc[4, "nc1"] / 3, rel=1e-12)


def test_empty_and_few_classes_with_dim_below_c_minus_1():
    """Absent classes are left out of C' (and of the tail); d < C - 1 changes nothing for NC1."""
    feats, labels, w, b = make_features([40, 0, 30, 12, 0, 9, 15, 7, 22], 3, seed=6)
    result, twin = run_both(feats, labels, w, b, num_classes=9)
    gaps = ("nc2_maxangle_means", "nc2_maxangle_classifier", "nc2_etf_error_means",
            "nc2_etf_error_classifier", "nc3_wh_etf_error")
    assert_matches_twin(result, twin, rtol=1e-9, skip=gaps)
    assert math.isnan(result.per_class.loc[1, "nc1"])
    assert result.summary["nc1_balanced"] == pytest.approx(result.per_class["nc1"].mean(), rel=1e-12)  # NaN skipped


def test_coinciding_means_null_every_nc1_key():
    """Spread-out classes whose means are all exactly (1, 1, 1, 1): Sigma_B is zero."""
    v = torch.tensor([[0.5, 0.25, 0.0, 0.0], [0.125, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.75]])
    feats = 1.0 + torch.stack([v[0], -v[0], v[1], -v[1], v[2], -v[2]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    result = nctools.analyze(feats, labels)
    assert result.summary["nc1"] is None and result.summary["nc1_balanced"] is None
    assert result.summary["tail_nc1"] is None
    assert result.per_class["nc1"].isna().all() and result.audit["nc1"].isna().all()
    assert any("Sigma_B is zero" in n and "nc1_balanced" in n for n in result.notes)
    assert functional.nc1(feats, labels, balanced=True) is None


def test_pass1_only_leaves_the_nc1_keys_null():
    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    result = acc.compute()
    assert result.summary["nc1_balanced"] is None and result.summary["tail_nc1"] is None
    assert result.audit["nc1"].isna().all()


def test_merged_accumulators_give_the_one_shot_nc1_keys():
    """Chunks split over two accumulators in both passes, merged: the sums add, so the keys agree."""
    feats, labels, w, b = make_features(lt_counts(200, 8, 40), 12, seed=9)
    whole = nctools.analyze(feats, labels, w, b).summary
    a = nctools.NeuralCollapse(8, w, b)
    for _ in range(2):
        other = a.spawn()
        a.update(feats[::2], labels[::2])
        other.update(feats[1::2], labels[1::2])
        a.merge(other)
        if a.pass_index == 1:
            a.next_pass()
    merged = a.compute().summary
    twin = brute_force(as_numpy64(feats), labels.numpy(), as_numpy64(w), as_numpy64(b))
    for key in ("nc1_balanced", "tail_nc1"):
        assert merged[key] == pytest.approx(whole[key], rel=1e-10)
        assert merged[key] == pytest.approx(twin[key], rel=1e-9)
