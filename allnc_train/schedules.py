"""Schedules as pure functions: learning rate per step and the GBBN mixing weight eta(t)."""
from __future__ import annotations

import math

from .schema import OptimConfig


def warmup_steps(cfg: OptimConfig, steps_per_epoch: int) -> int:
    """Warm-up length in steps; capped at half the run so a short run still trains at full lr."""
    return min(cfg.warmup_epochs, cfg.epochs // 2) * steps_per_epoch


def learning_rate(cfg: OptimConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global step ``step`` (0-based): linear warm-up, then cosine / step / constant.

    >>> from allnc_train.schema import OptimConfig
    >>> c = OptimConfig(epochs=10, lr=1.0, warmup_epochs=2, schedule="cosine")
    >>> [round(learning_rate(c, s, 1), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    warm = warmup_steps(cfg, steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch + 1  # 1-based; multiply once the epoch passes a milestone (LDAM)
        return cfg.lr * cfg.step_gamma ** sum(epoch > m for m in cfg.milestones)
    return cfg.lr


def gbbn_eta(epoch: int, total_epochs: int, gamma: float) -> float:
    """eta(t) = 1 - (t / T)^gamma for 0-based epoch t: the conventional branch's share of the loss.

    gamma = 2 is BBN's cumulative-learning parabola; larger gamma keeps the feature-learning branch
    in charge longer, smaller gamma hands over to the re-balancing branch sooner.

    >>> [round(gbbn_eta(t, 4, 2.0), 4) for t in range(4)]
    [1.0, 0.9375, 0.75, 0.4375]
    """
    return 1.0 - (epoch / total_epochs) ** gamma
