"""Which GBBN head should classify? Each finished run's heads, on a validation split and on the test set.

AllNC's GBBN trains two heads, conventional = W + D and re-balancing = W - D, and by default
classifies with their mean W (docs/ALLNC.md). This script scores every head of each run's last
checkpoint on

* ``val``: CIFAR-10 *training* images that no LDAM subset with the run's n_max holds (positions
  n_max .. n_max + ``--val-per-class`` - 1 of each class's LDAM shuffle,
  :func:`allnc_train.data.lt_unused_indices`), balanced, so a choice made on them never reads the
  test split;
* ``test``: all 10,000 test images,

and writes one CSV row per (run, head, split): top-1 and many / medium / few accuracy as fractions,
and the head's geometry: ``nctools.analyze`` of the run's last training dump with that head's rows
in place of the classifier (NC3, cos-Std of the rows, mean tail angle of the rows; the same on
both splits).
The rule, fixed before looking at the test rows: a run's head is the one with the best ``val``
top-1 (``chosen`` = 1 on its rows); one-head runs have only ``mean``.

    python -m experiments.gbbn_heads runs/cpu_profile/runs/cifar10/allnc_lt_r100 \\
        runs/cpu_profile/runs/cifar10/allnc_lt_r100_s1 --data .cache/cifar10-jpeg --csv docs/results/v1/gbbn_heads.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import nctools
from allnc_train.checkpoint import latest_checkpoint, load_model
from allnc_train.data import decode_images, lt_class_counts, lt_unused_indices, read_image_folder, shot_groups
from allnc_train.evaluate import accuracy_by_group
from experiments.csv_rows import write_rows
from nctools.core import keys as K
from nctools.io.images import normalization
from nctools.io.layout import DUMP_FOLDERS, epoch_files

HEADS = {"mean": 0.0, "conventional": 1.0, "rebalancing": -1.0}  # rows W + s * D
GEOMETRY = [K.NC3_SELF_DUALITY, K.NC2_COS_STD_CLASSIFIER, K.TAIL_ICPA_MEAN_DEG_CLASSIFIER]
COLUMNS = ["run", "method", "seed", "head", "split", "n", "top1", "many", "medium", "few", *GEOMETRY, "chosen"]


def load_split(root: Path, split: str, n_max: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N, 3, 32, 32) and labels of ``val`` or ``test``."""
    paths, labels, _ = read_image_folder(root / ("train" if split == "val" else "test"))
    keep = lt_unused_indices(labels, n_max, per_class) if split == "val" else range(len(labels))
    x = decode_images([paths[i] for i in keep]).float().div_(255)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization("cifar10"))
    return (x - mean) / std, torch.as_tensor(labels[list(keep)])


@torch.no_grad()
def heads(model) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """(rows, bias) of every head: ``mean`` (the inference classifier) and, with two heads,
    ``conventional`` and ``rebalancing``."""
    delta = getattr(model, "head_delta", None)  # BBN's model has one classifier and no such attribute
    if delta is None:
        return {"mean": (model.weight.detach(), None if model.bias is None else model.bias.detach())}
    return {head: (model.weight + sign * delta.weight, None if model.bias is None else model.bias + sign * delta.bias)
            for head, sign in HEADS.items()}


@torch.no_grad()
def features(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(x[i:i + batch]) for i in range(0, len(x), batch)])


def geometry(run_dir: Path, weight: torch.Tensor, class_counts) -> dict[str, float | str]:
    """nctools' summary of the run's last training dump with ``weight`` as the classifier rows
    (empty where nctools gives none: no tail without few-shot classes)."""
    dump = nctools.load_dump(epoch_files((run_dir / DUMP_FOLDERS["train"]).glob("*.safetensors"))[-1])
    summary = nctools.analyze(dump.features.float(), dump.labels, weight=weight, class_counts=class_counts,
                              device="cpu", progress=False).summary
    return {k: "" if summary[k] is None else float(summary[k]) for k in GEOMETRY}


def last_model(run_dir: Path):
    """(model, config) of ``run_dir``'s last checkpoint."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        sys.exit(f"gbbn_heads: {run_dir} has no checkpoint")
    model, cfg, _ = load_model(ckpt)
    return model, cfg


def score_run(run_dir: Path, model, cfg, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    counts = lt_class_counts(cfg.data.n_max, model.num_classes, cfg.data.imbalance_ratio)
    groups = shot_groups(counts)
    rows = []
    classifiers = heads(model)
    shapes = {head: geometry(run_dir, weight, torch.tensor(counts)) for head, (weight, _) in classifiers.items()}
    for split, (x, y) in splits.items():
        h = features(model, x)
        for head, (weight, bias) in classifiers.items():
            acc = accuracy_by_group(F.linear(h, weight, bias), y, groups)
            rows.append({"run": run_dir.name, "method": cfg.method.name, "seed": cfg.seed, "head": head,
                         "split": split, "n": len(y), "chosen": 0, **shapes[head],
                         **{k: "" if acc[a] is None else round(acc[a] / 100, 6)
                            for k, a in [("top1", "top1"), ("many", "many"), ("medium", "medium"), ("few", "few")]}})
    best = max((r for r in rows if r["split"] == "val"), key=lambda r: r["top1"])["head"]
    for r in rows:
        r["chosen"] = int(r["head"] == best)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="allnc-train run directories (CIFAR-10, one n_max)")
    p.add_argument("--data", type=Path, required=True, help="CIFAR-10 image folder (train/, test/)")
    p.add_argument("--val-per-class", type=int, default=300, help="validation images per class [300]")
    p.add_argument("--csv", type=Path, required=True, help="where the CSV goes")
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    models = {run: last_model(run) for run in args.runs}
    n_max = max(cfg.data.n_max for _, cfg in models.values())  # outside every run's subset
    splits = {s: load_split(args.data, s, n_max, args.val_per_class) for s in ("val", "test")}
    rows = [r for run, (model, cfg) in models.items() for r in score_run(run, model, cfg, splits)]
    write_rows(args.csv, COLUMNS, rows)
    for r in rows:
        print(" ".join(f"{k} {r[k]:.4f}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
