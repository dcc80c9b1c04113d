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

``--profile`` adds where ``analyze``'s time goes: its phases (input checks, pass 1, the class means,
pass 2, the summary) timed with CUDA events on a GPU and the wall clock on the CPU, the copy and
product floors on a GPU (one pinned host-to-device copy of the features; the pass-2 products on
device-resident features), torch.profiler's top operators, and the class-vector geometry of this
version (row blocks of the Gram matrix) against the previous one (one (C, C) Gram matrix), timed in
the same run.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import threading
import time
from contextlib import contextmanager

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


class PhaseTimer:
    """Seconds per named phase: CUDA events on a CUDA device (no sync inside a phase), else the wall clock."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.marks: list = []

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.marks.append((name, start, end))
        else:
            tic = time.perf_counter()
            yield
            self.marks.append((name, time.perf_counter() - tic, None))

    def seconds(self) -> list[tuple[str, float]]:
        if self.cuda:
            torch.cuda.synchronize()
            return [(name, start.elapsed_time(end) / 1000) for name, start, end in self.marks]
        return [(name, seconds) for name, seconds, _ in self.marks]


def analyze_in_phases(h, y, w, b, device: str, timer: PhaseTimer):
    """``nctools.analyze``'s own steps (nctools/core/analysis.py), each phase timed."""
    from nctools.core.analysis import auto_chunk_size, chunks
    from nctools.core.statistics import NeuralCollapse
    from nctools.core.validation import check_finite, check_inputs

    with timer.phase("input checks"):
        checked = check_inputs(h, y, w, b, None, None, finite=False)
        for t in (checked.weight, checked.bias):
            check_finite(t, "classifier")
        acc = NeuralCollapse(checked.num_classes, checked.weight, checked.bias, device=device)
    rows = auto_chunk_size(checked.num_classes, h.shape[1])
    with timer.phase("pass 1: class sums (with the copy to the device)"):
        for hc, yc in chunks(checked.features, checked.labels, rows):
            acc.update(hc, yc)
    with timer.phase("class means and pass-2 plan"):
        acc.next_pass()
    with timer.phase("pass 2: residuals, NC1 terms, NCC and logits"):
        for hc, yc in chunks(checked.features, checked.labels, rows):
            acc.update(hc, yc)
    with timer.phase("summary, geometry, per-class table"):
        acc.free_buffers(tables=True)
        return acc.compute()


def previous_frame_summary(vectors: torch.Tensor) -> dict:
    """The class-vector geometry as the previous version (before the blocked geometry) computed it: one
    (C, C) float64 Gram matrix, its ETF gap, then cosines and angles in place, and the pair statistics
    over masked blocks of the upper triangle. Kept here as the reference the new one is timed against."""
    def upper(square):
        k = square.shape[0]
        for s in range(0, k - 1, 1024):
            block = square[s:s + 1024]
            yield block[torch.ones_like(block, dtype=torch.bool).triu_(s + 1)]

    v = vectors.double()
    gram = v @ v.T
    k = gram.shape[0]
    norms = gram.diagonal().sqrt()
    scale, c, etf = float(gram.norm()), 1.0 / math.sqrt(k - 1), 0.0
    for s in range(0, k, 1024):
        block = gram[s:s + 1024] / scale + c / k
        rows = torch.arange(block.shape[0])
        block[rows, rows + s] -= c
        etf += float(block.square().sum())
    cos = gram.div_(norms.unsqueeze(1)).div_(norms.unsqueeze(0)).clamp_(-1.0, 1.0)
    pairs = k * (k - 1) / 2
    mean = sum(float(b.sum()) for b in upper(cos)) / pairs
    std = math.sqrt(sum(float((b - mean).square().sum()) for b in upper(cos)) / pairs)
    max_angle = sum(float((b + 1.0 / (k - 1)).abs().sum()) for b in upper(cos)) / pairs
    icpa = cos.arccos_().rad2deg_().fill_diagonal_(0.0)
    return {"etf_error": math.sqrt(etf), "cos_std": std, "max_angle": max_angle, "icpa": icpa,
            "icpa_mean": sum(float(b.sum()) for b in upper(icpa)) / pairs,
            "icpa_min": min(float(b.min()) for b in upper(icpa))}


def profile(h, y, w, b, args) -> list[tuple[str, str]]:
    """The ``--profile`` rows: phases, floors, top operators, geometry then and now."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from nctools.core.geometry import frame_summary

    rows: list[tuple[str, str]] = []
    timer = PhaseTimer(args.device)
    wall = time.perf_counter()
    analyze_in_phases(h, y, w, b, args.device, timer)
    phases = timer.seconds()
    wall = time.perf_counter() - wall
    clock = "CUDA events" if timer.cuda else "wall clock"
    rows += [(f"  {name} ({clock})", f"{seconds:.3f} s") for name, seconds in phases]
    rows.append(("  sum of phases / whole call (wall)", f"{sum(s for _, s in phases):.3f} / {wall:.3f} s"))
    if timer.cuda:
        pinned = h.pin_memory()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        on_device = pinned.to(args.device, non_blocking=True)
        end.record()
        torch.cuda.synchronize()
        rows.append(("  floor: one pinned host-to-device copy", f"{start.elapsed_time(end) / 1000:.4f} s"))
        wd = w.to(args.device)
        start.record()
        _ = on_device @ wd.T  # (N, C): the largest product of pass 2
        end.record()
        torch.cuda.synchronize()
        rows.append(("  floor: the (N, C) logits product on device", f"{start.elapsed_time(end) / 1000:.4f} s"))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if timer.cuda else [])
    with torch_profile(activities=activities) as prof:
        nctools.analyze(h, y, w, b, device=args.device, progress=False)
    key = "self_cuda_time_total" if timer.cuda else "self_cpu_time_total"
    for event in sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:8]:
        rows.append((f"  torch.profiler: {event.key}", f"{getattr(event, key) / 1e6:.3f} s in {event.count} calls"))
    centred = w.double() - w.double().mean(0)
    t_now, _ = best_time(lambda: frame_summary(centred), args.repeat)
    t_then, _ = best_time(lambda: previous_frame_summary(centred), args.repeat)
    rows += [(f"  geometry of C={args.classes} vectors, this version (row blocks)", f"{t_now:.3f} s"),
             ("  geometry, the previous version (one (C, C) Gram)", f"{t_then:.3f} s")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-textbook", action="store_true")
    parser.add_argument("--profile", action="store_true", help="where analyze's time goes (see above)")
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
    if args.profile:
        rows.append(("profile", ""))
        rows += profile(h, y, w, b, args)
    print_table(rows)


if __name__ == "__main__":
    main()
