"""The unconstrained-features table: every bundled ``ufm_*`` config, several seeds, NC measured by nctools.

    python examples/ufm_table.py --out runs/ufm_table [--seeds 0 1 2] [--configs ufm_lt_r100_ce ...]
                                 [--csv docs/results/ufm_table.csv] [--jobs 2]

Trains each (config, seed) into ``OUT/<config>/seed<N>`` with the real training loop (skipping runs
that already finished, resuming killed ones), reads each run's final train-set dump with
``nctools.analyze`` and writes one CSV row per config: the mean and the std (over seeds, ddof = 1)
of NC1, the cos-Std of the centred means and of the classifier rows, NC3 (Papyan's self-duality)
and the few-shot classes' mean pairwise angle of the means and of the rows (degrees); the per-run
values go to ``OUT/runs.csv``. Resumable: rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CONFIGS = ["ufm_balanced_ce"] + [f"ufm_lt_r100_{m}" for m in
                                 ("ce", "la", "etf", "bbn", "allnc", "allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn")]
METRICS = {"nc1": "nc1", "cos_std_means": "nc2_cos_std_means", "cos_std_classifier": "nc2_cos_std_classifier",
           "nc3": "nc3_self_duality", "tail_icpa_means_deg": "tail_icpa_mean_deg_means",
           "tail_icpa_classifier_deg": "tail_icpa_mean_deg_classifier"}


def run_one(config: str, seed: int, out: str) -> dict:
    """Train (or finish, or reuse) one run and return its nctools summary values."""
    import torch

    torch.set_num_threads(1)
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train
    from nctools import analyze, load_dump

    run = Path(out)
    record_file = run / "run.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    if record is None or record.get("status") != "finished":
        cfg = load_config(CONFIG_DIR / f"{config}.yaml", [f"seed={seed}", "run.progress=false"])
        resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
        if not resume and run.exists():  # a run killed before its first checkpoint: start it again
            import shutil

            shutil.rmtree(run)
        record = train(cfg, run, resume=resume)
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
    jobs = [(c, s, str(out / c / f"seed{s}")) for c in args.configs for s in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, *zip(*jobs)))
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
