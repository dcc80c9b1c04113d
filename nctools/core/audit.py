"""The minority-collapse audit: are the rare classes' means and classifier rows squeezed together?

Classes are split by their training counts into many / medium / few (> 100, 20 to 100, < 20 by
default, as in the long-tailed literature; the summary keys call the few-shot group ``tail_``). For
each group: the mean pairwise angle among its classes (centred means, classifier rows) against the
simplex-ETF optimum, the mean norms, the mean self-duality cosine, and the mean per-class NC1 (do
the group's features collapse?). A group is *squeezed* when its mean pairwise angle lies more than
``squeeze_deg`` (default 5 degrees) below the optimum.

The verdict (:func:`judge`) reads the few-shot group: ``complete_minority_collapse`` (means and rows
squeezed), ``classifier_minority_collapse`` (rows only), ``feature_minority_collapse`` (means only),
``no_minority_collapse``, or ``withheld`` when the data cannot carry a verdict. Minority collapse is a
property of the terminal phase of training, so the verdict is withheld when the measured data are
not there: the classifier's accuracy on them (the nearest-class-centre accuracy without a
classifier) below ``TERMINAL_ACCURACY``, or NC1 above ``TERMINAL_NC1``; and when there are fewer
than two few-shot classes, no other classes beside them, or the counts that define the groups are
not the training counts.

The thresholds come from our own runs (the first CPU study, docs/results/v1/cifar10_lt.csv): the 18
terminal-phase CIFAR-10-LT runs of ResNet-32 have training accuracy 0.966 to 1 (BBN, whose
re-balancing branch keeps it from fitting the training set, 0.83) and NC1 0.10 to 3.5, while
ResNet-18s stopped short of the terminal phase measured NC1 4.8 to 47.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .geometry import rows_per_block

__all__ = ["BALANCED", "GROUPS", "DEFAULT_GROUPS", "SQUEEZE_TOLERANCE_DEG", "STATUSES", "TERMINAL_ACCURACY",
           "TERMINAL_NC1", "audit_group_names", "check_groups", "check_squeeze", "assign_groups", "audit_groups",
           "judge"]

GROUPS = ("many", "medium", "few")
BALANCED = "balanced"  # the one group of data whose classes all have the same training count
DEFAULT_GROUPS = (100, 20)  # many-shot: n_c > 100; few-shot: n_c < 20; medium otherwise
SQUEEZE_TOLERANCE_DEG = 5.0
TERMINAL_ACCURACY = 0.95  # below it the classifier has not fitted the measured data: no terminal phase
TERMINAL_NC1 = 5.0  # above it the features are far from their class means: their angles say little
STATUSES = ("complete_minority_collapse", "classifier_minority_collapse", "feature_minority_collapse",
            "no_minority_collapse", "withheld")


def check_groups(groups: Sequence[float]) -> tuple[float, float]:
    """``(many, few)``: many-shot is n > many, few-shot is n < few, medium the rest."""
    try:
        many, few = (float(g) for g in groups)
    except (TypeError, ValueError):
        raise ValueError(f"groups must be two numbers (many, few) such as (100, 20), got {groups!r}") from None
    if not few <= many:
        raise ValueError(f"groups must satisfy few <= many, got many = {many:g}, few = {few:g}")
    return many, few


def check_squeeze(squeeze_deg: float) -> float:
    """The squeeze threshold in degrees: a finite number >= 0."""
    if isinstance(squeeze_deg, bool) or not isinstance(squeeze_deg, (int, float, np.integer, np.floating)) \
            or not 0 <= float(squeeze_deg) < 180:
        raise ValueError(f"squeeze_deg must be a number of degrees in [0, 180), got {squeeze_deg!r}")
    return float(squeeze_deg)


def assign_groups(counts: torch.Tensor, groups: Sequence[float] = (100, 20)) -> np.ndarray:
    """Group name per class from its training count (the thresholds alone: see :func:`audit_group_names`).

    >>> assign_groups(torch.tensor([500, 100, 20, 19])).tolist()
    ['many', 'medium', 'medium', 'few']
    """
    many, few = check_groups(groups)
    n = counts.detach().cpu().numpy()
    return np.where(n > many, "many", np.where(n < few, "few", "medium")).astype(object)


def audit_group_names(counts: torch.Tensor, present: torch.Tensor, groups: Sequence[float] = (100, 20)
                      ) -> np.ndarray:
    """The groups of an audit: :func:`assign_groups`, except that when every class present has the same
    training count the data are balanced and every class is ``"balanced"``, not a group of thresholds
    set for long-tailed data (50 images per class would all be "medium").

    >>> audit_group_names(torch.tensor([50, 50, 0]), torch.tensor([True, True, False])).tolist()
    ['balanced', 'balanced', 'balanced']
    """
    shown = counts[present]
    if len(shown) and bool((shown == shown[0]).all()):
        return np.full(len(counts), BALANCED, dtype=object)
    return assign_groups(counts, groups)


def _mean_pair_angle(angles: torch.Tensor, members: np.ndarray) -> float | None:
    """Mean angle over the unordered pairs of ``members``: half the sum of the (symmetric, zero-diagonal)
    sub-matrix, taken a block of rows at a time in float64 (no copy of the sub-matrix, no mask)."""
    m = int(members.sum())
    if m < 2:
        return None
    idx = torch.as_tensor(np.flatnonzero(members), device=angles.device)
    step = rows_per_block(m)
    total = sum(float(angles[idx[start:start + step]][:, idx].sum(dtype=torch.float64)) for start in range(0, m, step))
    return total / (m * (m - 1))


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
    squeeze_deg: float = SQUEEZE_TOLERANCE_DEG,
) -> pd.DataFrame:
    """One row per group (over the analysed classes, in the order of the tensors given).

    ``nc1_class`` is each class's ``tr(Sigma_W^(c) Sigma_B^+) / C`` (the per-class NC1), ``None`` when
    unknown (pass 1 only, or coinciding means); its mean over the group's classes is the column ``nc1``."""
    rows = []
    for name in (*GROUPS, BALANCED):
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
            "squeezed_means": _squeezed(angle_means, optimum_deg, squeeze_deg),
            "squeezed_classifier": _squeezed(angle_rows, optimum_deg, squeeze_deg),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _squeezed(angle: float | None, optimum_deg: float, squeeze_deg: float) -> bool | None:
    return None if angle is None else bool(angle < optimum_deg - squeeze_deg)


def tail_mean_angle(icpa: torch.Tensor, group_of: np.ndarray) -> float | None:
    """The few-shot classes' mean pairwise angle in ``icpa`` (None with fewer than two of them)."""
    return _mean_pair_angle(icpa, group_of == "few")


def judge(audit: pd.DataFrame, summary: dict, *, squeeze_deg: float = SQUEEZE_TOLERANCE_DEG,
          counts_known: bool = True, tail_means_sample_center: float | None = None) -> dict:
    """The verdict on minority collapse: ``{"status": one of STATUSES, "reasons": [sentences]}``.

    ``summary`` supplies ``accuracy`` (None without a classifier), ``ncc_accuracy``, ``nc1`` and the
    optimum; ``counts_known`` is False when the groups come from counts other than the training
    counts; ``tail_means_sample_center`` is the few-shot means' mean angle under the sample-weighted
    centre, to say when the two centrings disagree.
    """
    reasons = []
    tail = audit[audit["group"] == "few"]
    if (audit["group"] == BALANCED).any():
        row = audit[audit["group"] == BALANCED].iloc[0]
        reasons.append(f"the classes are balanced ({int(row['count_min'])} training samples each): there are no "
                       "rare classes to be squeezed")
    elif tail.empty or int(tail.iloc[0]["num_classes"]) < 2:
        reasons.append("fewer than two few-shot classes: there is no few-shot pair to judge")
    elif len(tail) == len(audit):
        reasons.append("every class is few-shot: minority collapse is the rare classes squeezed beside frequent "
                       "ones, and there are none here (balanced data, or groups set too high)")
    if not counts_known:
        reasons.append("the groups come from the measured split's own class counts, not the training counts: "
                       "give the training counts (--class-counts) to audit this split")
    accuracy, which = summary.get("accuracy"), "the classifier's"
    if accuracy is None:
        accuracy, which = summary.get("ncc_accuracy"), "the nearest-class-centre"
    if accuracy is not None and accuracy < TERMINAL_ACCURACY:
        reasons.append(f"{which} accuracy on these data is {accuracy:.3f}, below {TERMINAL_ACCURACY}: not the "
                       "terminal phase of training, where minority collapse is defined")
    nc1 = summary.get("nc1")
    if nc1 is None:
        reasons.append("NC1 is unknown (only pass 1 ran, or the class means coincide)")
    elif nc1 > TERMINAL_NC1:
        reasons.append(f"NC1 is {nc1:.3g}, above {TERMINAL_NC1:g}: the features have not collapsed onto their "
                       "class means, so the angles between the means say little")
    if reasons:
        return {"status": "withheld", "reasons": reasons}
    row = tail.iloc[0]
    optimum = float(row["icpa_optimum_deg"])
    means, rows = bool(row["squeezed_means"]), row["squeezed_classifier"]
    angle_m = float(row["icpa_mean_deg_means"])
    seen = (f"the few-shot classes' means are {angle_m:.1f} degrees apart on average"
            + ("" if rows is None else f", their classifier rows {float(row['icpa_mean_deg_classifier']):.1f}")
            + f" (optimum {optimum:.1f}; squeezed = more than {squeeze_deg:g} below it)")
    if rows is None:
        status = "feature_minority_collapse" if means else "no_minority_collapse"
        reasons = [seen, "no classifier was given: judged on the means alone"]
    else:
        status = {(True, True): "complete_minority_collapse", (False, True): "classifier_minority_collapse",
                  (True, False): "feature_minority_collapse", (False, False): "no_minority_collapse"}[(means,
                                                                                                      bool(rows))]
        reasons = [seen]
    if tail_means_sample_center is not None:
        other = tail_means_sample_center < optimum - squeeze_deg
        if other != means:
            reasons.append(f"the two centrings disagree: under the sample-weighted global mean the few-shot means are "
                           f"{tail_means_sample_center:.1f} degrees apart, {'' if other else 'not '}squeezed (the "
                           "verdict uses the class-mean centre)")
    return {"status": status, "reasons": reasons}
