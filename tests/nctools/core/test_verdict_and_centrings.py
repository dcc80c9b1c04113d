"""The verdict on minority collapse (withheld when the data cannot carry one) and the summary keys under
the sample-weighted centre, against float64 twins and our own committed runs."""
from __future__ import annotations

import math

import pytest
import torch

import nctools
from nctools.core.audit import STATUSES, TERMINAL_ACCURACY, TERMINAL_NC1
from nctools.core.geometry import simplex_etf
from tests.helpers.bruteforce import brute_force
from tests.helpers.datagen import as_numpy64, lt_counts, make_features
from tests.helpers.paths import REPO

DUMPS = REPO / "docs" / "results" / "v1" / "dumps"


def _analyze_dump(name: str, **kw):
    dump = nctools.load_dump(DUMPS / f"{name}.safetensors")
    return nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, class_counts=dump.class_counts, **kw)


# --------------------------------------------------------------------------- the _sample_center keys


@pytest.mark.parametrize("center", ["class", "sample"])
@pytest.mark.parametrize("counts", [lt_counts(500, 10, 100), [60, 40, 30, 12, 9, 5, 3]])
def test_sample_center_keys_match_the_twin_under_that_centre(center, counts):
    feats, labels, w, b = make_features(counts, 12, spread=0.8, seed=7)
    result = nctools.analyze(feats, labels, w, b, center=center)
    twin = brute_force(as_numpy64(feats), labels.numpy(), as_numpy64(w), as_numpy64(b), center="sample")
    s = result.summary
    assert math.isclose(s["nc3_self_duality_sample_center"], twin["nc3_self_duality"], rel_tol=1e-9)
    assert math.isclose(s["tail_icpa_mean_deg_means_sample_center"], twin["tail_means_icpa_mean"], rel_tol=1e-9)
    assert math.isclose(s["tail_nc3_cos_mean_sample_center"], twin["tail_nc3_cos_mean"], rel_tol=1e-9)
    own = brute_force(as_numpy64(feats), labels.numpy(), as_numpy64(w), as_numpy64(b), center=center)
    assert math.isclose(s["tail_icpa_mean_deg_means"], own["tail_means_icpa_mean"], rel_tol=1e-9)
    if center == "sample":  # the same centre twice: the same numbers
        assert s["nc3_self_duality_sample_center"] == pytest.approx(s["nc3_self_duality"], rel=1e-12)


def test_sample_center_keys_are_null_without_few_shot_pairs_or_classifier():
    feats, labels, w, b = make_features([40] * 5, 8, seed=1)
    s = nctools.analyze(feats, labels, w, b).summary
    assert s["tail_icpa_mean_deg_means_sample_center"] is None and s["tail_nc3_cos_mean_sample_center"] is None
    assert s["nc3_self_duality_sample_center"] is not None  # NC3 needs no groups
    s = nctools.analyze(*make_features([50, 30, 10, 5, 3], 8, seed=2)[:2]).summary
    assert s["nc3_self_duality_sample_center"] is None and s["tail_icpa_mean_deg_means_sample_center"] is not None


# --------------------------------------------------------------------------- the verdict


def test_our_ce_lt_runs_show_complete_minority_collapse_and_allnc_does_not():
    for seed in (0, 1):
        ce = _analyze_dump(f"cifar10_ce_b100_s{seed}")
        assert ce.verdict["status"] == "complete_minority_collapse", ce.verdict
        allnc = _analyze_dump(f"cifar10_allnc_b100_s{seed}")
        assert allnc.verdict["status"] == "no_minority_collapse", allnc.verdict
    etf = _analyze_dump("cifar10_etf_b100_s0")  # a fixed simplex ETF cannot squeeze its rows; the means can
    assert etf.verdict["status"] == "feature_minority_collapse"


def test_a_random_model_is_withheld_with_its_reasons():
    g = torch.Generator().manual_seed(0)  # features and classifier that know nothing of the classes
    labels = torch.arange(10).repeat_interleave(torch.tensor(lt_counts(200, 10, 50)))
    feats = torch.randn(len(labels), 16, dtype=torch.float64, generator=g)
    result = nctools.analyze(feats, labels, torch.randn(10, 16, dtype=torch.float64, generator=g))
    assert result.verdict["status"] == "withheld"
    text = " ".join(result.verdict["reasons"])
    assert f"below {TERMINAL_ACCURACY}" in text and f"above {TERMINAL_NC1:g}" in text


def test_withheld_without_few_shot_classes_and_for_a_split_without_training_counts():
    means = 4 * simplex_etf(6, 8, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(torch.tensor([80, 40, 25, 15, 10, 5]))
    noise = torch.randn(len(labels), 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    feats = means[labels] + 0.05 * noise
    judged = nctools.analyze(feats, labels, means)
    assert judged.verdict["status"] == "no_minority_collapse"
    for per_class in (30, 10):  # balanced data: one group, "balanced", whatever the thresholds would call it
        balanced = torch.arange(6).repeat_interleave(per_class)
        none = nctools.analyze(means[balanced], balanced, means)
        assert none.verdict["status"] == "withheld"
        assert none.verdict["reasons"][0].startswith(f"the classes are balanced ({per_class} training samples each)")
        assert set(none.per_class["group"]) == {"balanced"} and none.summary["tail_nc1"] is None
    no_tail = torch.arange(6).repeat_interleave(torch.tensor([300, 200, 150, 40, 30, 25]))
    assert "fewer than two few-shot classes" in nctools.analyze(means[no_tail], no_tail, means).verdict["reasons"][0]
    small = torch.arange(6).repeat_interleave(torch.tensor([12, 10, 9, 8, 6, 5]))  # every class below 20
    all_few = nctools.analyze(means[small], small, means)
    assert all_few.verdict["status"] == "withheld" and "every class is few-shot" in all_few.verdict["reasons"][0]
    test_split = nctools.analyze(feats, labels, means, split="test")
    assert test_split.verdict["status"] == "withheld"
    assert "--class-counts" in test_split.verdict["reasons"][0]
    given = nctools.analyze(feats, labels, means, split="test", class_counts=[500, 300, 100, 15, 10, 5])
    assert given.verdict["status"] == "no_minority_collapse"


def test_the_squeeze_threshold_is_an_option_and_every_status_is_known():
    ce = _analyze_dump("cifar10_ce_b100_s0")  # few-shot means 80.7, rows 81.2 degrees; optimum 96.4
    assert ce.verdict["status"] in STATUSES
    loose = _analyze_dump("cifar10_ce_b100_s0", squeeze_deg=16.0)
    assert loose.verdict["status"] == "no_minority_collapse" and loose.options["squeeze_deg"] == 16.0
    with pytest.raises(ValueError, match="squeeze_deg"):
        _analyze_dump("cifar10_ce_b100_s0", squeeze_deg=-1)


def test_the_verdict_says_when_the_two_centrings_disagree():
    result = _analyze_dump("cifar10_allnc_no_gbbn_b100_s1")  # few-shot means 93.2 (class centre), 75.4 (sample)
    assert result.verdict["status"] == "no_minority_collapse"
    assert any("the two centrings disagree" in r for r in result.verdict["reasons"])
    assert result.to_dict()["verdict"] == result.verdict
