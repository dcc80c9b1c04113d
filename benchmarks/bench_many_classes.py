"""Many classes: time and peak memory of ``nctools.analyze`` alone and of the whole ``nctools analyze``
command (analysis, metrics.json, per_class.csv, figures, report.pdf) at C classes, d = 16, and of the
command with ``--no-figures`` (the two tables only).

Each measurement runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own.
Synthetic features: C class means in d = 16 (so d < C - 1, as for a language-model head), N samples
spread evenly over the classes, a classifier near the means.

    python benchmarks/bench_many_classes.py --classes 3000 20000 --n 100000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Each run prints its wall time and its own peak resident memory (ru_maxrss, KiB on Linux) as JSON. torch is
# imported before the clock starts in both (nctools imports it lazily, the command at once): its import, about
# 4 s here, is the same for both and is not what is measured.
_ANALYSE = """
import json, resource, sys, time, torch, nctools
tic = time.perf_counter()
dump = nctools.load_dump(sys.argv[1])
nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, device="cpu")
print(json.dumps({"seconds": time.perf_counter() - tic,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""
_COMMAND = """
import json, resource, sys, time
from nctools.cli import main
tic = time.perf_counter()
try:
    main(["analyze", sys.argv[1], "--out", sys.argv[2], "--device", "cpu", "--quiet", *sys.argv[3:]])
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps({"seconds": time.perf_counter() - tic,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def make_dump(path: Path, classes: int, n: int, dim: int) -> None:
    import torch

    import nctools

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    means = torch.randn(classes, dim, generator=g)
    features = means[labels] + 0.1 * torch.randn(n, dim, generator=g)
    weight = means + 0.01 * torch.randn(classes, dim, generator=g)
    nctools.save_dump(path, features, labels, weight=weight, bias=torch.zeros(classes))


def measured(code: str, *args: str) -> dict:
    """``{"seconds", "peak_gib"}`` of ``code`` run in a fresh Python process (the last line it prints)."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the measurement failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[3000, 20000])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    args = parser.parse_args(argv)
    print(f"{'C':>7} {'analyze s':>10} {'analyze GiB':>12} {'CLI s':>8} {'CLI GiB':>8} {'no-figures s':>13} "
          f"{'GiB':>6}")
    for classes in args.classes:
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "dump.safetensors"
            make_dump(dump, classes, args.n, args.dim)
            analysed = measured(_ANALYSE, str(dump))
            command = measured(_COMMAND, str(dump), str(Path(tmp) / "report"))
            tables = measured(_COMMAND, str(dump), str(Path(tmp) / "tables"), "--no-figures")
        print(f"{classes:>7} {analysed['seconds']:>10.1f} {analysed['peak_gib']:>12.2f} {command['seconds']:>8.1f} "
              f"{command['peak_gib']:>8.2f} {tables['seconds']:>13.1f} {tables['peak_gib']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
