"""The unconstrained-features table: every bundled ``ufm_*`` config, several seeds, NC measured by nctools.

    python -m experiments.ufm_table --out runs/ufm_table [--seeds 0 1 2] [--configs ufm_lt_r100_ce ...]
                                    [--csv docs/results/ufm_table.csv] [--jobs 2]

Trains each (config, seed) into ``OUT/<config>/seed<N>`` with ``allnc-train`` through
:mod:`experiments.launcher` (``--jobs`` at a time, one thread each; runs that already finished are
skipped, killed ones resumed), reads each run's final train-set dump with
``nctools.analyze`` and writes one CSV row per config: the mean and the std (over seeds, ddof = 1)
of NC1, the cos-Std of the centred means and of the classifier rows, NC3 (Papyan's self-duality)
and the few-shot classes' mean pairwise angle of the means and of the rows (degrees); the per-run
values go to ``OUT/runs.csv``. Resumable: rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from experiments.launcher import ALLNC_TRAIN_MODULE, Job, launch, read_record, train_command

CONFIGS = ["ufm_balanced_ce"] + [f"ufm_lt_r100_{m}" for m in
                                 ("ce", "la", "etf", "bbn", "allnc", "allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn")]
METRICS = {"nc1": "nc1", "cos_std_means": "nc2_cos_std_means", "cos_std_classifier": "nc2_cos_std_classifier",
           "nc3": "nc3_self_duality", "tail_icpa_means_deg": "tail_icpa_mean_deg_means",
           "tail_icpa_classifier_deg": "tail_icpa_mean_deg_classifier"}


def job(config: str, seed: int, out: Path) -> Job:
    """The run of ``config`` with ``seed``, in ``OUT/<config>/seed<N>`` (its output on this terminal)."""
    run = out / config / f"seed{seed}"
    return Job(f"{config}/seed{seed}", run, train_command(config, run, [f"seed={seed}", "run.progress=false"],
                                                            ALLNC_TRAIN_MODULE))


def summarize(config: str, seed: int, run: Path) -> dict:
    """A finished run's nctools summary values (on its final train-set dump)."""
    from nctools import analyze, load_dump

    record = read_record(run)
    dump = load_dump(run / record["epochs"][-1]["dump"])
    summary = analyze(dump.features, dump.labels, dump.weight, dump.bias, class_counts=dump.class_counts).summary
    return {"config": config, "seed": seed, **{name: summary[key] for name, key in METRICS.items()},
            "train_accuracy": summary["accuracy"], "few_accuracy": record["epochs"][-1].get("eval_few")}


def _fmt(values: list) -> tuple[str, str]:
    values = [v for v in values if v is not None]
    if not values:
        return "", ""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4g}", f"{std:.2g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder of the runs (one sub-folder per config and seed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--csv", default=None, help="the table (default OUT/ufm_table.csv)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each on one thread)")
    args = p.parse_args(argv)
    out = Path(args.out)
    runs = {(c, s): job(c, s, out) for c in args.configs for s in args.seeds}
    done = launch(list(runs.values()), args.jobs, threads=1).outcomes
    failed = [f"{j.name} ({done[j.name].why})" for j in runs.values() if done[j.name].state != "finished"]
    if failed:
        sys.exit(f"ufm_table: {len(failed)} run(s) did not finish: {'; '.join(failed)}")
    rows = [summarize(c, s, j.run_dir) for (c, s), j in runs.items()]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = Path(args.csv) if args.csv else out / "ufm_table.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config", "seeds", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]])
        for config in args.configs:
            mine = [r for r in rows if r["config"] == config]
            cells = [x for m in METRICS for x in _fmt([r[m] for r in mine])]
            writer.writerow([config, len(mine), *cells])
    print(table.read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
