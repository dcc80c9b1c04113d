"""What a training method is to the trainer: a row of the methods table, and the objective it builds.

A :class:`Method` says how to build the method's model and its objective, which components
(GBBN, HyCon, P2P) it switches on by default, what it fills in for the config's ``null`` keys,
its own config checks, and the config sections a bundled config writes for it. The table of rows
is :data:`allnc_train.methods.METHODS`.

An :class:`Objective` is built once per run (``methods.build_objective``) and holds the run's
constants (the log prior of logit adjustment, GBBN's eta(t) schedule). Each step the trainer calls
``loss(model, batch)`` under autocast, steps the optimiser, then ``update(model, stats)`` to fold
the step into the model's running statistics; ``set_epoch`` selects eta(t) for the epoch.

>>> from allnc_train.schema import Config
>>> objective = Objective(Config())
>>> objective.set_epoch(3), objective.eta  # no GBBN: the conventional branch carries the whole loss
(None, 1.0)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..schedules import gbbn_eta
from ..schema import Config, ConfigError

__all__ = ["PARTS", "Batch", "Method", "Objective", "StepLoss", "StepStats", "refuse_parts"]

PARTS = ("gbbn", "hycon", "p2p")  # AllNC's parts, each a config section with an ``enabled`` switch


class Batch(NamedTuple):
    """One step's data: the conventional branch's (x (B, V, ...), y (B,)) and, with GBBN, the
    re-balancing branch's (x (B, 1, ...), y (B,)); None without it."""

    conventional: tuple[torch.Tensor, torch.Tensor]
    rebalancing: tuple[torch.Tensor, torch.Tensor] | None = None


class StepStats(NamedTuple):
    """What a step leaves for the running statistics (detached): one feature per image and its label,
    and HyCon's projections with their labels (None without projection heads)."""

    features: torch.Tensor  # (n, d)
    labels: torch.Tensor  # (n,)
    projections: torch.Tensor | None  # (m, p)
    projection_labels: torch.Tensor  # (m,)


class StepLoss(NamedTuple):
    """An objective's result for one step: the loss to back-propagate, detached scalars to log, and
    the statistics for :meth:`Objective.update` (None for methods without running statistics)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    stats: StepStats | None


class Objective:
    """One run's training loss; subclasses implement :meth:`loss` (and :meth:`update` if the method
    keeps running statistics)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.eta = 1.0  # GBBN's eta(t) for the current epoch: the conventional branch's share of the loss

    def set_epoch(self, epoch: int) -> None:
        """Select the 1-based ``epoch``: eta = 1 - ((epoch - 1) / T)^gamma with GBBN, 1 without."""
        g = self.cfg.gbbn
        self.eta = gbbn_eta(epoch - 1, self.cfg.optim.epochs, g.gamma) if g.enabled else 1.0

    def loss(self, model: nn.Module, batch: Batch) -> StepLoss:
        raise NotImplementedError

    def update(self, model: nn.Module, stats: StepStats | None) -> None:
        """Fold a step's statistics into the model's running ones, after the optimiser step."""


def _no_check(cfg: Config) -> None:
    """A method without checks of its own."""


def refuse_parts(cfg: Config, parts: tuple[str, ...] = ("hycon", "p2p")) -> None:
    """A method with a model and loss of its own takes none of AllNC's ``parts``."""
    for part in parts:
        if getattr(cfg, part).enabled:
            raise ConfigError(f"method {cfg.method.name} has a model and loss of its own: set {part}.enabled to "
                              "false.")
    if cfg.hycon.views_to_ce:
        raise ConfigError(f"method {cfg.method.name} has a model and loss of its own: set hycon.views_to_ce to false.")


@dataclass(frozen=True)
class Method:
    """One row of the methods table (see the module docstring)."""

    name: str  # the value of method.name
    summary: str  # one line: what the method is, after its paper
    # (cfg, num_classes, num_samples) -> the model; num_samples sizes the free-feature table of ``ufm``
    build_model: Callable[[Config, int, int], nn.Module]
    # (cfg, class_counts, device) -> the run's objective
    build_objective: Callable[[Config, Sequence[int], torch.device], Objective]
    # the default of each component's ``enabled: null`` switch
    components: Mapping[str, bool] = field(default_factory=lambda: dict.fromkeys(PARTS, False))
    # what the method puts in the other ``null`` keys
    defaults: Mapping[str, Any] = field(default_factory=lambda: {"gbbn.heads": 1, "gbbn.encoder_grad": "full"})
    check: Callable[[Config], None] = _no_check  # raises ConfigError naming the key
    recipe: Mapping[str, Any] = field(default_factory=dict)  # the sections a bundled config writes for it
    ablations: tuple[str, ...] = ()  # components the bundled configs switch off one at a time (NAME_no_PART)
    # controls the bundled configs also write (NAME_<control>): (one line, {dotted key: value} over the recipe)
    controls: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A row is code, not user input: a malformed one is a programming error, said at import time.
        if set(self.components) != set(PARTS):
            raise ValueError(f"method {self.name}: components must name each of {', '.join(PARTS)} once.")
        for part in self.ablations:
            if not self.components[part] or part not in self.recipe:
                raise ValueError(f"method {self.name}: ablation {part!r} needs the part on and its section in the "
                                 "recipe.")
        for control, (_, changes) in self.controls.items():
            for key in changes:
                section, _, name = key.partition(".")
                if name not in self.recipe.get(section, {}):
                    raise ValueError(f"method {self.name}: control {control!r} changes {key!r}, which the recipe "
                                     "does not write.")
