"""The evidence study's claims, each a paired difference over seeds with a 95 % interval.

    python -m experiments.evidence --csv docs/results/cifar10_lt.csv --claims docs/results/cifar10_lt_claims.csv
    python -m experiments.evidence --csv docs/results/cifar100_lt.csv --classes 100
    python -m experiments.evidence --csv docs/results/cifar10_lt.csv --figure docs/figures/claims_cifar10_lt.pdf
    python -m experiments.evidence --list        # the claims alone, as docs/RESULTS.md pre-registers them
    python -m experiments.evidence --csv docs/results/cifar10_lt.csv --page docs/RESULTS.md  # its tables there

Every claim of docs/RESULTS.md is written below, before the runs it is measured on (the pre-registration:
what decides it, in which direction); ``EXPLORATORY`` holds the comparisons written after their runs had been
seen, shown apart. A claim compares two runs of the results CSV seed by seed, d_s =
f(A_s) - f(B_s) on the seeds both have, or measures one run, d_s = f(A_s), and says that the mean of d
is above zero; it **holds** when the 95 % interval of that mean (Student t over seeds, n - 1 degrees of
freedom) lies wholly above zero, **fails** when it lies wholly below, and is **open** otherwise.
Fewer than two seeds give no interval: **pending**.

Each claim says what it is measured on, because what a loss optimises cannot count as evidence that the
loss works:

* ``train``: the final training-set features, class-mean centring. P2P's cosine, norm and alignment
  terms optimise exactly these angles, NC3 and cos-Std (on batch means), and HyCon pulls the training
  features to their prototypes: on this split such claims hold *by construction*.
* ``train, sample centre``: the same features centred at the sample mean (Papyan's mu_G); no loss of ours
  uses that centre, and under imbalance it differs from the class-mean one.
* ``test``: the final features of the 10,000 test images, which no loss saw.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.cifar10_lt_summary import load, method_table
from experiments.csv_rows import write_rows
from experiments.paired_stats import interval, verdict


def optimum_deg(num_classes: int) -> float:
    """The angle between two vertices of a simplex ETF: arccos(-1 / (C - 1)), in degrees."""
    return math.degrees(math.acos(-1.0 / (num_classes - 1)))


Row = dict[str, float]


@dataclass(frozen=True)
class Claim:
    key: str  # a short stable name
    group: str
    text: str  # what is claimed, in words
    on: str  # train | train, sample centre | test | accuracy
    a: tuple[str, int]  # (method, beta) of the CSV
    b: tuple[str, int] | None  # None: a one-run claim
    measure: Measure  # (row, optimum) -> f; the claim is mean(f(A) - f(B)) > 0 (or f(A) > 0)
    circular: str = ""  # what of ours optimises the measured quantity, if anything

    def differences(self, runs: dict, optimum: float) -> tuple[list[int], list[float]]:
        sides = [self.a] if self.b is None else [self.a, self.b]
        if any(s not in runs for s in sides):
            return [], []
        seeds = sorted(set.intersection(*(set(runs[s]) for s in sides)))
        d = []
        for seed in seeds:
            value = self.measure(runs[self.a][seed], optimum)
            if self.b is not None:
                value -= self.measure(runs[self.b][seed], optimum)
            d.append(value)
        keep = [i for i, v in enumerate(d) if not math.isnan(v)]
        return [seeds[i] for i in keep], [d[i] for i in keep]


@dataclass(frozen=True)
class Measure:
    """f(row, optimum) of a claim: a CSV column as it is (``value``, times ``scale``), or in degrees from the
    simplex angle: below it (``squeeze``, positive when squeezed) or either way (``off``). A column a row
    lacks (an older study without test dumps) gives NaN."""
    column: str
    how: str = "value"  # value | squeeze | off
    scale: float = 1.0

    def __post_init__(self):
        if self.how not in ("value", "squeeze", "off"):
            raise ValueError(f"how must be value, squeeze or off, got {self.how!r}")

    def __call__(self, row: Row, optimum: float) -> float:
        v = row.get(self.column, math.nan)
        return v * self.scale if self.how == "value" else optimum - v if self.how == "squeeze" else abs(optimum - v)

    @property
    def unit(self) -> str:
        """What d is counted in: the panel of the claims figure."""
        if self.how != "value":
            return "degrees"
        if self.column.endswith("_acc"):
            return "accuracy points" if self.scale == 100 else "accuracy"
        for part, unit in (("nc1", "NC1"), ("nc3", "NC3"), ("nc4", "NC4 mismatch")):
            if part in self.column:
                return unit
        return self.column


def col(name: str, scale: float = 1.0) -> Measure:
    """A column of the CSV."""
    return Measure(name, "value", scale)


def squeeze(name: str) -> Measure:
    """Degrees below the simplex angle (positive: squeezed)."""
    return Measure(name, "squeeze")


def off(name: str) -> Measure:
    """Degrees away from the simplex angle, either way."""
    return Measure(name, "off")


CE, CE_BAL, LA, ETF, ALLNC = ("ce", 100), ("ce", 1), ("la", 100), ("etf", 100), ("allnc", 100)
P2P_OPTIMISES = "P2P's cosine and norm terms (class-mean centred training means and rows)"
P2P_ALIGNS = "P2P's alignment term, and HyCon with the rows as prototypes (class-mean centred training NC3)"
HYCON_OPTIMISES = "HyCon (training features pulled to their prototypes)"
CLAIMS = [
    # --- minority collapse under CE, and what a classifier-only fix leaves
    Claim("ce_tail_means_squeezed", "Minority collapse", "CE-LT squeezes the few-shot class means below the simplex "
          "angle", "test", CE, None, squeeze("test_tail_icpa_mean_deg_means")),
    Claim("ce_tail_rows_squeezed", "Minority collapse", "CE-LT squeezes the few-shot classifier rows below the "
          "simplex angle", "train", CE, None, squeeze("tail_icpa_mean_deg_classifier")),
    Claim("etf_tail_means_squeezed", "Minority collapse", "with a fixed ETF classifier the few-shot means stay "
          "squeezed", "test", ETF, None, squeeze("test_tail_icpa_mean_deg_means")),
    # --- what AllNC restores
    Claim("allnc_tail_means_test", "AllNC vs CE-LT", "AllNC puts the few-shot means closer to the simplex angle",
          "test", CE, ALLNC, off("test_tail_icpa_mean_deg_means")),
    Claim("allnc_tail_means_sample", "AllNC vs CE-LT", "AllNC puts the few-shot means closer to the simplex angle",
          "train, sample centre", CE, ALLNC, off("tail_icpa_mean_deg_means_sample_center")),
    Claim("allnc_tail_means_train", "AllNC vs CE-LT", "AllNC puts the few-shot means closer to the simplex angle",
          "train", CE, ALLNC, off("tail_icpa_mean_deg_means"), circular=P2P_OPTIMISES),
    Claim("allnc_tail_rows", "AllNC vs CE-LT", "AllNC puts the few-shot rows closer to the simplex angle",
          "train", CE, ALLNC, off("tail_icpa_mean_deg_classifier"), circular=P2P_OPTIMISES),
    Claim("allnc_nc3_test", "AllNC vs ETF", "AllNC's self-duality (NC3) is better than the fixed ETF's", "test",
          ETF, ALLNC, col("test_nc3_self_duality")),
    Claim("allnc_nc3_sample", "AllNC vs ETF", "AllNC's self-duality (NC3) is better than the fixed ETF's",
          "train, sample centre", ETF, ALLNC, col("nc3_self_duality_sample_center")),
    Claim("allnc_nc3_train", "AllNC vs ETF", "AllNC's self-duality (NC3) is better than the fixed ETF's", "train",
          ETF, ALLNC, col("nc3_self_duality"), circular=P2P_ALIGNS),
    Claim("allnc_tail_nc1_test", "AllNC vs CE-LT", "AllNC's few-shot classes are more compact (tail NC1)", "test",
          CE, ALLNC, col("test_nc1_tail")),
    Claim("allnc_tail_nc1_train", "AllNC vs CE-LT", "AllNC's few-shot classes are more compact (tail NC1)", "train",
          CE, ALLNC, col("nc1_tail"), circular=HYCON_OPTIMISES),
    Claim("allnc_ncc_test", "AllNC vs CE-LT", "AllNC's classifier agrees more with nearest class centre (NC4)",
          "test", CE, ALLNC, col("test_nc4_ncc_mismatch")),
    # --- accuracy
    Claim("acc_vs_ce", "Accuracy", "AllNC's test accuracy is above CE-LT's (points)", "accuracy", ALLNC, CE,
          col("test_acc", 100)),
    Claim("acc_vs_la", "Accuracy", "AllNC's test accuracy is above LA's (points)", "accuracy", ALLNC, LA,
          col("test_acc", 100)),
    Claim("acc_vs_etf", "Accuracy", "AllNC's test accuracy is above the fixed ETF's (points)", "accuracy", ALLNC, ETF,
          col("test_acc", 100)),
    Claim("few_vs_ce", "Accuracy", "AllNC's few-shot accuracy is above CE-LT's (points)", "accuracy", ALLNC, CE,
          col("few_acc", 100)),
    # --- ablations: each part does what the paper says
    Claim("hycon_nc1", "Ablations", "without HyCon, the test features are less compact (NC1)", "test",
          ("allnc_no_hycon", 100), ALLNC, col("test_nc1")),
    Claim("p2p_nc3", "Ablations", "without P2P, self-duality is worse (NC3)", "test", ("allnc_no_p2p", 100), ALLNC,
          col("test_nc3_self_duality")),
    Claim("p2p_tail_means", "Ablations", "without P2P, the few-shot means are further from the simplex angle",
          "test", ("allnc_no_p2p", 100), ALLNC, off("test_tail_icpa_mean_deg_means")),
    Claim("gbbn_few", "Ablations", "without GBBN, few-shot accuracy is lower (points)", "accuracy", ALLNC,
          ("allnc_no_gbbn", 100), col("few_acc", 100)),
    # --- controls: what the ablations mix up
    Claim("views_nc1", "Controls", "HyCon's NC1 gain is not its views: HyCon off with its views fed to CE is less "
          "compact than AllNC", "test", ("allnc_no_hycon_views", 100), ALLNC, col("test_nc1")),
    Claim("targets_tail_means", "Controls", "P2P's cosine and norm targets matter: alignment alone leaves the "
          "few-shot means further from the simplex angle", "test", ("allnc_p2p_align_only", 100), ALLNC,
          off("test_tail_icpa_mean_deg_means")),
    Claim("align_only_nc3", "Controls", "P2P's alignment term alone still gives better NC3 than no P2P", "test",
          ("allnc_no_p2p", 100), ("allnc_p2p_align_only", 100), col("test_nc3_self_duality")),
    Claim("prototypes_nc3", "Controls", "HyCon with running class means as prototypes (not the rows) leaves "
          "self-duality worse", "test", ("allnc_running_prototypes", 100), ALLNC, col("test_nc3_self_duality")),
    Claim("decoupling_acc", "Controls", "progressive decoupling (eta-scaled encoder gradient) lifts test accuracy "
          "(points)", "accuracy", ALLNC, ("allnc_no_decoupling", 100), col("test_acc", 100)),
    Claim("resampling_few", "Controls", "GBBN's few-shot gain is more than re-sampling: without decoupling, few-shot "
          "accuracy is lower (points)", "accuracy", ALLNC, ("allnc_no_decoupling", 100), col("few_acc", 100)),
]
# Comparisons written after the runs they compare had been seen (2026-12-07, from seeds 0 and 1): the same
# statistics, never a verdict that counts as evidence. They ask of the headline results what a reviewer would.
EXPLORATORY_SINCE = "2026-12-07"
EXPLORATORY = [
    Claim("allnc_nc3_test_vs_ce", "Exploratory", "AllNC's test-set self-duality (NC3) is better than CE-LT's",
          "test", CE, ALLNC, col("test_nc3_self_duality")),
    Claim("targets_nc3_test", "Exploratory", "P2P's cosine and norm targets improve test-set self-duality (NC3) "
          "over its alignment term alone", "test", ("allnc_p2p_align_only", 100), ALLNC,
          col("test_nc3_self_duality")),
    Claim("hycon_loss_acc", "Exploratory", "HyCon's loss lifts test accuracy over its views fed to CE (points)",
          "accuracy", ALLNC, ("allnc_no_hycon_views", 100), col("test_acc", 100)),
]
# The per-method table of the study: accuracy, then geometry on training features (class-mean and sample-mean
# centring) and on test features.
TABLE = [("test", "test_acc", 100), ("few", "few_acc", 100), ("NC1", "nc1", 1), ("test NC1", "test_nc1", 1),
         ("test tail NC1", "test_nc1_tail", 1), ("cos-Std M", "nc2_cos_std_means", 1),
         ("test cos-Std M", "test_nc2_cos_std_means", 1), ("NC3", "nc3_self_duality", 1),
         ("NC3 sample", "nc3_self_duality_sample_center", 1), ("test NC3", "test_nc3_self_duality", 1),
         ("tail ICPA M", "tail_icpa_mean_deg_means", 1), ("test tail ICPA M", "test_tail_icpa_mean_deg_means", 1),
         ("tail ICPA W", "tail_icpa_mean_deg_classifier", 1), ("test NC4", "test_nc4_ncc_mismatch", 1)]
COLUMNS = ["key", "group", "claim", "on", "a", "b", "seeds", "n", "mean", "ci_low", "ci_high", "verdict",
           "optimised_by"]


def _name(side: tuple[str, int] | None) -> str:
    return "" if side is None else f"{side[0]}@{side[1]}"


def evaluate(runs: dict, num_classes: int, claims=CLAIMS) -> list[dict]:
    """One row per claim of ``claims`` (the CSV's columns)."""
    optimum = optimum_deg(num_classes)
    rows = []
    for c in claims:
        seeds, d = c.differences(runs, optimum)
        mean, low, high = interval(d) if len(d) >= 2 else (float(np.mean(d)) if d else float("nan"), math.nan,
                                                           math.nan)
        rows.append({"key": c.key, "group": c.group, "claim": c.text, "on": c.on, "a": _name(c.a), "b": _name(c.b),
                     "seeds": ",".join(map(str, seeds)), "n": len(d),
                     "mean": mean, "ci_low": low, "ci_high": high,
                     "verdict": verdict(d) if d else "not run", "optimised_by": c.circular})
    return rows


def claim_differences(runs: dict, num_classes: int, claims=CLAIMS) -> list[tuple[Claim, list[float]]]:
    """(claim, its per-seed differences d) for each claim of ``claims`` that has at least one seed."""
    optimum = optimum_deg(num_classes)
    pairs = [(claim, claim.differences(runs, optimum)[1]) for claim in claims]
    return [(claim, d) for claim, d in pairs if d]


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| claim | measured on | d = A - B (claimed > 0) | seeds | mean d | 95 % interval | verdict | "
             "optimised by |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pair = r["a"] if not r["b"] else f"{r['a']} - {r['b']}"
        ci = "-" if r["ci_low"] != r["ci_low"] else f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        lines.append(f"| {r['claim']} | {r['on']} | {pair} | {r['seeds'] or '-'} | {_fmt(r['mean'])} | "
                     f"{ci} | {r['verdict']} | {r['optimised_by'] or 'nothing'} |")
    return "\n".join(lines)


TRACKED = ("test_nc1", "test_nc1_tail", "test_nc2_cos_std_means", "test_nc3_self_duality", "test_nc4_ncc_mismatch",
           "nc1", "nc2_cos_std_means", "nc2_cos_std_classifier", "nc3_self_duality", "nc3_self_duality_sample_center")


def tracking(runs: dict) -> str:
    """Spearman's rank correlation of each metric with test accuracy over every long-tailed run (no verdict)."""
    import pandas as pd

    rows = [values for (_, beta), seeds in runs.items() if beta != 1 for values in seeds.values()]
    table = pd.DataFrame(rows)
    lines = ["| metric | Spearman with test accuracy | runs |", "|---|---|---|"]
    for metric in TRACKED:
        if metric not in table or table[metric].notna().sum() < 3:
            continue
        pair = table[[metric, "test_acc"]].dropna()
        lines.append(f"| {metric} | {pair[metric].corr(pair['test_acc'], method='spearman'):+.2f} | {len(pair)} |")
    return "\n".join(lines)


def preregistration() -> str:
    """The claims as a table, before any result: what decides each one."""
    lines = ["| key | claim | measured on | d = A - B, claimed > 0 | optimised by |", "|---|---|---|---|---|"]
    for c in CLAIMS:
        pair = _name(c.a) if c.b is None else f"{_name(c.a)} - {_name(c.b)}"
        lines.append(f"| `{c.key}` | {c.text} | {c.on} | {pair} | {c.circular or 'nothing'} |")
    return "\n".join(lines)


def tables(runs: dict, num_classes: int) -> str:
    """What a results page shows of a CSV: the per-method table (mean ± standard deviation over seeds), every
    pre-registered claim with its interval and verdict, the exploratory comparisons that have a seed, and how
    each metric ranks with test accuracy."""
    exploratory = [r for r in evaluate(runs, num_classes, EXPLORATORY) if r["n"]]
    text = method_table(runs, TABLE) + "\n\n" + markdown(evaluate(runs, num_classes))
    if exploratory:
        text += (f"\n\n**Exploratory comparisons**, written on {EXPLORATORY_SINCE} after the runs they compare "
                 "had been seen: the same statistics, but a verdict here describes, it is no evidence.\n\n"
                 + markdown(exploratory))
    return text + "\n\n" + tracking(runs)


def page_markers(csv_path: Path, page_path: Path) -> tuple[str, str]:
    """The lines that enclose the tables of the results CSV ``csv_path`` in the page at ``page_path``; they
    name the CSV as the page links to it (relative to the page's folder)."""
    name = Path(os.path.relpath(Path(csv_path).resolve(), Path(page_path).resolve().parent)).as_posix()
    return (f"<!-- the tables of {name}, written by python -m experiments.evidence --page: do not edit -->",
            f"<!-- end of the tables of {name} -->")


def _split_page(page_path: Path, csv_path: Path) -> tuple[list[str], list[str], list[str]]:
    """The page's lines (ends kept) before its tables of ``csv_path`` (begin marker included), the tables, and
    the lines after (end marker included). The markers count only as whole lines, each exactly once, begin
    first: anything else is refused, since rewriting the wrong span would lose prose."""
    page_path = Path(page_path)
    if not page_path.is_file():
        raise ValueError(f"--page {page_path}: no such file")
    lines = page_path.read_bytes().decode("utf-8").splitlines(keepends=True)  # bytes, ends kept: CRLF stays CRLF
    begin, end = page_markers(csv_path, page_path)
    at = {m: [i for i, line in enumerate(lines) if line.rstrip("\r\n") == m] for m in (begin, end)}
    found = (len(at[begin]), len(at[end]))
    if found != (1, 1) or at[end][0] < at[begin][0]:
        why = "in the wrong order" if found == (1, 1) else f"found {found[0]} and {found[1]}"
        raise ValueError(f"{page_path} must hold the line '{begin}' once and, after it, the line '{end}' once "
                         f"({why})")
    i, j = at[begin][0], at[end][0]
    return lines[:i + 1], lines[i + 1:j], lines[j:]


def page_block(page_path: Path, csv_path: Path) -> str:
    """The tables of ``csv_path`` in the page at ``page_path``, as written there (ValueError: no such block)."""
    return "".join(_split_page(page_path, csv_path)[1]).replace("\r\n", "\n").strip("\n")


def update_page(page_path: Path, csv_path: Path, runs: dict, num_classes: int) -> None:
    """Rewrite (atomically) the tables of ``csv_path`` in the page at ``page_path``, between its markers, so
    that the page shows what the rows give; the rest of the page is left as it is, byte for byte."""
    from nctools.io.atomic import atomic_write

    head, _, tail = _split_page(page_path, csv_path)
    newline = "\r\n" if head[-1].endswith("\r\n") else "\n"
    text = "".join(head) + tables(runs, num_classes).replace("\n", newline) + newline + "".join(tail)
    atomic_write(Path(page_path), lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("docs/results/cifar10_lt.csv"))
    p.add_argument("--classes", type=int, default=10, help="number of classes (the simplex angle) [10]")
    p.add_argument("--claims", type=Path, help="also write the claims as CSV here")
    p.add_argument("--figure", type=Path, help="also draw the claims (per-seed d, mean, 95 %% interval) as this "
                   "PDF, with a PNG twin beside it")
    p.add_argument("--page", type=Path, help="also rewrite this page's tables of --csv (between its marker "
                   "comments) to what the rows give")
    p.add_argument("--list", action="store_true", help="print the pre-registered claims and exit")
    args = p.parse_args(argv)
    if args.figure and args.figure.suffix != ".pdf":
        p.error(f"--figure {args.figure}: give a .pdf path (a .png twin is written beside it)")
    if args.list:
        print(preregistration())
        return 0
    if args.page:
        try:
            _split_page(args.page, args.csv)  # before anything is written: a bad page leaves no half-made outputs
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    runs = load(args.csv)
    print(tables(runs, args.classes))
    if args.claims:
        write_rows(args.claims, COLUMNS, evaluate(runs, args.classes))
    if args.page:
        update_page(args.page, args.csv, runs, args.classes)
    if args.figure:
        from experiments.evidence_figure import claims_figure, save_figure

        try:
            fig = claims_figure(claim_differences(runs, args.classes),
                                title=f"{args.csv}: the claims, per seed and over seeds")
        except ValueError as err:
            print(f"error: {args.csv}: {err}", file=sys.stderr)
            return 1
        save_figure(fig, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
