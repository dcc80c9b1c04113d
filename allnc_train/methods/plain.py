"""The plain baselines: cross-entropy, logit adjustment, and a fixed simplex-ETF classifier.

- ``ce``: cross-entropy with a learned linear classifier.
- ``la``: logit-adjusted cross-entropy (Menon et al., "Long-tail learning via logit adjustment",
  ICLR 2021): ``logits + tau * log(prior)`` while training, the plain logits at inference; the
  prior is the training set's class frequencies, a constant of the run.
- ``etf``: cross-entropy against a fixed simplex-ETF classifier of rows of norm ``method.etf_scale``
  (Yang et al., NeurIPS 2022, with CE instead of their dot-regression loss: that is ``etf_dr``).

Each may switch on AllNC's parts (``gbbn``, ``hycon``, ``p2p``): they share its objective
(:mod:`allnc_train.methods.components`).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from ..schema import Config, ConfigError, num_classes_hint
from .components import ComponentsObjective, nc_model
from .losses import cross_entropy, logit_adjusted_ce
from .method import Method

__all__ = ["CE", "ETF", "LA", "check_etf_dimension", "check_fixed_etf", "log_prior"]


def log_prior(class_counts: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """log p(c) (C,) of the training set's class frequencies, float32.

    >>> [round(v, 4) for v in log_prior([3, 1]).tolist()]
    [-0.2877, -1.3863]
    """
    counts = torch.tensor(list(class_counts), dtype=torch.float32)
    return (counts / counts.sum()).log().to(device)


def check_etf_dimension(cfg: Config) -> None:
    """A simplex ETF of C classes needs a feature dimension d >= C - 1."""
    m, classes = cfg.model, num_classes_hint(cfg)
    if m.arch == "resnet32" and 64 * m.width < classes - 1:
        raise ConfigError(f"a simplex ETF of {classes} classes needs a feature dimension of at least {classes - 1}: "
                          f"raise model.width (now {m.width}, feature dim {64 * m.width}).")


def check_fixed_etf(cfg: Config) -> None:
    """:func:`check_etf_dimension`; and a fixed classifier leaves nothing for GBBN's second head to train."""
    check_etf_dimension(cfg)
    if cfg.gbbn.enabled and cfg.gbbn.heads == 2:
        raise ConfigError(f"gbbn.heads 2 needs a trainable classifier; method {cfg.method.name} fixes it: set "
                          "gbbn.heads to 1.")


def _cross_entropy(cfg: Config, class_counts: Sequence[int], device: torch.device) -> ComponentsObjective:
    return ComponentsObjective(cfg, cross_entropy)


def _logit_adjusted(cfg: Config, class_counts: Sequence[int], device: torch.device) -> ComponentsObjective:
    prior, tau = log_prior(class_counts, device), cfg.method.la_tau
    return ComponentsObjective(cfg, lambda logits, labels: logit_adjusted_ce(logits, labels, prior, tau))


CE = Method("ce", "cross-entropy with a learned linear classifier", nc_model, _cross_entropy,
            recipe={"method": {"name": "ce"}})
LA = Method("la", "logit-adjusted cross-entropy (Menon et al. 2021)", nc_model, _logit_adjusted,
            recipe={"method": {"name": "la", "la_tau": 1.0}})
ETF = Method("etf", "cross-entropy against a fixed simplex-ETF classifier (Yang et al. 2022)",
             partial(nc_model, fixed_etf=True), _cross_entropy, check=check_fixed_etf,
             recipe={"method": {"name": "etf", "etf_scale": 1.0}})
