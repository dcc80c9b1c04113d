"""Analyse a dump larger than comfortable for memory, read from disk chunk by chunk.

    python benchmarks/bench_out_of_core.py                       # iNaturalist-2018-shaped
    python benchmarks/bench_out_of_core.py --n 115846 --classes 1000   # ImageNet-LT-shaped

Writes a synthetic sharded dump (``part-*.safetensors``, float16 features by default) into a
temporary folder, then in a fresh process loads it with ``load_dump(folder, lazy=True)`` and runs
``nctools.analyze``; that process reports its wall time and its peak resident memory
(``ru_maxrss``, imports included). The floor, measured in the same run: numpy's float32
``H^T H`` accumulated over the same rows, read from the same files chunk by chunk.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _table import print_table

import nctools
from nctools.io.rows import shard_paths

ANALYSE = r"""
import json, resource, sys, time
import nctools
folder, chunk = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
dump = nctools.load_dump(folder, lazy=True)
result = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, device="cpu",
                         chunk_size=chunk or None, progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "nc1": result.summary["nc1"], "accuracy": result.summary["accuracy"]}))
"""


def write_shards(folder: Path, n: int, dim: int, classes: int, shards: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(classes, dim, generator=gen)
    weight = 0.05 * torch.randn(classes, dim, generator=gen)
    bias = 0.1 * torch.randn(classes, generator=gen)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        labels = torch.randint(0, classes, (b - a,), generator=gen)
        feats = (means[labels] + torch.randn(b - a, dim, generator=gen)).to(dtype)
        nctools.save_dump(folder / f"part-{i:04d}.safetensors", feats, labels, weight, bias, metadata={"epoch": 1})


def floor_seconds(folder: Path, chunk: int) -> float:
    """numpy float32 H^T H over every row, read from the shards chunk by chunk."""
    dump = nctools.load_dump(folder, lazy=True)
    gram = np.zeros((dump.dim, dump.dim), dtype=np.float32)
    start = time.perf_counter()
    for a in range(0, dump.num_samples, chunk):
        h = dump.features[a:a + chunk].float().numpy()
        gram += h.T @ h
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=437_513)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=8142)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--chunk", type=int, default=0, help="rows per chunk (0: analyze's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "epoch_0001"
        folder.mkdir()
        write_shards(folder, args.n, args.dim, args.classes, args.shards, getattr(torch, args.dtype))
        size = sum(p.stat().st_size for p in shard_paths(folder))
        out = subprocess.run([sys.executable, "-c", ANALYSE, str(folder), str(args.chunk)],
                             check=True, capture_output=True, text=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        floor = floor_seconds(folder, args.chunk or 8192)
    angle_bytes = 2 * args.classes**2 * 8
    rows = [
        ("input", f"N={args.n:,} d={args.dim} C={args.classes:,} {args.dtype}, {args.shards} shards, "
                  f"{size / 2**30:.2f} GiB on disk"),
        ("load_dump(lazy=True) + analyze", f"{measured['seconds']:.1f} s"),
        ("floor: numpy float32 H^T H over the same rows", f"{floor:.1f} s"),
        ("analyze / floor", f"{measured['seconds'] / floor:.1f}x"),
        ("peak RSS of the analysing process", f"{measured['max_rss_kib'] / 2**20:.2f} GiB"),
        ("of which the two C x C angle matrices", f"{angle_bytes / 2**30:.2f} GiB"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
