"""Which CPU-size recipe makes balanced CE collapse? The regime of the CIFAR-10-LT study, chosen on a
validation split.

The first CPU study (docs/results/v1/) trained ResNet-32 for 120 epochs at weight decay 2e-4: balanced
CE reached 100 % training accuracy without collapsing (NC1 0.49, cos-Std of the means 0.23), so what AllNC
did to the geometry there was imposed, not restored. Weight decay is the lever that drives the terminal
phase towards a simplex at a fixed number of steps (Rangamani and Banburski-Fahey 2022; Hong and Ling
2023), so the candidates keep that study's 120 epochs, batch 64, lr 0.05 cosine, and vary it:

    wd5e-4  wd1e-3  wd2e-3  wd5e-3  wd1e-2

The first three ran first (5e-3 was started beside them and paused at epoch 11 to give them the CPU).
The rule chose 2e-3, the grid's upper edge, so the grid was extended upwards (5e-3 resumed, 1e-2 added)
and the same rule applied to all five before the regime was fixed.
Each candidate trains balanced CE (124 images per class, 1,240 in all: the N of the long-tailed set)
with test evaluation off (``data.test_per_class=1``: ten test images, never read here) and is scored on

* its last training-set dump: NC1, cos-Std of the centred means and of the rows, NC3, training accuracy;
* ``val``: 300 CIFAR-10 *training* images per class that no run of the study trains on (positions 500 ..
  799 of each class's LDAM shuffle, :func:`allnc_train.data.lt_unused_indices`).

The rule, written before any candidate finished: keep the candidates in the terminal phase (training
accuracy >= 99 %); among them, those whose val top-1 is within 2 points of the best one; of those, the one
with the lowest NC1. ``docs/results/regime_search.csv`` has one row per candidate, ``chosen`` = 1 on the
rule's choice.

    python -m experiments.regime_search --data .cache/cifar10-jpeg --out runs/regime --jobs 4
    python -m experiments.regime_search --data .cache/cifar10-jpeg --out runs/regime --score-only \\
        --csv docs/results/regime_search.csv
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import nctools
from experiments.csv_rows import write_rows
from experiments.gbbn_heads import features, last_model, load_split
from experiments.launcher import Job, launch, train_command
from nctools.core import keys as K
from nctools.io.layout import DUMP_FOLDERS, epoch_files, record_path

WEIGHT_DECAYS = {"wd5e-4": 5e-4, "wd1e-3": 1e-3, "wd2e-3": 2e-3, "wd5e-3": 5e-3, "wd1e-2": 1e-2}
VAL_AFTER = 500  # val images come after the n_max of the long-tailed study, so no run of it trains on them
VAL_PER_CLASS = 300
TERMINAL_TRAIN_ACC = 0.99
VAL_MARGIN = 0.02
GEOMETRY = {"nc1": K.NC1, "nc2_cos_std_means": K.NC2_COS_STD_MEANS,
            "nc2_cos_std_classifier": K.NC2_COS_STD_CLASSIFIER, "nc3_self_duality": K.NC3_SELF_DUALITY}
COLUMNS = ["candidate", "weight_decay", "epochs", "train_acc", "val_acc", *GEOMETRY, "chosen"]


def overrides(weight_decay: float, root: str) -> list[str]:
    """The ``--set`` list of a candidate: the first CPU study's recipe at ``weight_decay``, balanced, no test."""
    return [f"data.root={root}", "data.n_max=124", "data.num_workers=0", "data.test_per_class=1",
            "optim.epochs=120", "optim.batch_size=64", "optim.lr=0.05", "optim.warmup_epochs=5",
            f"optim.weight_decay={weight_decay:g}", "run.device=cpu", "run.dump_test=false", "run.progress=false",
            "run.eval_every=120", "run.dump_every=20", "run.dump_dtype=float16"]


def jobs(out: Path, root: str) -> list[Job]:
    return [Job(name, out / f"ce_bal_{name}", train_command("cifar10_balanced_ce", out / f"ce_bal_{name}",
                                                           overrides(wd, root)), log=out / f"ce_bal_{name}.log")
            for name, wd in WEIGHT_DECAYS.items()]


def score(run_dir: Path, val: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """One candidate's row (without ``chosen``)."""
    record = json.loads(record_path(run_dir).read_text())
    if record.get("status") != "finished":
        raise RuntimeError(f"{run_dir} has not finished")
    dump = nctools.load_dump(epoch_files((run_dir / DUMP_FOLDERS["train"]).glob("*.safetensors"))[-1])
    summary = nctools.analyze(dump.features.float(), dump.labels, weight=dump.weight, bias=dump.bias,
                              device="cpu", progress=False).summary
    model, cfg = last_model(run_dir)
    x, y = val
    with torch.no_grad():
        val_acc = (F.linear(features(model, x), model.weight, model.bias).argmax(1) == y).float().mean().item()
    last = record["epochs"][-1]
    return {"candidate": run_dir.name.removeprefix("ce_bal_"), "weight_decay": cfg.optim.weight_decay,
            "epochs": last["epoch"], "train_acc": round(last["train_top1"] / 100, 6), "val_acc": round(val_acc, 6),
            **{col: float(summary[key]) for col, key in GEOMETRY.items()}}


def choose(rows: list[dict]) -> str | None:
    """The rule (module docstring): terminal phase, val top-1 within 2 points of the best, lowest NC1."""
    terminal = [r for r in rows if r["train_acc"] >= TERMINAL_TRAIN_ACC]
    if not terminal:
        return None
    best = max(r["val_acc"] for r in terminal)
    near = [r for r in terminal if r["val_acc"] >= best - VAL_MARGIN]
    return min(near, key=lambda r: r["nc1"])["candidate"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="CIFAR-10 image folder (train/, test/)")
    p.add_argument("--out", type=Path, default=Path("runs/regime"), help="where the candidate runs go")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time [2]")
    p.add_argument("--score-only", action="store_true", help="score the finished candidates; train nothing")
    p.add_argument("--csv", type=Path, default=Path("docs/results/regime_search.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = str(Path(args.data).resolve())
    if not args.score_only:
        launch(jobs(args.out, root), args.jobs, plan=args.out / "plan.json", log=print)
    val = load_split(Path(root), "val", VAL_AFTER, VAL_PER_CLASS)
    rows = [score(job.run_dir, val) for job in jobs(args.out, root)]
    chosen = choose(rows)
    for r in rows:
        r["chosen"] = int(r["candidate"] == chosen)
        print(" ".join(f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in COLUMNS))
    write_rows(args.csv, COLUMNS, rows)
    print(f"chosen: {chosen or 'none (no candidate reached the terminal phase)'}; wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
