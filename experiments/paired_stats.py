"""Paired differences over seeds: the 95 % Student-t interval of their mean, and the verdict it gives on the
claim that the mean is above zero (for :mod:`experiments.evidence` and :mod:`experiments.evidence_figure`).

>>> verdict([1.0, 1.1, 0.9]), verdict([1.0, -0.5, 2.0]), verdict([3.0])
('holds', 'open', 'pending')
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["T975", "interval", "verdict"]

# Student's t, 97.5 % quantile, by degrees of freedom (any standard table, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(d: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % t interval of the mean of ``d`` (two or more values)."""
    x = np.asarray(d, float)
    half = T975[len(x) - 1] * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def verdict(d: list[float]) -> str:
    """holds / fails / open / pending for the claim that the mean of ``d`` is above zero."""
    if len(d) < 2:
        return "pending"
    _, low, high = interval(d)
    return "holds" if low > 0 else "fails" if high < 0 else "open"
