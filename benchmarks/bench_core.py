"""Speed and memory of ``nctools.analyze`` against the cost floor and a textbook implementation.

    python benchmarks/bench_core.py                    # N=100,000, d=2048, C=1000 (about 1 minute)
    python benchmarks/bench_core.py --n 20000 --no-textbook

Prints, all measured in this one run (best of ``--repeat`` runs for the timed pieces, since
shared machines are noisy):

* ``analyze``: the whole two-pass analysis, summary and per-class table included;
* the floor: numpy's float32 ``H.T @ H`` on the same array (one H^T H-sized product), timed
  alternately with ``analyze``;
* their ratio, and the peak resident memory during ``analyze`` beyond the features themselves;
* a textbook implementation (a loop over classes building per-class covariances in float64,
  a d x d pseudo-inverse, then nearest-centre distances to every mean), and the speed-up.
"""
from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch
from _table import print_table

import nctools


class PeakRSS:
    """Samples this process's resident memory every few milliseconds while active."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def best_time(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def textbook(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, num_classes: int):
    """How the original notebooks compute NC1 and NC4: per-class covariances, then distances."""
    d = h.shape[1]
    sigma_w = torch.zeros(d, d, dtype=torch.float64)
    means = torch.zeros(num_classes, d, dtype=torch.float64)
    for c in range(num_classes):
        hc = h[y == c].double()
        means[c] = hc.mean(0)
        z = hc - means[c]
        sigma_w += z.T @ z
    sigma_w /= h.shape[0]
    centred = means - means.mean(0)
    sigma_b = centred.T @ centred / num_classes
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True))) / num_classes
    mismatch = 0
    for start in range(0, h.shape[0], 4096):
        chunk = h[start:start + 4096].double()
        nearest = torch.cdist(chunk, means).argmin(1)
        predicted = (chunk @ w.double().T + b.double()).argmax(1)
        mismatch += int((nearest != predicted).sum())
    return nc1, mismatch / h.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-textbook", action="store_true")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(args.n, args.dim, generator=gen)
    y = torch.randint(0, args.classes, (args.n,), generator=gen)
    w = 0.02 * torch.randn(args.classes, args.dim, generator=gen)
    b = 0.1 * torch.randn(args.classes, generator=gen)
    feature_bytes = h.numel() * h.element_size()

    def run():
        result = nctools.analyze(h, y, w, b, device=args.device, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return result

    h_np = h.numpy()
    run()  # warm-up: first-call allocations, thread pools
    # Interleaved, so that both timings meet the same conditions on a shared machine.
    t_analyze = t_floor = float("inf")
    peak = before = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        h_np.T @ h_np
        t_floor = min(t_floor, time.perf_counter() - start)
        with PeakRSS() as mem:
            before = max(before, mem.rss())
            seconds, result = best_time(run, 1)
        t_analyze, peak = min(t_analyze, seconds), max(peak, mem.peak)

    rows = [
        ("input", f"N={args.n:,} d={args.dim} C={args.classes} float32, device {args.device}"),
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, numpy {np.__version__}"),
        (f"nctools.analyze (best of {args.repeat})", f"{t_analyze:.2f} s"),
        ("floor: numpy float32 H.T @ H", f"{t_floor:.2f} s"),
        ("analyze / floor", f"{t_analyze / t_floor:.2f}x"),
        ("features' own size", f"{feature_bytes / 2**30:.2f} GiB"),
        ("peak RSS during analyze", f"{peak / 2**30:.2f} GiB ({(peak - before) / 2**30:+.2f} GiB over the "
                                    f"{before / 2**30:.2f} GiB held before)"),
    ]
    if not args.no_textbook:
        start = time.perf_counter()
        nc1_textbook, nc4_textbook = textbook(h, y, w, b, args.classes)
        t_textbook = time.perf_counter() - start
        rows += [
            ("textbook (per-class covariance loop)", f"{t_textbook:.2f} s"),
            ("speed-up of analyze over textbook", f"{t_textbook / t_analyze:.1f}x"),
            ("NC1 analyze vs textbook", f"{result.summary['nc1']:.9g} vs {nc1_textbook:.9g}"),
            ("NC4 analyze vs textbook", f"{result.summary['nc4_ncc_mismatch']:.6f} vs {nc4_textbook:.6f}"),
        ]
    print_table(rows)


if __name__ == "__main__":
    main()
