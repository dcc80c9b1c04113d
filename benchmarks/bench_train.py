"""Training throughput of ResNet-32 (batch 128): ``ce`` against ``allnc``, data pipeline included.

    python benchmarks/bench_train.py [--steps 4] [--device cpu] [--batch-size 128] [--threads N] [--json]

Data: a stand-in CIFAR-10-LT (beta = 100) held in memory, 12,406 random uint8 32x32 images with
the literature's class counts (no dataset files needed), run through the trainer's own batched
pipeline (``allnc_train.data.pipeline``: sampler, on-device gather, augmentation, normalisation).
Three figures per method, each counted in source images (conventional-branch images, one per
sample of the instance-balanced batch):

- ``images_per_s``: end to end, one step = the next batch(es) from the pipeline (sampler, gather,
  augmentation) + the trainer's ``train_step`` (forward, backward, SGD step, running statistics);
- ``model_images_per_s``: the same ``train_step`` on a batch already made and on the device;
- ``data_images_per_s``: the pipeline alone, producing everything the method's step consumes (for
  allnc: ``hycon.views`` views of each conventional image, view 0 standard crop + flip and the
  others SimCLR views, plus the re-balancing branch's batch of the same size).

AllNC's step runs views + 1 forward passes per image, so its images/s should be no worse than ce's
divided by that number. The methods' steps alternate (model step, then end-to-end step), each
figure is the fastest step (the median is shown too), so load from other processes on a shared
machine biases no side. ``--json`` prints one JSON object per method, one per line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config
from allnc_train.data import DataBundle, TensorImages, lt_class_counts
from allnc_train.data.pipeline import make_batched_loaders, use_channels_last
from allnc_train.methods import Batch, build_model, build_objective
from allnc_train.step import Optimisation, train_step
from nctools.core.device import resolve_device

METHODS = ("ce", "allnc")


def fake_cifar10_lt(seed: int = 0) -> DataBundle:
    """CIFAR-10-LT's shape without its pixels: 12,406 random uint8 (3, 32, 32) images, 5000 ... 50 per class."""
    counts = lt_class_counts(5000, 10, 100)
    labels = np.repeat(np.arange(10), counts)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=g)
    return DataBundle(TensorImages(images, labels), TensorImages(images, labels), None, labels, counts,
                      [f"class_{c}" for c in range(10)], 100.0)


class Bench:
    """One method's model, optimiser and batched loaders, with timed steps."""

    def __init__(self, method: str, device: torch.device, batch_size: int, data: DataBundle):
        cfg = load_config(CONFIG_DIR / f"cifar10_lt_r100_{method}.yaml", [f"optim.batch_size={batch_size}"])
        self.cfg, self.device, self.batch_size = cfg, device, batch_size
        torch.manual_seed(0)
        model = build_model(cfg, 10, len(data.train_labels)).to(device).train()
        if use_channels_last(cfg, device):
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=cfg.optim.weight_decay)
        amp = getattr(torch, cfg.run.amp_dtype) if cfg.run.amp and device.type == "cuda" else None
        self.optim = Optimisation(opt, torch.amp.GradScaler(device.type, enabled=amp == torch.float16), amp)
        self.views = cfg.hycon.views if cfg.hycon.enabled else 1
        self.conv, self.rebal, _, _ = make_batched_loaders(cfg, data, device)
        self.objective = build_objective(cfg, data.class_counts, device)
        self.objective.eta = 0.5  # GBBN's weight half-way through a run: both branches carry loss
        self.stream = self._batches()
        self.fixed = next(self.stream)  # the pre-made batch of the model-only step

    @property
    def passes(self) -> int:
        return self.views + (self.rebal is not None)

    def _batches(self) -> Iterator[tuple]:
        """(batch, re-balancing batch or None) forever, epoch after epoch."""
        epoch = 0
        while True:
            epoch += 1
            loaders = [ld for ld in (self.conv, self.rebal) if ld is not None]
            for ld in loaders:
                ld.set_epoch(epoch)
            for pair in zip(*loaders):
                yield pair[0], (pair[1] if len(pair) > 1 else None)

    def _timed(self, fn: Callable[[], None]) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tic

    def _step(self, batch, rebal) -> None:
        train_step(self.model, self.objective, self.optim, Batch(batch, rebal))

    def model_step(self) -> float:
        """Seconds of one ``train_step`` on the pre-made batch."""
        return self._timed(lambda: self._step(*self.fixed))

    def end_to_end_step(self) -> float:
        """Seconds of the next batch(es) from the pipeline plus one ``train_step`` on them."""
        return self._timed(lambda: self._step(*next(self.stream)))

    def data_batches(self, n: int) -> float:
        """Seconds of producing ``n`` steps' input (all views and the re-balancing batch), no training."""
        def run() -> None:
            for _ in range(n):
                next(self.stream)
        return self._timed(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="timed training steps per method and kind (after a warm-up)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); 1 is steadier on a shared, loaded machine")
    p.add_argument("--data-batches", type=int, default=10, help="pipeline batches per timed round of the data figure")
    p.add_argument("--json", action="store_true", help="one JSON object per method and line instead of the text")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    B = args.batch_size
    if not args.json:
        print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, ResNet-32, batch {B}, "
              f"{args.steps} alternating timed steps per method after one warm-up; in-memory CIFAR-10-LT stand-in "
              "through the batched pipeline")
    data = fake_cifar10_lt()
    benches = {m: Bench(m, device, B, data) for m in METHODS}
    model_t: dict[str, list[float]] = {m: [] for m in METHODS}
    e2e_t: dict[str, list[float]] = {m: [] for m in METHODS}
    data_t: dict[str, list[float]] = {m: [] for m in METHODS}
    for i in range(args.steps + 1):
        for m, b in benches.items():
            t_model, t_e2e = b.model_step(), b.end_to_end_step()
            if i:  # the first round warms up allocators and kernels
                model_t[m].append(t_model)
                e2e_t[m].append(t_e2e)
    for _ in range(3):
        for m, b in benches.items():
            data_t[m].append(b.data_batches(args.data_batches) / args.data_batches)
    rows = []
    for m, b in benches.items():
        rows.append({"method": m, "device": str(device), "images_per_s": round(B / min(e2e_t[m]), 1),
                     "model_images_per_s": round(B / min(model_t[m]), 1),
                     "data_images_per_s": round(B / min(data_t[m]), 1),
                     "images_per_s_median": round(B / statistics.median(e2e_t[m]), 1),
                     "model_images_per_s_median": round(B / statistics.median(model_t[m]), 1),
                     "views": b.views, "forward_passes_per_image": b.passes, "batch_size": B,
                     "threads": torch.get_num_threads(), "steps": args.steps, "torch": torch.__version__})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    best = {r["method"]: r for r in rows}
    for r in rows:
        passes = r["forward_passes_per_image"]
        print(f"{r['method']:6s} {r['model_images_per_s']:8.1f} images/s best, {r['model_images_per_s_median']:8.1f} "
              f"median ({passes} forward pass{'es' if passes > 1 else ''} per image; train_step on a ready batch)")
        print(f"{'':6s} {r['images_per_s']:8.1f} images/s best, {r['images_per_s_median']:8.1f} median end to end "
              f"({100 * (1 - r['images_per_s'] / r['model_images_per_s']):+.1f}% pipeline overhead); "
              f"pipeline alone {r['data_images_per_s']:,.0f} images/s")
    ratio = best["ce"]["images_per_s"] / best["allnc"]["images_per_s"]
    allowed = best["allnc"]["forward_passes_per_image"] / best["ce"]["forward_passes_per_image"]
    print(f"ratio ce/allnc {ratio:.2f} end to end ({'within' if ratio <= allowed else 'OVER'} the {allowed:.0f}x that "
          f"AllNC's forward passes allow)")


if __name__ == "__main__":
    main()
