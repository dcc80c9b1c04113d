"""Make the feature dump that ``nctools demo`` ships (``nctools/data/demo_cifar10_lt.safetensors``).

A short, real long-tailed run on the CPU: the bundled trainer trains ResNet-32 with plain
cross-entropy for 30 epochs on a CIFAR-10-LT subset (LDAM counts, n_max = 500, imbalance ratio
100, so the classes hold 500 ... 5 images, 1,236 in all) taken from the offline JPEG copy of
CIFAR-10, and its last train-set dump is re-saved with float16 features (about 170 kB) so that
the package stays small.

    OMP_NUM_THREADS=1 python examples/make_demo_dump.py         # about 8 minutes on a shared 2-core CPU
    python examples/make_demo_dump.py --ratio 10 --run runs/r10 --out /tmp/r10.safetensors

(One torch thread is faster than two on a machine whose cores are busy with other work.) The run
directory (``--run``) keeps every epoch's dump and the last checkpoint, so that ``nctools track``
and ``nctools analyze <checkpoint> --data <cifar10 folder>`` can be tried on it afterwards.
"""
from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from pathlib import Path

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
    p.add_argument("--out", type=Path, default=OUT, help="where to write the shipped float16 dump")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-max", type=int, default=500, help="images in the largest class")
    p.add_argument("--ratio", type=float, default=100, help="imbalance ratio n_max / n_min")
    args = p.parse_args()
    if args.tarball is None:
        p.error(f"pass --tarball (or set {TARBALL_ENV}): the CIFAR-10 JPEG copy to train on")

    import nctools
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = extract_cifar10(args.tarball, Path(tmp))
        cfg = load_config(CONFIG_DIR / "cifar10_lt_r100_ce.yaml", [
            f"data.root={root}", f"data.n_max={args.n_max}", f"data.imbalance_ratio={args.ratio:g}",
            "data.test_per_class=50", "data.num_workers=0",
            f"optim.epochs={args.epochs}", "optim.batch_size=64", "optim.lr=0.05", "optim.warmup_epochs=1",
            "run.dump_test=false", "run.device=cpu",
        ])
        record = train(cfg, args.run)
    last = record["epochs"][-1]
    dump = nctools.load_dump(args.run / last["dump"])
    command = f"examples/make_demo_dump.py --epochs {args.epochs} --n-max {args.n_max} --ratio {args.ratio:g}"
    meta = {**dump.metadata, "source": command}
    nctools.save_dump(args.out, dump.features.half(), dump.labels, weight=dump.weight, bias=dump.bias,
                      class_counts=dump.class_counts, metadata=meta)
    size_kb = args.out.stat().st_size / 1024
    print(f"{args.out}: {dump.num_samples} samples, dim {dump.dim}, epoch {last['epoch']}, "
          f"test top-1 {last.get('eval_top1')}, {size_kb:.0f} kB, {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
