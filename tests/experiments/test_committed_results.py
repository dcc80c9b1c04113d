"""The committed results: every row of each results CSV (docs/results/cifar10_lt.csv, cifar100_lt.csv and
the archived v1/cifar10_lt.csv) is backed by its committed dumps, and ``nctools analyze`` on them gives the
row's metric values: the training-set columns from the final training dump, the ``test_*`` columns from
the final test-set dump where the row has one."""
from __future__ import annotations

import csv
import math

import pytest

import nctools
from experiments.paper_tables import CSV_METRICS, SUMMARY_KEY, TEST_METRICS
from tests.helpers.paths import REPO

RESULTS = [p for p in (REPO / "docs" / "results" / "cifar10_lt.csv", REPO / "docs" / "results" / "cifar100_lt.csv",
                       REPO / "docs" / "results" / "v1" / "cifar10_lt.csv") if p.exists()]
ACCURACIES = ("train_acc", "test_acc", "many_acc", "medium_acc", "few_acc")


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _all_rows() -> list[tuple[str, dict]]:
    return [(path.relative_to(REPO).as_posix(), row) for path in RESULTS for row in _rows(path)]


def _analyze(dump) -> dict:
    return nctools.analyze(dump.features, dump.labels, weight=dump.weight, bias=dump.bias,
                           class_counts=dump.class_counts, device="cpu", progress=False).summary


def _check(row: dict, summary: dict, columns: dict[str, str]) -> None:
    for col, key in columns.items():
        got = summary[key]
        if row[col] == "":
            assert got is None or math.isnan(got), col
        else:
            assert got == pytest.approx(float(row[col]), rel=1e-6, abs=1e-12), col


def test_the_archived_study_is_there():
    assert REPO / "docs" / "results" / "v1" / "cifar10_lt.csv" in RESULTS


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_rows_are_unique_and_accuracies_are_fractions(path):
    rows = _rows(path)
    assert rows, f"{path} has no rows"
    keys = [(r["method"], r["beta"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))
    for r in rows:
        for col in ACCURACIES:
            if r[col]:
                assert 0.0 <= float(r[col]) <= 1.0, (keys, col)
        assert int(r["n_test"]) == 10_000


@pytest.mark.parametrize("source,row", _all_rows(), ids=lambda v: v if isinstance(v, str) else
                         f"{v['method']}-b{v['beta']}-s{v['seed']}")
def test_row_is_nctools_analyze_on_its_committed_dumps(source, row):
    dump = nctools.load_dump(REPO / row["dump"])
    assert dump.features.dtype.itemsize == 2  # float16, as committed
    assert len(dump.labels) == int(row["n_train"])
    train = {c: SUMMARY_KEY.get(c, c) for c in CSV_METRICS if c in row}  # the archived study has fewer columns
    _check(row, _analyze(dump), train)
    if row.get("test_dump"):
        test = nctools.load_dump(REPO / row["test_dump"])
        assert len(test.labels) == int(row["n_test"])
        assert test.class_counts.tolist() == dump.class_counts.tolist()  # the training counts name the tail
        _check(row, _analyze(test), {f"test_{c}": SUMMARY_KEY.get(c, c) for c in TEST_METRICS})
    else:
        assert source.startswith("docs/results/v1/"), "every row of the evidence study has its test dump"


@pytest.mark.parametrize("path", [p for p in RESULTS if p.with_name(p.stem + "_claims.csv").exists()],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_committed_claims_are_what_the_committed_rows_give(path):
    """docs/results/<study>_claims.csv is ``python -m experiments.evidence --claims`` on the rows beside it."""
    from experiments import evidence

    classes = 100 if "cifar100" in path.name else 10
    want = evidence.evaluate(evidence.load(path), classes)
    got = _rows(path.with_name(path.stem + "_claims.csv"))
    assert [r["key"] for r in got] == [r["key"] for r in want]
    for g, w in zip(got, want):
        for column in evidence.COLUMNS:
            if isinstance(w[column], float):
                assert (g[column] == "nan") if w[column] != w[column] else float(g[column]) == pytest.approx(
                    w[column], rel=1e-9), (w["key"], column)
            else:
                assert g[column] == str(w[column]), (w["key"], column)


@pytest.mark.parametrize("path", [p for p in RESULTS if "v1" not in p.parts], ids=lambda p: str(p.relative_to(REPO)))
def test_the_results_page_shows_what_the_committed_rows_give(path):
    """docs/RESULTS.md's tables of each study (per-method means, every claim's interval and verdict) are
    ``python -m experiments.evidence --page`` on the committed rows: the page cannot lag its CSV."""
    from experiments import evidence

    block = evidence.page_block(REPO / "docs" / "RESULTS.md", path)  # ValueError: the page has no such block
    assert block == evidence.tables(evidence.load(path), 100 if "cifar100" in path.name else 10)


@pytest.mark.parametrize("source,row", [(s, r) for s, r in _all_rows() if r.get("track")],
                         ids=lambda v: v if isinstance(v, str) else f"{v['method']}-b{v['beta']}-s{v['seed']}")
def test_committed_tracks_end_at_the_row(source, row):
    """A row's curves over epochs (``nctools track`` on the run's epoch dumps, kept in docs/results/tracks)
    end at the final dumps the row describes: same epoch, same metrics."""
    import pandas as pd

    assert row["test_track"], "a row with a track has its test track too"
    for column, prefix, metrics in (("track", "", CSV_METRICS), ("test_track", "test_", TEST_METRICS)):
        table = pd.read_csv(REPO / row[column])
        assert list(table["epoch"]) == sorted(table["epoch"]) and len(table) >= 2, column
        last = table.iloc[-1]
        assert int(last["epoch"]) == int(row["epochs"]), column
        for metric in metrics:
            key = SUMMARY_KEY.get(metric, metric)
            if key in last and row[f"{prefix}{metric}"] != "":
                assert float(last[key]) == pytest.approx(float(row[f"{prefix}{metric}"]), rel=1e-5), (column, metric)
