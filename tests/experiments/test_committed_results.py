"""The committed CIFAR-10-LT results: every row of docs/results/cifar10_lt.csv is backed by its
committed dump, and ``nctools analyze`` on that dump gives the row's metric values."""
from __future__ import annotations

import csv
import math

import pytest

import nctools
from nctools.core import keys as K
from tests.helpers.paths import REPO

RESULTS = REPO / "docs" / "results" / "cifar10_lt.csv"
METRICS = {"nc1": K.NC1, "nc1_tail": K.TAIL_NC1, "nc2_cos_std_means": K.NC2_COS_STD_MEANS,
           "nc2_cos_std_classifier": K.NC2_COS_STD_CLASSIFIER, "nc3_self_duality": K.NC3_SELF_DUALITY,
           "tail_icpa_mean_deg_means": K.TAIL_ICPA_MEAN_DEG_MEANS,
           "tail_icpa_mean_deg_classifier": K.TAIL_ICPA_MEAN_DEG_CLASSIFIER}


def _rows() -> list[dict]:
    with open(RESULTS, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_are_unique_and_accuracies_are_fractions():
    rows = _rows()
    assert rows, "docs/results/cifar10_lt.csv has no rows"
    keys = [(r["method"], r["beta"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))
    for r in rows:
        for col in ("train_acc", "test_acc", "many_acc", "medium_acc", "few_acc"):
            if r[col]:
                assert 0.0 <= float(r[col]) <= 1.0, (keys, col)
        assert int(r["n_test"]) == 10_000


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['method']}-b{r['beta']}-s{r['seed']}")
def test_row_is_nctools_analyze_on_its_committed_dump(row):
    dump = nctools.load_dump(REPO / row["dump"])
    assert dump.features.dtype.itemsize == 2  # float16, as committed
    assert len(dump.labels) == int(row["n_train"])
    summary = nctools.analyze(dump.features, dump.labels, weight=dump.weight, bias=dump.bias,
                              class_counts=dump.class_counts, device="cpu", progress=False).summary
    for col, key in METRICS.items():
        got = summary[key]
        if row[col] == "":
            assert got is None or math.isnan(got), col
        else:
            assert got == pytest.approx(float(row[col]), rel=1e-6, abs=1e-12), col
