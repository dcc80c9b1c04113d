"""The training methods, one module per family, and the table that names them.

    plain.py        ce, la, etf             cross-entropy, logit adjustment, a fixed simplex ETF
    allnc.py        allnc                   cross-entropy with GBBN, HyCon and P2P
    components.py   the cross-entropy family's model and objective, AllNC's parts as switches
    bbn.py          bbn                     BBN's two-branch network and cumulative learning
    etf_dr.py       etf_dr                  a fixed ETF trained with the dot-regression loss
    losses.py       the losses, as pure functions of tensors
    method.py       what a method is: the table's row (Method) and the run's objective (Objective)

Adding a method is one module that defines its :class:`Method` row and one entry in :data:`METHODS`
(CONTRIBUTING.md, "Adding a method"). The config (``method.name``, the components' defaults and the
method's checks), the trainer and the bundled configs read this table.

>>> get_method("allnc").summary
'AllNC: cross-entropy with GBBN, HyCon and P2P (Zhang et al. 2024)'
>>> get_method("bbn").components["gbbn"]
True
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..schema import Config, ConfigError
from .allnc import ALLNC
from .bbn import BBN
from .etf_dr import ETF_DR
from .method import Batch, Method, Objective, StepLoss, StepStats
from .plain import CE, ETF, LA

__all__ = ["METHODS", "Batch", "Method", "Objective", "StepLoss", "StepStats", "build_model", "build_objective",
           "get_method"]

METHODS: dict[str, Method] = {m.name: m for m in (CE, LA, ETF, ETF_DR, BBN, ALLNC)}


def get_method(name: str) -> Method:
    """The row of ``method.name``; a ConfigError naming the choices for any other name."""
    if name not in METHODS:
        raise ConfigError(f"config key 'method.name' must be one of {', '.join(METHODS)}, got {name!r}.")
    return METHODS[name]


def build_model(cfg: Config, num_classes: int, num_samples: int) -> nn.Module:
    """The model ``cfg`` describes (``num_samples`` sizes the free-feature table of ``ufm``). Every model
    has NCModel's surface: ``features``, ``classify``, ``weight``, ``bias``, ``forward`` = inference."""
    return get_method(cfg.method.name).build_model(cfg, num_classes, num_samples)


def build_objective(cfg: Config, class_counts: Sequence[int], device: torch.device | str = "cpu") -> Objective:
    """The run's objective (its constants on ``device``)."""
    return get_method(cfg.method.name).build_objective(cfg, class_counts, torch.device(device))
