"""The minority-collapse audit: are the rare classes' means and classifier rows squeezed together?

Classes are split by their training counts into many / medium / few (> 100, 20 to 100, < 20 by
default, as in the long-tailed literature; the summary keys call the few-shot group ``tail_``). For
each group: the mean pairwise angle among its classes (centred means, classifier rows) against the
simplex-ETF optimum, the mean norms, the mean self-duality cosine, and the mean per-class NC1 (do
the group's features collapse?). A run shows *complete minority collapse* when the few-shot
classes' means and rows are both squeezed: their mean pairwise angle lies more than
``SQUEEZE_TOLERANCE_DEG`` below the optimum.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .geometry import upper_blocks

__all__ = ["GROUPS", "DEFAULT_GROUPS", "SQUEEZE_TOLERANCE_DEG", "check_groups", "assign_groups", "audit_groups"]

GROUPS = ("many", "medium", "few")
DEFAULT_GROUPS = (100, 20)  # many-shot: n_c > 100; few-shot: n_c < 20; medium otherwise
SQUEEZE_TOLERANCE_DEG = 5.0


def check_groups(groups: Sequence[float]) -> tuple[float, float]:
    """``(many, few)``: many-shot is n > many, few-shot is n < few, medium the rest."""
    try:
        many, few = (float(g) for g in groups)
    except (TypeError, ValueError):
        raise ValueError(f"groups must be two numbers (many, few) such as (100, 20), got {groups!r}") from None
    if not few <= many:
        raise ValueError(f"groups must satisfy few <= many, got many = {many:g}, few = {few:g}")
    return many, few


def assign_groups(counts: torch.Tensor, groups: Sequence[float] = (100, 20)) -> np.ndarray:
    """Group name per class from its training count.

    >>> assign_groups(torch.tensor([500, 100, 20, 19])).tolist()
    ['many', 'medium', 'medium', 'few']
    """
    many, few = check_groups(groups)
    n = counts.detach().cpu().numpy()
    return np.where(n > many, "many", np.where(n < few, "few", "medium")).astype(object)


def _mean_pair_angle(angles: torch.Tensor, members: np.ndarray) -> float | None:
    m = int(members.sum())
    if m < 2:
        return None
    idx = torch.as_tensor(np.flatnonzero(members), device=angles.device)
    return sum(float(block.sum()) for block in upper_blocks(angles, idx)) / (m * (m - 1) / 2)


def audit_groups(
    group_of: np.ndarray,
    counts: torch.Tensor,
    icpa_means: torch.Tensor,
    mean_norms: torch.Tensor,
    icpa_classifier: torch.Tensor | None,
    row_norms: torch.Tensor | None,
    duality_cos: torch.Tensor | None,
    optimum_deg: float,
    nc1_class: torch.Tensor | None = None,
) -> pd.DataFrame:
    """One row per group (over the analysed classes, in the order of the tensors given).

    ``nc1_class`` is each class's ``tr(Sigma_W^(c) Sigma_B^+) / C`` (the per-class NC1), ``None`` when
    unknown (pass 1 only, or coinciding means); its mean over the group's classes is the column ``nc1``."""
    rows = []
    for name in GROUPS:
        members = group_of == name
        if not members.any():
            continue
        sel = torch.as_tensor(members, device=mean_norms.device)
        angle_means = _mean_pair_angle(icpa_means, members)
        angle_rows = _mean_pair_angle(icpa_classifier, members) if icpa_classifier is not None else None
        row = {
            "group": name,
            "num_classes": int(members.sum()),
            "count_min": int(counts[sel].min()),
            "count_max": int(counts[sel].max()),
            "icpa_mean_deg_means": angle_means,
            "icpa_mean_deg_classifier": angle_rows,
            "icpa_optimum_deg": optimum_deg,
            "mean_norm_means": float(mean_norms[sel].mean()),
            "mean_norm_classifier": None if row_norms is None else float(row_norms[sel].mean()),
            "nc3_cos_mean": None if duality_cos is None else float(duality_cos[sel].mean()),
            "nc1": None if nc1_class is None else float(nc1_class[sel].mean()),
            "squeezed_means": _squeezed(angle_means, optimum_deg),
            "squeezed_classifier": _squeezed(angle_rows, optimum_deg),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _squeezed(angle: float | None, optimum_deg: float) -> bool | None:
    return None if angle is None else bool(angle < optimum_deg - SQUEEZE_TOLERANCE_DEG)


def verdict(audit: pd.DataFrame) -> str | None:
    """A one-line reading of the few-shot group, or None when there is no few-shot pair to judge."""
    tail = audit[audit["group"] == "few"]
    if tail.empty or tail.iloc[0]["squeezed_means"] is None:
        return None
    means, rows = tail.iloc[0]["squeezed_means"], tail.iloc[0]["squeezed_classifier"]
    if rows is None:  # no classifier: say only what the means show
        return ("the few-shot classes' means are squeezed (no classifier given)" if means
                else "the few-shot classes' means keep near-optimal angles (no classifier given)")
    if means and rows:
        return "complete minority collapse: the few-shot classes' means and classifier rows are both squeezed"
    if rows:
        return "minority collapse of the classifier: the few-shot rows are squeezed, the few-shot means are not"
    if means:
        return "the few-shot classes' means are squeezed, their classifier rows are not"
    return "no minority collapse: the few-shot classes' means and rows keep near-optimal angles"
