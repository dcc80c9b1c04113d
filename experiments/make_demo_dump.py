"""Make the feature dump that ``nctools demo`` ships (``nctools/data/demo_cifar10_lt.safetensors``).

The shipped dump is the final training-set dump of a ResNet-32 trained with plain cross-entropy
to the terminal phase on CIFAR-10-LT: the ``ce_lt_r100`` run of ``python -m experiments.reproduce_paper
--profile cpu_v1`` (LDAM counts, n_max = 500, imbalance ratio 100: 500 ... 5 images per class, 1,236 in
all, 120 epochs, training accuracy above 99 %), re-saved with float16 features (about 170 kB) so
that the package stays small:

    python -m experiments.reproduce_paper --profile cpu_v1 --out runs/cpu_profile  # trains it (and the rest)
    python -m experiments.make_demo_dump --from-run runs/cpu_profile/runs/cifar10/ce_lt_r100

Without ``--from-run`` the script trains a short run of its own first (the earlier demo recipe:
30 epochs, test on the first 50 test images per class), which the comparison figures of
docs/CLI.md use:

    OMP_NUM_THREADS=1 python -m experiments.make_demo_dump --run runs/demo_cifar10_lt   # about 8 min, 2 cores
    python -m experiments.make_demo_dump --ratio 10 --run runs/r10 --out /tmp/r10.safetensors

(One torch thread is faster than two on a machine whose cores are busy with other work.) The run
directory keeps its dumps and last checkpoint, so that ``nctools track`` and ``nctools analyze
<checkpoint> --data <cifar10 folder>`` can be tried on it afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

from nctools.io.layout import record_path

REPO = Path(__file__).resolve().parents[1]
TARBALL_ENV = "NCTOOLS_CIFAR10_TARBALL"  # CIFAR-10 as image-folder JPEGs in a .tar.gz
OUT = REPO / "nctools" / "data" / "demo_cifar10_lt.safetensors"


def extract_cifar10(tarball: Path, into: Path) -> Path:
    """The image-folder root (``train/<class>/*.jpg``) inside the extracted tarball."""
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in [into, *into.iterdir()] if (p / "train").is_dir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, default=os.environ.get(TARBALL_ENV),
                   help=f"CIFAR-10 as image-folder JPEGs in a .tar.gz [${TARBALL_ENV}]")
    p.add_argument("--run", type=Path, default=Path("runs/demo_cifar10_lt"), help="run directory to train into")
    p.add_argument("--from-run", type=Path, help="a finished allnc-train run whose final dump to ship (no training)")
    p.add_argument("--out", type=Path, default=OUT, help="where to write the shipped float16 dump")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-max", type=int, default=500, help="images in the largest class")
    p.add_argument("--ratio", type=float, default=100, help="imbalance ratio n_max / n_min")
    args = p.parse_args()
    import nctools

    tic = time.perf_counter()
    if args.from_run is not None:
        record = json.loads(record_path(args.from_run).read_text())
        if record.get("status") != "finished":
            p.error(f"{args.from_run} has not finished training")
        run, command = args.from_run, f"experiments/make_demo_dump.py --from-run {args.from_run}"
    else:
        record, run = train_own_run(p, args), args.run
        command = f"experiments/make_demo_dump.py --epochs {args.epochs} --n-max {args.n_max} --ratio {args.ratio:g}"
    last = record["epochs"][-1]
    dump = nctools.load_dump(run / last["dump"])
    meta = {**dump.metadata, "source": command, "train_top1": last.get("train_top1"),
            "eval_top1": last.get("eval_top1")}
    nctools.save_dump(args.out, dump.features.half(), dump.labels, weight=dump.weight, bias=dump.bias,
                      class_counts=dump.class_counts, metadata=meta)
    size_kb = args.out.stat().st_size / 1024
    print(f"{args.out}: {dump.num_samples} samples, dim {dump.dim}, epoch {last['epoch']}, "
          f"train top-1 {last.get('train_top1')}, test top-1 {last.get('eval_top1')}, {size_kb:.0f} kB, "
          f"{time.perf_counter() - tic:.0f} s")


def train_own_run(p: argparse.ArgumentParser, args) -> dict:
    """The short CPU run of the earlier demo recipe, trained into ``args.run``; its record."""
    if args.tarball is None:
        p.error(f"pass --tarball (or set {TARBALL_ENV}): the CIFAR-10 JPEG copy to train on")
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    with tempfile.TemporaryDirectory() as tmp:
        root = extract_cifar10(args.tarball, Path(tmp))
        cfg = load_config(CONFIG_DIR / "cifar10_lt_r100_ce.yaml", [
            f"data.root={root}", f"data.n_max={args.n_max}", f"data.imbalance_ratio={args.ratio:g}",
            "data.test_per_class=50", "data.num_workers=0",
            f"optim.epochs={args.epochs}", "optim.batch_size=64", "optim.lr=0.05", "optim.warmup_epochs=1",
            "run.dump_test=false", "run.device=cpu",
        ])
        return train(cfg, args.run)


if __name__ == "__main__":
    main()
