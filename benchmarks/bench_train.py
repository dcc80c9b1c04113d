"""Training-step throughput of ResNet-32 (batch 128): ``ce`` against ``allnc``.

    python benchmarks/bench_train.py [--steps 4] [--device auto] [--batch-size 128] [--threads N]

Times the trainer's own ``train_step`` (forward, backward, SGD step, running-statistics update) on
random CIFAR-sized inputs, so data loading is excluded. AllNC's step runs ``hycon.views`` views of
each conventional-batch image plus one re-balancing batch of the same size, i.e. views + 1 forward
passes per image; its images/s (counted per conventional-batch image) should be no worse than
ce's divided by that number. The two methods' steps alternate, and each method's fastest step is
reported (with the median), so load from other processes on a shared machine biases neither side.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config
from allnc_train.models import build_model
from allnc_train.objective import train_step
from nctools.core.device import resolve_device


def make_step(method: str, device: torch.device, batch_size: int):
    """(a function running one training step of ``method``, forward passes per image)."""
    cfg = load_config(CONFIG_DIR / f"cifar10_lt_r100_{method}.yaml", [f"optim.batch_size={batch_size}"])
    torch.manual_seed(0)
    model = build_model(cfg, 10, 1).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=cfg.optim.weight_decay)
    amp = getattr(torch, cfg.run.amp_dtype) if cfg.run.amp and device.type == "cuda" else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    views = cfg.hycon.views if cfg.hycon.enabled else 1
    labels = torch.arange(batch_size, device=device) % 10
    batch = (torch.randn(batch_size, views, 3, 32, 32, device=device), labels)
    rebal = (torch.randn(batch_size, 1, 3, 32, 32, device=device), labels) if cfg.gbbn.enabled else None
    log_prior = torch.full((10,), -2.3, device=device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        train_step(model, cfg, opt, scaler, batch, rebal, 0.5, log_prior, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tic

    return step, views + (rebal is not None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); 1 is steadier on a shared, loaded machine")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, ResNet-32, "
          f"batch {args.batch_size}, {args.steps} alternating timed steps per method after one warm-up")
    steps = {m: make_step(m, device, args.batch_size) for m in ("ce", "allnc")}
    times: dict[str, list[float]] = {m: [] for m in steps}
    for i in range(args.steps + 1):
        for method, (step, _) in steps.items():
            t = step()
            if i:  # the first step warms up allocators and kernels
                times[method].append(t)
    best = {m: args.batch_size / min(t) for m, t in times.items()}
    for m, t in times.items():
        passes = steps[m][1]
        print(f"{m:6s} {best[m]:8.1f} images/s best, {args.batch_size / statistics.median(t):8.1f} median "
              f"({passes} forward pass{'es' if passes > 1 else ''} per image)")
    ratio, allowed = best["ce"] / best["allnc"], steps["allnc"][1] / steps["ce"][1]
    print(f"ratio ce/allnc {ratio:.2f} ({'within' if ratio <= allowed else 'OVER'} the {allowed:.0f}x that "
          f"AllNC's forward passes allow)")


if __name__ == "__main__":
    main()
