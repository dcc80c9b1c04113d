"""Bad input to analyze / NeuralCollapse: one clear sentence naming the argument, never a crash."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nctools
from tests.helpers.datagen import make_features

FEATS, LABELS, W, B = make_features([20, 12, 8], 5, dtype=torch.float32)


def with_nan(t, index):
    t = t.clone()
    t[index] = float("nan")
    return t


CASES = [
    ("1-D features", dict(features=FEATS[:, 0]), ValueError, "features must be 2-D"),
    ("int features", dict(features=FEATS.long()), TypeError, "features must be a floating tensor"),
    ("empty features", dict(features=FEATS[:0], labels=LABELS[:0]), ValueError, "features is empty"),
    ("string array", dict(features=np.array([["a"]])), TypeError, "features must be a numeric array"),
    ("a list of str", dict(features="abc"), TypeError, "features must be a torch.Tensor or numpy array"),
    ("NaN feature", dict(features=with_nan(FEATS, (7, 2))), ValueError, "NaN or Inf (first: features[7, 2] = nan)"),
    ("Inf feature", dict(features=with_nan(FEATS, (3, 1)) * 0 + float("inf")), ValueError, "must be finite"),
    ("float labels", dict(labels=LABELS.float()), TypeError, "labels must be an integer tensor"),
    ("2-D labels", dict(labels=LABELS[:, None]), ValueError, "labels must be 1-D"),
    ("short labels", dict(labels=LABELS[:-3]), ValueError, "inconsistent numbers of samples: [40, 37]"),
    ("label too big", dict(labels=torch.where(LABELS == 2, 3, LABELS)), ValueError, "labels must lie in [0, 3)"),
    ("negative label", dict(labels=torch.where(LABELS == 2, -1, LABELS)), ValueError, "8 labels are outside it"),
    ("weight wrong d", dict(weight=W[:, :4]), ValueError, "weight has 4 columns but the features have dim 5"),
    ("weight 1-D", dict(weight=W[0]), ValueError, "weight must be 2-D"),
    ("weight wrong C", dict(weight=torch.cat([W, W[:1]]), bias=None), ValueError, "weight rows = 4, class_counts = 3"),
    ("NaN weight", dict(weight=with_nan(W, (1, 1))), ValueError, "weight must be finite"),
    ("bias wrong C", dict(bias=B[:2]), ValueError, "bias must be 1-D with one entry per weight row"),
    ("bias alone", dict(weight=None), ValueError, "bias was given without weight"),
    ("counts wrong C", dict(class_counts=torch.tensor([1, 2])), ValueError, "class_counts = 2"),
    ("negative counts", dict(class_counts=torch.tensor([5, -1, 2])), ValueError, "class_counts must be non-negative"),
    ("bad center", dict(center="median"), ValueError, "center must be one of ('class', 'sample')"),
    ("bad groups", dict(groups=(20, 100)), ValueError, "groups must satisfy few <= many"),
    ("bad chunk", dict(chunk_size=0), ValueError, "chunk_size must be a positive integer"),
    ("one class", dict(labels=torch.zeros_like(LABELS), weight=None, bias=None, class_counts=None),
     ValueError, "need at least 2 classes"),
    ("one class present", dict(labels=torch.zeros_like(LABELS)), ValueError, "need samples of at least 2 classes"),
]


@pytest.mark.parametrize("name,changes,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_says_what_is_wrong(name, changes, error, message):
    kwargs = dict(features=FEATS, labels=LABELS, weight=W, bias=B, class_counts=torch.tensor([20, 12, 8]))
    kwargs.update(changes)
    with pytest.raises(error) as info:
        nctools.analyze(**kwargs)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_nan_found_in_a_later_chunk_names_the_rows():
    feats = with_nan(FEATS, (33, 0))
    expected = r"features must be finite, but 1 entry is NaN or Inf \(first: features\[33, 0\] = nan\)"
    with pytest.raises(ValueError, match=expected):
        nctools.analyze(feats, LABELS, W, B, chunk_size=10)


def test_accumulator_checks_each_chunk():
    acc = nctools.NeuralCollapse(3, W, B)
    with pytest.raises(ValueError, match="features have dim 4, expected 5"):
        acc.update(FEATS[:, :4], LABELS)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        acc.update(FEATS, LABELS + 1)
    with pytest.raises(RuntimeError, match="no data was seen"):
        acc.next_pass()
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        nctools.NeuralCollapse(1)
    with pytest.raises(ValueError, match="weight must have num_classes = 4 rows, got 3"):
        nctools.NeuralCollapse(4, W)
    acc.update(FEATS, LABELS)
    acc.next_pass()
    with pytest.raises(RuntimeError, match="next_pass\\(\\) was already called"):
        acc.next_pass()
    other = nctools.NeuralCollapse(3, W, B)
    other.update(FEATS, LABELS)
    with pytest.raises(ValueError, match="cannot merge an accumulator in pass 1 into one in pass 2"):
        acc.merge(other)
    with pytest.raises(TypeError, match="can only merge another NeuralCollapse"):
        acc.merge("x")


def test_validate_false_skips_the_scan_but_not_the_structure():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        nctools.analyze(FEATS, LABELS[:-1], validate=False)


def test_parameters_that_require_grad_are_fine():
    layer = torch.nn.Linear(5, 3)
    feats = torch.nn.Linear(5, 5)(FEATS)  # features straight out of a forward pass
    assert feats.requires_grad and layer.weight.requires_grad
    result = nctools.analyze(feats, LABELS, layer.weight, layer.bias)
    assert result.summary["accuracy"] is not None


@pytest.mark.parametrize("device,message", [("gpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
                                            ("meta", "device must be a CPU or CUDA device")])
def test_bad_device_is_a_clear_error(device, message):
    with pytest.raises(ValueError, match=message):
        nctools.analyze(FEATS, LABELS, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device is available here"):
        nctools.analyze(FEATS, LABELS, device="cuda")


def test_numpy_odd_dtypes_and_integer_types():
    big_endian = FEATS.numpy().astype(">f4")
    unsigned = LABELS.numpy().astype(np.uint32)
    result = nctools.analyze(big_endian, unsigned, W, B, chunk_size=np.int64(8))
    assert result.summary == nctools.analyze(FEATS, LABELS, W, B, chunk_size=8).summary
    assert nctools.NeuralCollapse(np.int64(3)).num_classes == 3
    with pytest.raises(ValueError, match="class_counts must be finite whole numbers"):
        nctools.analyze(FEATS, LABELS, class_counts=torch.tensor([float("inf"), 12.0, 8.0]))


def test_reset_forgets_the_dimension():
    acc = nctools.NeuralCollapse(3)
    acc.update(FEATS, LABELS)
    acc.reset()
    acc.update(FEATS[:, :4], LABELS)  # another model's features
    acc.next_pass()
    acc.update(FEATS[:, :4], LABELS)
    assert acc.compute().summary["dim"] == 4


def test_an_idle_twin_merges_as_nothing():
    acc = nctools.NeuralCollapse(3, W, B)
    idle = acc.spawn()
    acc.update(FEATS, LABELS)
    acc.merge(idle)
    acc.next_pass()
    idle2 = acc.spawn()
    acc.update(FEATS, LABELS)
    acc.merge(idle2)
    assert acc.compute().summary == nctools.analyze(FEATS, LABELS, W, B, chunk_size=len(LABELS)).summary


def test_verdict_without_a_classifier_speaks_of_the_means_only():
    from tests.helpers.datagen import lt_counts

    feats, labels, _, _ = make_features(lt_counts(300, 8, 100), 12, classifier=False)
    result = nctools.analyze(feats, labels)
    verdict = result.verdict
    assert verdict["status"] in ("feature_minority_collapse", "no_minority_collapse"), verdict
    assert "no classifier was given: judged on the means alone" in verdict["reasons"]
    assert not any("classifier rows" in r for r in verdict["reasons"])
