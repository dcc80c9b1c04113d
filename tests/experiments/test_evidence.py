"""The evidence study's statistics (experiments.evidence) and the regime rule (experiments.regime_search)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from experiments import evidence, regime_search


def test_interval_is_the_student_t_interval_of_the_mean():
    d = [1.0, 2.0, 4.0]
    mean, low, high = evidence.interval(d)
    half = 4.303 * np.std(d, ddof=1) / math.sqrt(3)  # t(0.975, 2 df) = 4.303
    assert (mean, low, high) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half))


@pytest.mark.parametrize("d,expected", [([1.0, 1.1, 0.9], "holds"), ([-1.0, -1.1, -0.9], "fails"),
                                        ([1.0, -0.5, 2.0], "open"), ([3.0], "pending"),
                                        ([3.0, 3.1], "holds"), ([3.0, -1.0], "open")])
def test_verdict_needs_the_whole_interval_on_one_side(d, expected):
    assert evidence.verdict(d) == expected


def test_optimum_is_the_simplex_angle():
    assert evidence.optimum_deg(10) == pytest.approx(96.379, abs=1e-3)
    assert evidence.optimum_deg(100) == pytest.approx(90.579, abs=1e-3)


def _write(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _three_seed_rows():
    """CE-LT and AllNC, seeds 0-2: AllNC's few-shot means closer to the simplex angle and its accuracy 3 points
    higher on every seed; its few-shot accuracy +1, -1, +1 points."""
    rows = []
    for seed, (ce, allnc) in enumerate([(80.0, 95.0), (84.0, 97.0), (82.0, 99.0)]):
        rows.append({"method": "ce", "beta": 100, "seed": seed, "test_acc": 0.30 + 0.01 * seed,
                     "few_acc": 0.05, "test_tail_icpa_mean_deg_means": ce})
        rows.append({"method": "allnc", "beta": 100, "seed": seed, "test_acc": 0.33 + 0.01 * seed,
                     "few_acc": 0.06 - 0.02 * (seed == 1), "test_tail_icpa_mean_deg_means": allnc})
    return rows


def _three_seed_csv(path):
    _write(path, _three_seed_rows())
    return path


def test_claims_pair_seeds_and_skip_what_was_not_run(tmp_path):
    rows = _three_seed_rows() + [{"method": "la", "beta": 100, "seed": 0, "test_acc": 0.5, "few_acc": 0.2,
                                  "test_tail_icpa_mean_deg_means": 90.0}]
    _write(tmp_path / "r.csv", rows)
    out = {r["key"]: r for r in evidence.evaluate(evidence.load(tmp_path / "r.csv"), 10)}
    opt = evidence.optimum_deg(10)
    closer = out["allnc_tail_means_test"]  # |opt - CE| - |opt - AllNC|, seed by seed
    expected = [abs(opt - c) - abs(opt - a) for c, a in [(80, 95), (84, 97), (82, 99)]]
    assert closer["seeds"] == "0,1,2" and closer["mean"] == pytest.approx(np.mean(expected))
    assert closer["verdict"] == "holds"
    assert out["acc_vs_ce"]["mean"] == pytest.approx(3.0) and out["acc_vs_ce"]["verdict"] == "holds"
    assert out["acc_vs_la"]["seeds"] == "0" and out["acc_vs_la"]["verdict"] == "pending"
    assert out["hycon_nc1"]["verdict"] == "not run"
    assert out["allnc_tail_means_train"]["optimised_by"]  # a claim that a loss optimises says which
    assert not out["allnc_tail_means_test"]["optimised_by"]


def test_every_claim_names_runs_the_study_trains():
    from experiments.paper_runs import METHOD, STUDY_ORDER

    trained = {(METHOD.get(k, k), 1 if k == "ce_bal" else 100) for k in STUDY_ORDER}
    for claim in evidence.CLAIMS:
        assert claim.a in trained and (claim.b is None or claim.b in trained), claim.key
    assert len({c.key for c in evidence.CLAIMS}) == len(evidence.CLAIMS)


def test_regime_rule_takes_the_lowest_nc1_near_the_best_validation_accuracy():
    rows = [{"candidate": "a", "train_acc": 1.0, "val_acc": 0.50, "nc1": 0.30},
            {"candidate": "b", "train_acc": 1.0, "val_acc": 0.49, "nc1": 0.10},
            {"candidate": "c", "train_acc": 1.0, "val_acc": 0.45, "nc1": 0.01},  # too far below the best
            {"candidate": "d", "train_acc": 0.90, "val_acc": 0.60, "nc1": 0.001}]  # not in the terminal phase
    assert regime_search.choose(rows) == "b"
    assert regime_search.choose([rows[3]]) is None


def test_results_page_preregisters_exactly_the_claims_the_code_evaluates():
    from tests.helpers.paths import REPO

    page = (REPO / "docs" / "RESULTS.md").read_text()
    assert evidence.preregistration() in page  # the table, as printed by --list, word for word


def test_page_tables_are_rewritten_between_their_markers_and_nowhere_else(tmp_path, capsys):
    rows_csv, page = tmp_path / "study.csv", tmp_path / "PAGE.md"
    _write(rows_csv, _three_seed_rows())
    begin, end = evidence.page_markers(rows_csv, page)
    assert begin == "<!-- the tables of study.csv, written by python -m experiments.evidence --page: do not edit -->"
    page.write_text(f"# Title\n\nprose before\n\n{begin}\nstale table\n{end}\n\nprose after\n")
    assert evidence.main(["--csv", str(rows_csv), "--page", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n\nprose before\n\n") and text.endswith(f"{end}\n\nprose after\n")
    assert "stale table" not in text
    assert evidence.page_block(page, rows_csv) == evidence.tables(evidence.load(rows_csv), 10)
    assert "| AllNC's few-shot accuracy is above CE-LT's (points) |" in evidence.page_block(page, rows_csv)
    assert evidence.main(["--csv", str(rows_csv), "--page", str(page)]) == 0 and page.read_text() == text  # idempotent


def test_exploratory_comparisons_are_apart_from_the_preregistered_claims(tmp_path):
    """Comparisons written after their runs were seen are shown under their own heading, only once they have a
    seed, and never enter the pre-registration or the claims CSV."""
    assert not {c.key for c in evidence.EXPLORATORY} & {c.key for c in evidence.CLAIMS}
    rows_csv = tmp_path / "study.csv"
    _write(rows_csv, _three_seed_rows())
    assert "Exploratory" not in evidence.tables(evidence.load(rows_csv), 10)  # no test NC3 column: no seed
    _write(rows_csv, [{**row, "test_nc3_self_duality": 0.25 if row["method"] == "ce" else 0.55}
                      for row in _three_seed_rows()])
    text = evidence.tables(evidence.load(rows_csv), 10)
    exploratory = text.split("**Exploratory comparisons**", 1)[1]
    assert "| AllNC's test-set self-duality (NC3) is better than CE-LT's | test | ce@100 - allnc@100 | 0,1,2 | -0.3 |" \
        in exploratory
    assert "AllNC's test-set self-duality" not in evidence.preregistration()
    assert [r["key"] for r in evidence.evaluate(evidence.load(rows_csv), 10)] == [c.key for c in evidence.CLAIMS]


@pytest.mark.parametrize("body,why", [
    ("# no markers here\n", "found 0 and 0"),
    ("{begin}\nold\n{end}\n{begin}\nold\n{end}\n", "found 2 and 2"),
    ("{end}\nold\n{begin}\n", "in the wrong order"),
    ("{begin}\nold\n", "found 1 and 0"),
    ("quoted in prose: `{begin}` and `{end}`\n", "found 0 and 0"),  # only whole lines are markers
])
def test_a_page_whose_markers_are_not_one_clear_pair_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                                          body, why):
    rows_csv, page, claims = tmp_path / "study.csv", tmp_path / "PAGE.md", tmp_path / "claims.csv"
    _write(rows_csv, _three_seed_rows())
    begin, end = evidence.page_markers(rows_csv, page)
    page.write_text(body.format(begin=begin, end=end))
    before = page.read_bytes()
    assert evidence.main(["--csv", str(rows_csv), "--page", str(page), "--claims", str(claims)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {page} must hold the line '{begin}' once") and f"({why})" in err
    assert err.count("\n") == 1 and page.read_bytes() == before and not claims.exists()


def test_a_missing_page_is_one_sentence(tmp_path, capsys):
    rows_csv = tmp_path / "study.csv"
    _write(rows_csv, _three_seed_rows())
    assert evidence.main(["--csv", str(rows_csv), "--page", str(tmp_path / "nope.md")]) == 1
    assert capsys.readouterr().err == f"error: --page {tmp_path / 'nope.md'}: no such file\n"


def test_a_crlf_page_keeps_its_line_ends_and_relative_paths_name_the_same_block(tmp_path, monkeypatch):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    rows_csv, page = tmp_path / "docs" / "results" / "study.csv", tmp_path / "docs" / "PAGE.md"
    _write(rows_csv, _three_seed_rows())
    begin, end = evidence.page_markers(rows_csv, page)
    assert begin.startswith("<!-- the tables of results/study.csv,")  # as the page links to the CSV
    page.write_bytes(f"prose\r\n{begin}\r\nSTALE TABLE\r\n{end}\r\nmore prose\r\n".encode())
    monkeypatch.chdir(tmp_path)
    assert evidence.main(["--csv", "docs/results/study.csv", "--page", "docs/PAGE.md"]) == 0
    data = page.read_bytes()
    assert data.startswith(f"prose\r\n{begin}\r\n".encode()) and data.endswith(f"{end}\r\nmore prose\r\n".encode())
    assert b"\n" not in data.replace(b"\r\n", b"") and b"STALE TABLE" not in data
    assert evidence.page_block(page, rows_csv) == evidence.tables(evidence.load(rows_csv), 10)


def test_tracking_ranks_each_metric_against_test_accuracy_over_the_long_tailed_runs():
    # ranks of accuracy 1..6 against NC1 ranks 6, 5, 4, 2, 3, 1: rho = 1 - 6 * (25 + 9 + 1 + 4 + 4 + 25) / 210
    acc, nc1 = [0.30, 0.31, 0.32, 0.40, 0.41, 0.42], [1.0, 0.9, 0.8, 0.5, 0.6, 0.3]
    runs = {("ce", 100): {s: {"test_acc": acc[s], "nc1": nc1[s]} for s in range(3)},
            ("allnc", 100): {s: {"test_acc": acc[3 + s], "nc1": nc1[3 + s]} for s in range(3)},
            ("ce", 1): {0: {"test_acc": 0.9, "nc1": 5.0}}}  # balanced: left out
    assert "| nc1 | -0.94 | 6 |" in evidence.tracking(runs)


def test_measures_say_their_unit():
    assert evidence.off("test_tail_icpa_mean_deg_means").unit == "degrees"
    assert evidence.col("test_acc", 100).unit == "accuracy points"
    assert evidence.col("test_nc3_self_duality").unit == "NC3"
    assert evidence.col("nc1_tail").unit == "NC1"
    assert evidence.col("test_nc4_ncc_mismatch").unit == "NC4 mismatch"
    assert evidence.squeeze("x")({"x": 90.0}, 96.0) == pytest.approx(6.0)
    assert math.isnan(evidence.col("absent")({}, 96.0))


def test_claims_figure_draws_each_claim_with_runs_in_its_units_panel(tmp_path):
    from experiments.evidence_figure import claims_figure

    runs = evidence.load(_three_seed_csv(tmp_path / "r.csv"))
    fig = claims_figure(evidence.claim_differences(runs, 10))
    panels = {ax.get_xlabel().split(", ")[1].split(" (")[0]: [t.get_text() for t in ax.get_yticklabels()]
              for ax in fig.axes}
    # the CE-only claim, the AllNC-vs-CE angle claim; the accuracy claims; nothing of runs never made
    assert panels == {"degrees": ["ce_tail_means_squeezed", "allnc_tail_means_test"],
                      "accuracy points": ["acc_vs_ce", "few_vs_ce"]}
    accuracy = fig.axes[1]
    means = [line for line in accuracy.lines if line.get_marker() == "D"]
    # acc_vs_ce holds (filled), few_vs_ce is open (hollow): d = +1, -1, +1 points
    assert [evidence.verdict(d) for d in ([3.0] * 3, [1.0, -1.0, 1.0])] == ["holds", "open"]
    assert means[0].get_markerfacecolor() != "white" and means[1].get_markerfacecolor() == "white"
    bars = {line.get_ydata()[0]: tuple(line.get_xdata()) for line in accuracy.lines if line.get_linestyle() == "-"}
    low, high = evidence.interval([1.0, -1.0, 1.0])[1:]
    assert bars[1] == pytest.approx((low, high))  # few_vs_ce, the second row: its 95 % t interval


def test_claims_figure_tells_the_verdicts_apart_by_shape():
    from types import SimpleNamespace

    from experiments.evidence_figure import claims_figure

    unit = SimpleNamespace(unit="accuracy points")
    pairs = [(SimpleNamespace(key=key, on="accuracy", circular=False, measure=unit), d)
             for key, d in [("up", [3.0, 2.0, 4.0]), ("down", [-3.0, -2.0, -4.0]), ("mixed", [1.0, -1.0, 1.0]),
                            ("one_seed", [2.0])]]
    assert [evidence.verdict(d) for _, d in pairs] == ["holds", "fails", "open", "pending"]
    (ax,) = claims_figure(pairs).axes
    means = {int(line.get_ydata()[0]): line for line in ax.lines if line.get_marker() in ("D", "X")}
    filled = {y: line.get_markerfacecolor() != "white" for y, line in means.items()}
    assert [(means[y].get_marker(), filled[y]) for y in range(4)] == [("D", True), ("X", True), ("D", False),
                                                                       ("D", False)]


def test_evidence_figure_option_writes_pdf_and_png_and_refuses_an_unrelated_csv(tmp_path, capsys):
    csv_path = _three_seed_csv(tmp_path / "r.csv")
    assert evidence.main(["--csv", str(csv_path), "--figure", str(tmp_path / "fig" / "claims.pdf")]) == 0
    assert (tmp_path / "fig" / "claims.pdf").read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "fig" / "claims.png").read_bytes()[:4] == b"\x89PNG"
    _write(tmp_path / "other.csv", [{"method": "sgd", "beta": 1, "seed": 0, "test_acc": 0.5}])
    capsys.readouterr()
    assert evidence.main(["--csv", str(tmp_path / "other.csv"), "--figure", str(tmp_path / "o.pdf")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("no claim has a run in this results CSV: nothing to draw") and "\n" not in err
    assert not (tmp_path / "o.pdf").exists()


def test_the_cifar100_plan_gets_its_claims_tables_and_figure_with_its_own_simplex_angle(tmp_path):
    """The CIFAR-100-LT part trains only the five methods, two seeds: every claim of the ablations and the
    controls is "not run", the others pair seeds 0 and 1 and measure angles from arccos(-1/99), and the
    page's CIFAR-100 block, the claims CSV and the figure are written (the rows here are CIFAR-10's, relabelled
    only in their file name: the code paths are what is tested, before any CIFAR-100 row exists)."""
    from tests.helpers.paths import REPO

    plan = {("ce", 1), ("ce", 100), ("la", 100), ("etf", 100), ("allnc", 100)}
    with open(REPO / "docs" / "results" / "cifar10_lt.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if (r["method"], round(float(r["beta"]))) in plan and r["seed"] in ("0", "1")]
    assert len(rows) == 10
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    _write(docs / "results" / "cifar100_lt.csv", rows)
    page = docs / "RESULTS.md"
    page.write_text((REPO / "docs" / "RESULTS.md").read_text())
    claims_csv = docs / "results" / "cifar100_lt_claims.csv"
    assert evidence.main(["--csv", str(docs / "results" / "cifar100_lt.csv"), "--classes", "100", "--claims",
                          str(claims_csv), "--page", str(page), "--figure", str(tmp_path / "claims.pdf")]) == 0
    with open(claims_csv, newline="") as fh:
        out = {r["key"]: r for r in csv.DictReader(fh)}
    for claim in evidence.CLAIMS:
        ran = {claim.a, claim.b} - {None} <= plan
        assert (out[claim.key]["verdict"] == "not run") == (not ran), claim.key
        assert not ran or out[claim.key]["seeds"] == "0,1", claim.key
    runs = evidence.load(docs / "results" / "cifar100_lt.csv")
    opt = evidence.optimum_deg(100)
    by = {(r["method"], int(r["seed"])): float(r["test_tail_icpa_mean_deg_means"]) for r in rows
          if r["beta"] == "100"}  # balanced CE has no few-shot classes
    closer = [abs(opt - by["ce", s]) - abs(opt - by["allnc", s]) for s in (0, 1)]
    assert float(out["allnc_tail_means_test"]["mean"]) == pytest.approx(np.mean(closer), abs=1e-9)
    assert evidence.page_block(page, docs / "results" / "cifar100_lt.csv") == evidence.tables(runs, 100)
    assert evidence.page_block(page, docs / "results" / "cifar10_lt.csv") == \
        evidence.page_block(REPO / "docs" / "RESULTS.md", REPO / "docs" / "results" / "cifar10_lt.csv")
    assert (tmp_path / "claims.pdf").read_bytes()[:4] == b"%PDF"
