"""The tables of docs/RESULTS.md from docs/results/cifar10_lt.csv: mean +- std over seeds per method,
and the pass criteria of the paper's claims, each measured on the seeds both sides of it have.

    python -m experiments.cifar10_lt_summary --csv docs/results/cifar10_lt.csv \\
        --criteria docs/results/cifar10_lt_criteria.csv

A criterion holds when it holds on the mean over its matched seeds; ``seeds_holding`` says on how
many of those seeds it holds one by one. Accuracies are printed in %, angles in degrees.

``--heads docs/results/v1/gbbn_heads.csv`` (:mod:`experiments.gbbn_heads`) prints both again with every
two-headed (GBBN) run classifying with the head its validation split chose: that head's test
accuracies and its rows' geometry (NC3, cos-Std W, tail ICPA W) replace the inference head's.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.csv_rows import write_rows

OPTIMUM = 96.38  # the simplex-ETF angle for 10 classes, arccos(-1/9), in degrees
LABELS = {("ce", 1): "CE, balanced (same N)", ("ce", 100): "CE-LT", ("la", 100): "LA-LT",
          ("etf", 100): "ETF-LT (fixed ETF classifier, CE)", ("etf_dr", 100): "ETF + DR-LT", ("bbn", 100): "BBN-LT",
          ("allnc", 100): "AllNC-LT", ("allnc_no_hycon", 100): "AllNC w/o HyCon",
          ("allnc_no_p2p", 100): "AllNC w/o P2P", ("allnc_no_gbbn", 100): "AllNC w/o GBBN",
          ("allnc_p2p_align_only", 100): "AllNC, P2P alignment only",
          ("allnc_no_hycon_views", 100): "AllNC w/o HyCon, its views to CE",
          ("allnc_no_decoupling", 100): "AllNC w/o decoupling", ("allnc_running_prototypes", 100):
          "AllNC, running prototypes"}
# (header, CSV column, scale) of the per-method table
TABLE = [("train", "train_acc", 100), ("test", "test_acc", 100), ("many", "many_acc", 100),
         ("medium", "medium_acc", 100), ("few", "few_acc", 100), ("NC1", "nc1", 1), ("tail NC1", "nc1_tail", 1),
         ("cos-Std M", "nc2_cos_std_means", 1), ("cos-Std W", "nc2_cos_std_classifier", 1),
         ("NC3", "nc3_self_duality", 1), ("tail ICPA M", "tail_icpa_mean_deg_means", 1),
         ("tail ICPA W", "tail_icpa_mean_deg_classifier", 1)]


def load(path: Path) -> dict[tuple[str, int], dict[int, dict[str, float]]]:
    """(method, beta) -> seed -> {column: value} (numbers only; empty cells are NaN)."""
    runs: dict[tuple[str, int], dict[int, dict[str, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            values = {}
            for k, v in row.items():
                try:
                    values[k] = float(v) if v != "" else float("nan")
                except ValueError:
                    continue
            runs.setdefault((row["method"], int(float(row["beta"]))), {})[int(row["seed"])] = values
    return runs


# run directory names of experiments/reproduce_paper.py: <kind>[_r<beta>][_s<seed>]
RUN_NAME = re.compile(r"^(?P<kind>.+?)(?:_r(?P<beta>\d+))?(?:_s(?P<seed>\d+))?$")
KIND_METHOD = {"ce_bal": "ce", "ce_lt": "ce", "allnc_lt": "allnc"}
HEAD_COLUMNS = {"top1": "test_acc", "many": "many_acc", "medium": "medium_acc", "few": "few_acc",
                "nc3_self_duality": "nc3_self_duality", "nc2_cos_std_classifier": "nc2_cos_std_classifier",
                "tail_icpa_mean_deg_classifier": "tail_icpa_mean_deg_classifier"}


def with_chosen_heads(runs, heads_csv: Path):
    """``runs`` with each run's test accuracies and row geometry taken from its validation-chosen head."""
    out = {key: {seed: dict(v) for seed, v in seeds.items()} for key, seeds in runs.items()}
    with open(heads_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "test" or row["chosen"] != "1":
                continue
            m = RUN_NAME.match(row["run"])
            key = (KIND_METHOD.get(m["kind"], m["kind"]), 1 if m["kind"] == "ce_bal" else int(m["beta"]))
            seed = int(m["seed"] or 0)
            if seed in out.get(key, {}):
                out[key][seed].update({col: float(row[k]) if row[k] != "" else float("nan")
                                       for k, col in HEAD_COLUMNS.items()})
    return out


def _nanmean(x) -> float:
    with warnings.catch_warnings():  # an all-empty column (no tail on balanced data) is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(x))


def mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    x = np.asarray(values, float) * scale
    if np.isnan(x).all():
        return "-"
    if scale == 100 or abs(_nanmean(x)) >= 1:  # percentages and degrees: one decimal
        fmt = lambda v: f"{v:.1f}"  # noqa: E731
    else:
        fmt = lambda v: f"{v:.{digits}g}"  # noqa: E731
    return fmt(_nanmean(x)) + (f" ± {fmt(np.nanstd(x, ddof=1))}" if len(x) > 1 else "")


def method_table(runs, cols=TABLE) -> str:
    """One line per run of LABELS that ``runs`` has: mean +- std over its seeds of each ``cols`` column."""
    lines = ["| run | seeds | " + " | ".join(c for c, _, _ in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for key, label in LABELS.items():
        if key not in runs:
            continue
        seeds = sorted(runs[key])
        cells = [mean_std([runs[key][s].get(col, np.nan) for s in seeds], scale) for _, col, scale in cols]
        lines.append(f"| {label} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Criterion:
    claim: str
    text: str
    sides: tuple[tuple[str, int], ...]  # the runs it compares: measured on the seeds they all have
    measure: Callable[..., tuple[bool, str]]  # per-side {column: value} -> (holds, what was measured)


def _gap(v: dict) -> tuple[float, float]:
    """Degrees below the optimum of the tail means and the tail rows."""
    return OPTIMUM - v["tail_icpa_mean_deg_means"], OPTIMUM - v["tail_icpa_mean_deg_classifier"]


CE, CE_BAL, ETF, ALLNC = ("ce", 100), ("ce", 1), ("etf", 100), ("allnc", 100)
CRITERIA = [
    Criterion("CE-LT: complete minority collapse", "tail means and tail rows both >= 10 deg below 96.38", (CE,),
              lambda ce: (min(_gap(ce)) >= 10, f"means {ce['tail_icpa_mean_deg_means']:.1f}, rows "
                                               f"{ce['tail_icpa_mean_deg_classifier']:.1f} deg")),
    Criterion("ETF: the classifier-only fix", "rows at 96.38 (within 0.5 deg), tail means >= 10 deg below it", (ETF,),
              lambda e: (abs(_gap(e)[1]) <= 0.5 and _gap(e)[0] >= 10,
                         f"rows {e['tail_icpa_mean_deg_classifier']:.2f}, "
                         f"means {e['tail_icpa_mean_deg_means']:.1f} deg")),
    Criterion("ETF: the classifier-only fix", "NC3 above balanced CE's", (ETF, CE_BAL),
              lambda e, b: (e["nc3_self_duality"] > b["nc3_self_duality"],
                            f"{e['nc3_self_duality']:.3f} vs {b['nc3_self_duality']:.3f}")),
    Criterion("AllNC", "tail means and tail rows within 5 deg of 96.38", (ALLNC,),
              lambda a: (max(map(abs, _gap(a))) <= 5, f"means {a['tail_icpa_mean_deg_means']:.1f}, rows "
                                                      f"{a['tail_icpa_mean_deg_classifier']:.1f} deg")),
    Criterion("AllNC", "NC3 below ETF's", (ALLNC, ETF),
              lambda a, e: (a["nc3_self_duality"] < e["nc3_self_duality"],
                            f"{a['nc3_self_duality']:.3f} vs {e['nc3_self_duality']:.3f}")),
    Criterion("AllNC", "tail NC1 below CE-LT's", (ALLNC, CE),
              lambda a, c: (a["nc1_tail"] < c["nc1_tail"], f"{a['nc1_tail']:.3f} vs {c['nc1_tail']:.3f}")),
    Criterion("AllNC", "test accuracy >= CE-LT's + 3 points", (ALLNC, CE),
              lambda a, c: (a["test_acc"] >= c["test_acc"] + 0.03,
                            f"{100 * a['test_acc']:.1f} vs {100 * c['test_acc']:.1f} % "
                            f"({100 * (a['test_acc'] - c['test_acc']):+.1f})")),
    Criterion("AllNC", "test accuracy >= ETF's", (ALLNC, ETF),
              lambda a, e: (a["test_acc"] >= e["test_acc"],
                            f"{100 * a['test_acc']:.1f} vs {100 * e['test_acc']:.1f} %")),
    Criterion("Ablation", "without HyCon, NC1 worse", (("allnc_no_hycon", 100), ALLNC),
              lambda x, a: (x["nc1"] > a["nc1"], f"{x['nc1']:.3f} vs {a['nc1']:.3f}")),
    Criterion("Ablation", "without P2P, NC3 worse", (("allnc_no_p2p", 100), ALLNC),
              lambda x, a: (x["nc3_self_duality"] > a["nc3_self_duality"],
                            f"{x['nc3_self_duality']:.3f} vs {a['nc3_self_duality']:.3f}")),
    Criterion("Ablation", "without P2P, tail means further from 96.38", (("allnc_no_p2p", 100), ALLNC),
              lambda x, a: (abs(_gap(x)[0]) > abs(_gap(a)[0]),
                            f"{x['tail_icpa_mean_deg_means']:.1f} vs {a['tail_icpa_mean_deg_means']:.1f} deg")),
    Criterion("Ablation", "without GBBN, few-shot accuracy worse", (("allnc_no_gbbn", 100), ALLNC),
              lambda x, a: (x["few_acc"] < a["few_acc"], f"{100 * x['few_acc']:.2f} vs {100 * a['few_acc']:.2f} %")),
]


def evaluate(runs) -> list[dict]:
    rows = []
    for c in CRITERIA:
        if any(side not in runs for side in c.sides):
            rows.append({"claim": c.claim, "criterion": c.text, "seeds": "", "measured": "not run", "holds": "",
                         "seeds_holding": ""})
            continue
        seeds = sorted(set.intersection(*(set(runs[side]) for side in c.sides)))
        mean = [{k: _nanmean([runs[side][s][k] for s in seeds]) for k in runs[side][seeds[0]]}
                for side in c.sides]
        holds, measured = c.measure(*mean)
        each = sum(c.measure(*[runs[side][s] for side in c.sides])[0] for s in seeds)
        rows.append({"claim": c.claim, "criterion": c.text, "seeds": ",".join(map(str, seeds)),
                     "measured": measured + (" (mean)" if len(seeds) > 1 else ""), "holds": "yes" if holds else "no",
                     "seeds_holding": f"{each}/{len(seeds)}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("docs/results/cifar10_lt.csv"))
    p.add_argument("--criteria", type=Path, help="also write the criteria as CSV here")
    p.add_argument("--heads", type=Path, help="experiments/gbbn_heads.py's CSV: also with the validation-chosen heads")
    args = p.parse_args(argv)
    runs = load(args.csv)
    variants = [("the inference head (the mean of the two GBBN heads)", runs)]
    if args.heads:
        variants.append(("the GBBN head chosen on the validation split", with_chosen_heads(runs, args.heads)))
    for name, table in variants:
        print(f"### Classifying with {name}\n\n{method_table(table)}\n")
        rows = evaluate(table)
        print("| claim | criterion | seeds | measured | holds | seeds holding |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['claim']} | {r['criterion']} | {r['seeds']} | {r['measured']} | {r['holds']} | "
                  f"{r['seeds_holding']} |")
        print()
    if args.criteria:
        rows = [{"heads": "inference", **r} for r in evaluate(runs)]
        if args.heads:
            rows += [{"heads": "validation-chosen", **r} for r in evaluate(variants[1][1])]
        write_rows(args.criteria, list(rows[0]), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
