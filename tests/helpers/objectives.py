"""One step's loss of any method, as the trainer computes it (for tests of the objectives)."""
from __future__ import annotations

from allnc_train.methods import Batch, StepLoss, StepStats, build_objective


def step_loss(model, cfg, batch, rebal=None, eta: float = 1.0) -> StepLoss:
    """The objective of ``cfg`` (a uniform class prior) at GBBN weight ``eta`` on (batch, rebal)."""
    objective = build_objective(cfg, [1] * model.num_classes)
    objective.eta = eta
    return objective.loss(model, Batch(batch, rebal))


def after_step(model, cfg, stats: StepStats) -> None:
    """What the trainer does after the optimiser step."""
    build_objective(cfg, [1] * model.num_classes).update(model, stats)
