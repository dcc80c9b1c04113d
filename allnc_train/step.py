"""One optimisation step: the run's objective forward under autocast, backward, the optimiser step,
then the running statistics (P2P's class means, HyCon's prototypes) folded in."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .methods import Batch, Objective, StepLoss

__all__ = ["Optimisation", "train_step"]


class Optimisation(NamedTuple):
    """What updates the weights: the optimiser, the gradient scaler (float16 only) and the autocast
    dtype of the forward pass (bfloat16 / float16, or None for full precision)."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: torch.dtype | None = None


def train_step(model: nn.Module, objective: Objective, optim: Optimisation, batch: Batch,
               loss_forward: Callable[[Batch], StepLoss] | None = None) -> dict[str, torch.Tensor]:
    """Forward, backward, optimiser step, running-statistics update. Returns the logged parts.

    ``loss_forward``: the objective wrapped in DistributedDataParallel (``distributed.wrap``) when
    training across processes; None computes the loss directly.
    """
    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    optim.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=optim.autocast or torch.float32, enabled=optim.autocast is not None):
        out = objective.loss(model, batch) if loss_forward is None else loss_forward(batch)
    optim.scaler.scale(out.loss).backward()
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    objective.update(model, out.stats)
    return out.parts
