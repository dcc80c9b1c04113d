"""The parts NeuralCollapse composes: pass-1 sums, the pass-2 routine, and the reducer that merges
their state (chunks, accumulators; processes are in test_distributed.py)."""
from __future__ import annotations

import pytest
import torch

import nctools
from nctools.core import reducer, residuals
from nctools.core.reducer import Entry, StateSpec
from nctools.core.sums import PASS1, Scratch, chunk_sums
from tests.helpers.datagen import lt_counts, make_features


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    """These tests compare two routes bit for bit, which holds for one BLAS: on a CUDA machine,
    device="auto" would take the GPU, whose GEMMs of other widths reduce in another order."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

CPU = torch.device("cpu")


def test_pass1_chunks_add_up_to_the_sums_of_the_whole():
    feats, labels, _, _ = make_features(lt_counts(100, 5, 10), 7, dtype=torch.float32)
    scratch, total = Scratch(CPU), PASS1.zeros(5, 7, CPU)
    for start in range(0, len(labels), 17):
        PASS1.merge_(total, chunk_sums(feats[start:start + 17], labels[start:start + 17], 5, scratch))
    assert torch.equal(total["counts"], torch.bincount(labels, minlength=5))
    want = torch.zeros(5, 7, dtype=torch.float64).index_add_(0, labels, feats.double())
    torch.testing.assert_close(total["sums"], want, rtol=1e-15, atol=1e-12)


def test_pass1_finiteness_check_counts_rows_from_the_offset():
    feats, labels, _, _ = make_features([5, 5], 3, dtype=torch.float32)
    feats[4, 2] = float("inf")
    with pytest.raises(ValueError, match=r"first: features\[104, 2\] = inf"):
        chunk_sums(feats, labels, 2, Scratch(CPU), row_offset=100)
    chunk_sums(feats, labels, 2, Scratch(CPU), check=False)  # no scan asked for: no error


def test_scratch_reuses_a_tensor_that_fits():
    scratch = Scratch(CPU)
    big = scratch.get("r", 10, 3, torch.float32)
    small = scratch.get("r", 4, 3, torch.float32)
    assert small.data_ptr() == big.data_ptr() and small.shape == (4, 3)
    assert scratch.get("r", 4, 3, torch.float64).dtype == torch.float64  # another dtype: a new tensor
    scratch.clear()
    assert scratch.get("r", 4, 3, torch.float64).data_ptr() != small.data_ptr()


def test_state_entries_declare_their_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        Entry("counts", torch.long, reduction="max")
    spec = StateSpec(Entry("counts", torch.long), Entry("sums", per_feature=True))
    state = spec.zeros(3, 4, CPU)
    assert spec.names == ("counts", "sums")
    assert state["counts"].dtype == torch.long and state["sums"].shape == (3, 4)
    twin = reducer.zeros_like(spec.merge_(state, {"sums": torch.ones(3, 4, dtype=torch.float64)}))
    assert twin.keys() == state.keys() and not twin["sums"].any() and bool(state["sums"].all())
    assert spec.all_reduce(state, CPU) is state  # one process: the state itself


def test_join_makes_zeros_for_an_idle_twin_and_refuses_no_data():
    spec = residuals.pass2_spec(classifier=True)
    state, dim, dtype = reducer.join({}, spec, 4, 6, torch.float64, CPU)
    assert (dim, dtype) == (6, torch.float64) and set(state) == set(spec.names)
    assert not any(v.any() for v in state.values())
    with pytest.raises(RuntimeError, match="no data was seen"):
        reducer.join({}, spec, 4, 6, None, CPU)  # one process, nothing seen: nothing to reduce


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_state_of_fewer_entries_gets_the_same_sums(dtype):
    """add_residuals computes only what the state holds, and those entries bit for bit as in the full state."""
    feats, labels, w, b = make_features(lt_counts(120, 6, 20), 9, dtype=dtype, seed=6)
    first = PASS1.merge_(PASS1.zeros(6, 9, CPU), chunk_sums(feats, labels, 6, Scratch(CPU)))
    w64, b64 = w.double(), b.double()
    plan = residuals.make_plan(first["counts"], first["sums"], w64, b64, "class", residuals.compute_dtype_for(dtype))
    full_spec = residuals.pass2_spec(classifier=True)
    full = full_spec.zeros(6, 9, CPU)
    residuals.add_residuals(full, plan, feats, labels, Scratch(CPU))
    for names in (["nc1_terms"], ["mismatch"], ["counts", "hits"], ["resid_sq", "ncc_hits"]):
        part = StateSpec(*(Entry(n, torch.long if n == "counts" else torch.float64) for n in names)).zeros(6, 9, CPU)
        residuals.add_residuals(part, plan, feats, labels, Scratch(CPU))
        for name in names:
            assert torch.equal(part[name], full[name]), name
    lean = residuals.make_plan(first["counts"], first["sums"], None, None, "class", plan.compute_dtype, nearest=False)
    assert lean.mean_dist_sq is None and lean.to_scores is None and lean.logit_gap is None
    terms = StateSpec(Entry("nc1_terms")).zeros(6, 9, CPU)
    residuals.add_residuals(terms, lean, feats, labels, Scratch(CPU))
    want = nctools.analyze(feats, labels).summary
    assert residuals.nc1_value(first["counts"], terms["nc1_terms"], lean) == want["nc1"]
    assert residuals.nc1_balanced_value(first["counts"], terms["nc1_terms"], lean) == want["nc1_balanced"]
    per_class = residuals.nc1_per_class(first["counts"], terms["nc1_terms"], lean)
    assert float(per_class.mean()) == pytest.approx(want["nc1_balanced"], rel=1e-12)


def test_svd_route_equals_gram_route(monkeypatch):
    """The pseudo-inverse's two routes (Gram eigen-decomposition, SVD of M~) span the same directions."""
    gen = torch.Generator().manual_seed(8)
    for c, d in ((12, 20), (30, 8)):  # the (C', C') and the (d, d) Gram matrix
        centred = torch.randn(c, d, generator=gen, dtype=torch.float64)
        centred -= centred.mean(0)
        basis, s = residuals.pseudo_inverse_directions(centred)
        monkeypatch.setattr(residuals, "GRAM_EIGEN_FLOOR", float("inf"))
        basis_svd, s_svd = residuals.pseudo_inverse_directions(centred)
        monkeypatch.undo()
        assert basis.shape == basis_svd.shape == (d, min(c - 1, d))
        torch.testing.assert_close(s, s_svd, rtol=1e-10, atol=0)
        torch.testing.assert_close(basis @ basis.T, basis_svd @ basis_svd.T, rtol=0, atol=1e-10)


def test_accumulator_state_is_the_declared_state():
    feats, labels, w, b = make_features([30, 20, 15, 13], 5)
    acc = nctools.NeuralCollapse(4, w, b)
    acc.update(feats, labels)
    assert tuple(acc.statistics()) == PASS1.names
    acc.next_pass()
    acc.update(feats, labels)
    stats = acc.statistics()
    assert tuple(stats) == PASS1.names + tuple(f"pass2_{n}" for n in residuals.pass2_spec(True).names)
