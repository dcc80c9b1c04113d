"""Hostile inputs to the core and to ``nctools track``.

- Features (or classifier rows) far from 1 in size: every number still matches the float64 twin.
- ``nctools track`` takes the epoch from the file name, refuses a run whose classes or dimension
  change, and ``--skip-bad`` leaves out an unusable epoch with a warning.
- Merging accumulators of different classifiers, a pass 2 over other data of the same class sizes,
  and sparse or meta tensors are refused in one sentence.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import nctools
from nctools import functional
from nctools.core import residuals
from tests.helpers.bruteforce import SUMMARY_TWINS, brute_force
from tests.helpers.cli import invoke, make_dump, make_run
from tests.helpers.datagen import as_numpy64, make_features, two_passes

COUNTS = [40, 30, 20, 10]


def twin_of(feats, labels, w, b):
    return brute_force(as_numpy64(feats), labels.numpy(), as_numpy64(w), as_numpy64(b))


def assert_all_keys_match(result, twin, rtol):
    for key, twin_key in SUMMARY_TWINS.items():
        ours, expected = result.summary[key], twin[twin_key]
        assert ours is not None, f"{key} is null: {result.notes}"
        tol = 1e-5 if key.startswith("icpa") else 1e-9
        assert math.isclose(ours, expected, rel_tol=rtol, abs_tol=tol), f"{key}: {ours} vs {expected}"
    assert not any("not finite" in n for n in result.notes), result.notes


def assert_summaries_close(got, want, rel):
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), key
        else:
            assert got[key] == value, key


# ------------------------------------------------------------------------- 8: extreme magnitudes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [1e20, 1e30, 1e-25])
def test_features_far_from_one_match_the_twin(dtype, size):
    """At 1e20 the float32 squares of pass 2 overflowed: NC4 came out 0.82 against the twin's 0.38
    without a note (and the trace ratio and CDNV null); at 1e-25 they underflowed to a silently
    wrong NC4 and a trace ratio of -6e-16. Pass 2 now works in units of a power of two."""
    feats, labels, w, b = make_features(COUNTS, 6, spread=3.0, seed=1)
    feats = (feats * size).to(dtype)
    result, twin = nctools.analyze(feats, labels, w, b, chunk_size=37), twin_of(feats, labels, w, b)
    assert result.summary["nc4_ncc_mismatch"] == twin["nc4_ncc_mismatch"]  # a fraction of 100: exact
    assert result.summary["accuracy"] == twin["accuracy"]
    assert_all_keys_match(result, twin, rtol=1e-6)


def test_the_issue_example_at_1e20():
    """The numbers of the report: NC4 0.795 (was) against 0.0385 from the float64 twin."""
    feats, labels, w, b = make_features([30, 20, 15, 13], 5, dtype=torch.float32)
    feats = feats * 1e20
    result, twin = nctools.analyze(feats, labels, w, b), twin_of(feats, labels, w, b)
    assert twin["nc4_ncc_mismatch"] == pytest.approx(3 / 78)
    assert result.summary["nc4_ncc_mismatch"] == twin["nc4_ncc_mismatch"]
    assert result.summary["accuracy"] == twin["accuracy"]
    assert_all_keys_match(result, twin, rtol=1e-6)


@pytest.mark.parametrize("size", [1e50, 1e-50])
def test_classifier_rows_far_from_one_match_the_twin(size):
    """float64 rows of 1e50 (inf once rounded to float32) or 1e-50 (zero) decided nothing."""
    feats, labels, w, b = make_features(COUNTS, 6, spread=3.0, seed=1, dtype=torch.float32)
    w, b = w.double() * size, b.double() * size
    result, twin = nctools.analyze(feats, labels, w, b), twin_of(feats, labels, w, b)
    assert result.summary["accuracy"] == twin["accuracy"]
    assert result.summary["nc4_ncc_mismatch"] == twin["nc4_ncc_mismatch"]
    assert_all_keys_match(result, twin, rtol=1e-6)


def test_functional_forms_at_1e20_agree_with_analyze():
    feats, labels, w, b = make_features(COUNTS, 6, spread=3.0, seed=1)
    feats = (feats * 1e20).float()
    full, twin = nctools.analyze(feats, labels, w, b).summary, twin_of(feats, labels, w, b)
    assert functional.nc4(feats, labels, w, b) == full["nc4_ncc_mismatch"] == twin["nc4_ncc_mismatch"]
    assert functional.nc1(feats, labels) == full["nc1"]


def test_ordinary_features_are_not_scaled():
    """Inputs of ordinary size keep their exact pass-2 arithmetic (the stored numbers stay)."""
    for size in (1e-9, 1.0, 1e9):
        assert residuals.power_of_two_scale(torch.tensor([size, -size / 3]), torch.float32) == 1.0
    assert residuals.power_of_two_scale(torch.tensor([1e20]), torch.float64) == 1.0
    assert residuals.power_of_two_scale(torch.tensor([1e20]), torch.float32) == 2.0 ** -67
    assert residuals.power_of_two_scale(torch.zeros(3), torch.float32) == 1.0
    feats, labels, w, b = make_features(COUNTS, 6, dtype=torch.float32)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    acc.next_pass()
    assert (acc.plan.scale, acc.plan.weight_scale) == (1.0, 1.0)


# ------------------------------------------------------------- 11: merging, pass 2, tensor kinds


def _pass1(weight, bias=None, feats=None, labels=None):
    acc = nctools.NeuralCollapse(4, weight, bias)
    if feats is not None:
        acc.update(feats, labels)
    return acc


def test_merging_different_classifiers_is_refused():
    feats, labels, w, b = make_features(COUNTS, 6)
    base = _pass1(w, b, feats[:50], labels[:50])
    for other in (_pass1(w + 1e-3, b, feats[50:], labels[50:]), _pass1(None, None, feats[50:], labels[50:]),
                  _pass1(2 * w, b), _pass1(w.float(), b)):
        with pytest.raises(ValueError, match="^cannot merge accumulators with different classifier weights$"):
            base.merge(other)
    with pytest.raises(ValueError, match="^cannot merge accumulators with different classifier biases$"):
        base.merge(_pass1(w, b + 1, feats[50:], labels[50:]))
    with pytest.raises(ValueError, match="^cannot merge accumulators with different classifier biases$"):
        base.merge(_pass1(w, None, feats[50:], labels[50:]))
    # The same classifier given twice (equal values, other tensors) merges.
    base.merge(_pass1(w.clone(), b.clone(), feats[50:], labels[50:]))
    base.next_pass()
    base.update(feats, labels)
    assert_summaries_close(base.compute().summary, nctools.analyze(feats, labels, w, b).summary, rel=1e-12)


def _second_pass(feats, labels, second_feats, second_labels, w=None, b=None):
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    acc.next_pass()
    acc.update(second_feats, second_labels)
    return acc


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_pass2_on_other_data_of_the_same_class_sizes_is_refused(dtype):
    feats, labels, w, b = make_features(COUNTS, 6, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    augmented = (feats.double() + 0.01 * torch.randn(feats.shape, generator=gen, dtype=torch.float64)).to(dtype)
    shuffled_labels = labels[torch.randperm(len(labels), generator=gen)]  # same class sizes, other samples
    message = "^pass 2 saw different data than pass 1: the features of class [0-3] do not add up"
    for second in ((augmented, labels), (feats, shuffled_labels)):
        acc = _second_pass(feats, labels, *second, w, b)
        with pytest.raises(ValueError, match=message):
            acc.compute()


@pytest.mark.parametrize("case", ["offset", "collapsed", "float16", "bfloat16", "huge", "tiny"])
def test_pass2_on_the_same_data_in_another_order_is_accepted(case):
    """The checksum is a bound on round-off, not a guess: large offsets, nearly collapsed
    features, half precision and extreme sizes pass, whatever the order and the chunks."""
    kw = {"offset": dict(offset=1e4, dtype=torch.float32), "collapsed": dict(spread=1e-6, offset=30.0,
                                                                               dtype=torch.float32),
          "float16": dict(dtype=torch.float16), "bfloat16": dict(dtype=torch.bfloat16, offset=50.0),
          "huge": dict(dtype=torch.float32), "tiny": dict(dtype=torch.float32)}[case]
    feats, labels, w, b = make_features([400, 300, 20, 3], 64, seed=4, **kw)
    if case in ("huge", "tiny"):
        feats = feats * (1e25 if case == "huge" else 1e-25)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    acc = nctools.NeuralCollapse(4, w, b)
    for start in range(0, len(labels), 97):
        acc.update(feats[start:start + 97], labels[start:start + 97])
    acc.next_pass()
    for start in range(0, len(labels), 61):
        rows = order[start:start + 61]
        acc.update(feats[rows], labels[rows])
    # the same samples, in other chunks and another order: the same numbers up to round-off
    assert_summaries_close(acc.compute().summary, nctools.analyze(feats, labels, w, b, chunk_size=97).summary,
                           rel=1e-6)


def test_pass2_twins_and_the_count_check_still_work():
    feats, labels, w, b = make_features(COUNTS, 6)
    acc = nctools.NeuralCollapse(4, w, b)
    assert two_passes(acc, feats, labels).summary["accuracy"] is not None
    short = _second_pass(feats, labels, feats[:10], labels[:10], w, b)
    with pytest.raises(ValueError, match=r"pass 2 saw different data than pass 1 \(10 vs 100 samples\)"):
        short.compute()


FEATS, LABELS, W, B = make_features(COUNTS, 6, dtype=torch.float32)


@pytest.mark.parametrize("which", ["features", "labels", "weight", "bias"])
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_and_meta_tensors_are_refused_in_one_sentence(which):
    args = {"features": FEATS, "labels": LABELS, "weight": W, "bias": B}
    sparse = dict(args, **{which: args[which].to_sparse()})
    meta = dict(args, **{which: args[which].to("meta")})
    dense_hint = f"^{which} is a sparse tensor; pass a dense tensor \\({which}.to_dense\\(\\)\\)$"
    no_data = f"^{which} is on the meta device and holds no data$"
    for given, error, message in ((sparse, TypeError, dense_hint), (meta, ValueError, no_data)):
        with pytest.raises(error, match=message):
            nctools.analyze(given["features"], given["labels"], given["weight"], given["bias"])
        with pytest.raises(error, match=message):
            acc = nctools.NeuralCollapse(4, given["weight"], given["bias"])
            acc.update(given["features"], given["labels"])
        with pytest.raises(error, match=message):
            functional.nc4(given["features"], given["labels"], given["weight"], given["bias"])
    csr = FEATS.to_sparse_csr() if which == "features" else None
    if csr is not None:
        with pytest.raises(TypeError, match=dense_hint):
            functional.nc1(csr, LABELS)


def test_sparse_class_counts_are_refused():
    with pytest.raises(TypeError, match=r"^class_counts is a sparse tensor"):
        nctools.analyze(FEATS, LABELS, W, B, class_counts=torch.tensor([40, 30, 20, 10]).to_sparse())


# ---------------------------------------------------------------------- 10: nctools track


def _table(out):
    return pd.read_csv(out / "track.csv")


def test_track_takes_the_epoch_from_the_file_name(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 2))
    late = make_dump(run / "dumps" / "epoch_0003.safetensors", epoch=1, noise=1 / 3, seed=3)
    result = invoke("track", run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _table(tmp_path / "out")["epoch"].tolist() == [1, 2, 3]
    assert _warnings(result) == [f"Warning: {late}: its metadata says epoch 1; using epoch 3 from the file name"]
    quiet = invoke("track", run, "--out", tmp_path / "out", "--quiet")  # -q: the result alone
    assert quiet.exit_code == 0 and quiet.stderr == ""


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


def test_track_refuses_a_run_whose_classes_change(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 2))
    odd = make_dump(run / "dumps" / "epoch_0003.safetensors", epoch=3, counts=(150, 60, 30, 15, 8))
    for flags in ((), ("--skip-bad",)):  # not a bad file: a run that changed, even with --skip-bad
        result = invoke("track", run, "--out", tmp_path / "out", "--quiet", *flags)
        assert result.exit_code == 2
        first = run / "dumps" / "epoch_0001.safetensors"
        assert result.stderr.strip() == (f"Error: {odd}: 5 classes and dim 8, but {first} has 6 classes and dim 8; "
                                         "every epoch of a run must have the same classes and feature dimension.")
        assert not (tmp_path / "out").exists()


def test_track_refuses_a_run_whose_dimension_changes(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1,))
    feats, labels, w, b = make_features([150, 60, 30, 15, 8, 4], 5, dtype=torch.float32)
    odd = nctools.save_dump(run / "dumps" / "epoch_0002.safetensors", feats, labels, w, b, metadata={"epoch": 2})
    result = invoke("track", run, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 2
    assert f"Error: {odd}: 6 classes and dim 5, but " in result.stderr and "epoch_0001.safetensors has 6 classes " \
        "and dim 8" in result.stderr


def _nan_dump(path):
    """A safetensors dump whose features hold a NaN: readable, found only when analysed."""
    from safetensors.torch import save_file

    feats, labels, w, b = make_features([150, 60, 30, 15, 8, 4], 8, dtype=torch.float32)
    feats[7, 2] = float("nan")
    save_file({"features": feats, "labels": labels, "classifier.weight": w, "classifier.bias": b}, str(path),
              metadata={"format_version": "1", "epoch": "2"})
    return path


def test_track_skip_bad_leaves_out_unusable_epochs(tmp_path):
    run = make_run(tmp_path / "run", epochs=(1, 3, 4))
    corrupt = run / "dumps" / "epoch_0004.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    nan = _nan_dump(run / "dumps" / "epoch_0002.safetensors")
    out = tmp_path / "out"
    plain = invoke("track", run, "--out", out, "--quiet")  # without the flag: the first bad epoch stops it
    assert plain.exit_code == 2 and plain.stderr.startswith(f"Error: {nan}: features must be finite")
    assert not out.exists()
    result = invoke("track", run, "--out", out, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert _table(out)["epoch"].tolist() == [1, 3]
    lines = _warnings(result)
    assert len(lines) == 2
    assert lines[0].startswith(f"Warning: skipped {nan}: features must be finite, but 1 entry is NaN or Inf")
    assert lines[1].startswith(f"Warning: skipped {corrupt}: truncated or corrupt")
    listed = (out / "skipped.txt").read_text().splitlines()
    assert [line.split(": ", 1)[0] for line in listed] == [str(nan), str(corrupt)]
    assert listed[1] == lines[1].removeprefix("Warning: skipped ")
    text = invoke("track", run, "--out", out, "--skip-bad")
    assert "(2 epochs, 2 skipped," in text.stdout and "skipped.txt" in text.stderr
    quiet = invoke("track", run, "--out", out, "--skip-bad", "--quiet")  # -q: no warnings, the list still written
    assert quiet.exit_code == 0 and quiet.stderr == "" and len((out / "skipped.txt").read_text().splitlines()) == 2
    # Repaired: a clean track leaves no stale list behind.
    make_dump(corrupt, epoch=4, seed=4)
    nan.unlink()
    again = invoke("track", run, "--out", out, "--quiet", "--skip-bad")
    assert again.exit_code == 0 and again.stderr == ""
    assert _table(out)["epoch"].tolist() == [1, 3, 4] and not (out / "skipped.txt").exists()


def test_track_skip_bad_with_nothing_usable_is_an_error(tmp_path):
    run = tmp_path / "run"
    (run / "dumps").mkdir(parents=True)
    for e in (1, 2):
        (run / "dumps" / f"epoch_{e:04d}.pt").write_bytes(b"garbage")
    result = invoke("track", run, "--out", tmp_path / "out", "--skip-bad")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: {run}: every epoch dump was skipped (2 unreadable or unusable)."
    assert sum(line.startswith("Warning: skipped ") for line in result.stderr.splitlines()) == 2


def test_track_run_library_warns_through_python_warnings(tmp_path):
    from nctools.report.tracking import track_run

    run = make_run(tmp_path / "run", epochs=(1,))
    make_dump(run / "dumps" / "epoch_0002.safetensors", epoch=5)
    with pytest.warns(UserWarning, match="its metadata says epoch 5; using epoch 2 from the file name"):
        track = track_run(run, device="cpu")
    assert track.table["epoch"].tolist() == [1, 2] and track.skipped == []


def test_subnormal_features_say_why_nc1_is_null():
    """Features of scale 1e-40 (subnormal in float32) square to zero: nc1 is null, and a note says why and what
    to do, where before it was null without a word; features of a normal scale get no such note."""
    import nctools

    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(10)
    x = torch.randn(40, 6, generator=g) + 3 * torch.eye(6)[y]
    tiny = nctools.analyze(x * 1e-40, y, device="cpu", progress=False)
    assert tiny.summary["nc1"] is None
    assert any(n.startswith("the features are tiny (largest class-mean entry 3") and "scale-invariant" in n
               for n in tiny.notes)
    assert not any("tiny" in n for n in nctools.analyze(x, y, device="cpu", progress=False).notes)
