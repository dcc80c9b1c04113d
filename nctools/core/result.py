"""Turn the accumulated sums into the NC summary, the per-class table and the audit."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import geometry as geo
from . import keys as K
from .audit import BALANCED, audit_group_names, audit_groups, check_groups, check_squeeze, judge, tail_mean_angle
from .keys import ETF_GAPS, SUMMARY_KEYS, Summary
from .residuals import centre_of, mismatch_rate, nc1_balanced_value, nc1_per_class, nc1_value
from .validation import check_class_counts

__all__ = ["SUMMARY_KEYS", "NCResult", "build_result"]

@dataclass
class NCResult:
    """What :func:`nctools.analyze` returns.

    Attributes:
        summary: the summary keys of :mod:`nctools.core.keys` (floats, ints, strings or ``None`` where a key cannot be
            computed for this input; ``notes`` says why).
        per_class: one row per class (identifiers first).
        icpa_means: (C, C) angles in degrees between centred class means (NaN for absent classes).
        icpa_classifier: (C, C) angles in degrees between classifier rows, or ``None``.
        audit: the many / medium / few minority-collapse table.
        notes: plain sentences about what could not be computed.
        options: the options the numbers were computed with.
        verdict: ``{"status": ..., "reasons": [...]}``, the reading of the few-shot group
            (:func:`nctools.core.audit.judge`): a kind of minority collapse, none, or ``withheld``.
    """

    summary: Summary
    per_class: pd.DataFrame
    icpa_means: torch.Tensor
    icpa_classifier: torch.Tensor | None
    audit: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (NaN and Inf become ``None``), as written to ``metrics.json``."""
        return _plain({
            "verdict": self.verdict,
            "summary": self.summary,
            "notes": self.notes,
            "options": self.options,
            "audit": self.audit.to_dict(orient="records"),
            "per_class": self.per_class.to_dict(orient="records"),
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __repr__(self) -> str:
        lines = [f"NCResult({self.summary['num_samples']} samples, {self.summary['num_classes']} classes, "
                 f"dim {self.summary['dim']}, center={self.summary['center']!r})"]
        for key in SUMMARY_KEYS[4:]:
            value = self.summary[key]
            lines.append(f"  {key:<32} {'-' if value is None else f'{value:.6g}'}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.verdict:
            lines.append(f"  verdict: {self.verdict['status']}")
        return "\n".join(lines)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def build_result(stats, plan, weight, bias, *, center, class_counts=None, groups=(100, 20),
                 squeeze_deg: float = 5.0, counts_known: bool = True) -> NCResult:
    """All metrics from the reduced sums (``NeuralCollapse.statistics()``) and the pass-2 plan.

    ``counts_known``: whether the counts that define the groups are the training counts (given, or
    the data are the training set); the verdict is withheld otherwise."""
    notes: list[str] = []
    num_classes = stats["counts"].shape[0]
    counts = stats["counts"]
    present, ids = plan.present, plan.present_ids
    c_used, dim = len(ids), plan.means.shape[1]
    num_samples = int(counts.sum())
    if c_used < num_classes:
        missing = (~present).nonzero().squeeze(1).tolist()
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        notes.append(f"{num_classes - c_used} of {num_classes} classes have no samples (class {shown}); "
                     f"every metric uses the {c_used} classes present")
    check_groups(groups)
    squeeze_deg = check_squeeze(squeeze_deg)
    if class_counts is not None:
        train_counts = check_class_counts(class_counts, num_classes).to(counts.device)
    else:
        train_counts = counts

    centred = plan.centred  # (C', d)
    # (C', d); the weight itself when every class is present (a copy is 133 MB at iNat's size)
    rows = None if weight is None else weight if c_used == num_classes else weight[ids]
    # NC3 first: its (C', C') cross-Gram is gone before the two angle matrices are made.
    dual = geo.duality_summary(rows, centred) if rows is not None else None
    means_geo = geo.frame_summary(centred)
    rows_geo = geo.frame_summary(rows) if rows is not None else None
    icpa_m = means_geo["icpa"]
    icpa_w = rows_geo["icpa"] if rows is not None else None
    optimum = geo.icpa_optimum_deg(c_used)
    mean_norms = means_geo["norms"]
    duality = dual["cosines"] if rows is not None else None

    s: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    s.update(num_samples=num_samples, num_classes=c_used, dim=dim, center=center, icpa_optimum_deg=optimum)
    for suffix, frame in (("means", means_geo), ("classifier", rows_geo)):
        if frame is None:
            continue
        s[f"nc2_equinorm_{suffix}"] = frame["equinorm"]
        s[f"nc2_cos_std_{suffix}"] = frame["cos_std"]
        s[f"nc2_maxangle_{suffix}"] = frame["max_angle"]
        s[f"nc2_etf_error_{suffix}"] = frame["etf_error"]
        s[f"icpa_mean_deg_{suffix}"] = frame["icpa_mean"]
        s[f"icpa_min_deg_{suffix}"] = frame["icpa_min"]
    if rows is not None:
        s[K.NC3_SELF_DUALITY] = dual["self_duality"]
        s[K.NC3_WH_ETF_ERROR] = dual["wh_etf_error"]
        s[K.NC3_COS_MEAN] = float(duality.mean())
        b = bias if bias is not None else torch.zeros(num_classes, dtype=torch.float64, device=weight.device)
        s[K.BIAS_COLLAPSE] = float((weight @ plan.center + b).norm())
    else:
        notes.append("no classifier was given: classifier, self-duality, NC4 and accuracy metrics are null")
    if dim < c_used - 1:
        for key in ETF_GAPS:
            s[key] = None
        notes.append(f"dim {dim} < C - 1 = {c_used - 1}: no simplex ETF fits, so the ETF gaps "
                     "(max-angle, ETF errors, W-H ETF error) are null")

    per_class = pd.DataFrame({"class": np.arange(num_classes), "count": counts.cpu().numpy()})
    if class_counts is not None:
        per_class["train_count"] = train_counts.cpu().numpy()
    group_of = audit_group_names(train_counts, present, groups)
    per_class["group"] = group_of
    _put = lambda col, values: per_class.__setitem__(col, _scatter(values, ids, num_classes))  # noqa: E731
    _put("mean_norm", mean_norms)
    _put("nearest_angle_means", _nearest(icpa_m))
    if rows is not None:
        _put("classifier_norm", rows_geo["norms"])
        if bias is not None:
            _put("bias", bias[ids])
        _put("self_duality_cos", duality)
        _put("nearest_angle_classifier", _nearest(icpa_w))

    nc1_class = None
    if "pass2_counts" in stats:
        nc1_class = _pass2_metrics(stats, plan, s, per_class, rows is not None, notes)
    else:
        notes.append("only pass 1 ran: NC1, NC4 and accuracy need pass 2 (NeuralCollapse.next_pass())")

    audit = audit_groups(group_of[ids.cpu().numpy()], train_counts[ids], icpa_m, mean_norms, icpa_w,
                         rows_geo["norms"] if rows is not None else None, duality, optimum, nc1_class, squeeze_deg)
    tail = audit[audit["group"] == "few"]
    if not tail.empty:
        for key, column in ((K.TAIL_ICPA_MEAN_DEG_MEANS, K.ICPA_MEAN_DEG_MEANS),
                            (K.TAIL_ICPA_MEAN_DEG_CLASSIFIER, K.ICPA_MEAN_DEG_CLASSIFIER),
                            (K.TAIL_NC3_COS_MEAN, K.NC3_COS_MEAN),
                            (K.TAIL_NC1, K.NC1)):
            value = tail.iloc[0][column]
            s[key] = None if value is None or pd.isna(value) else float(value)
    if group_of[0] == BALANCED:
        notes.append(f"every class has the same training count ({int(train_counts[ids][0])}): the data are balanced, "
                     "so there are no many / medium / few groups and every tail_ key is null")
    elif tail.empty or tail.iloc[0][K.NUM_CLASSES] < 2:
        many, few = check_groups(groups)
        what = ("no few-shot classes (training count < {few:g}): every tail_ key is null" if tail.empty else
                "fewer than 2 few-shot classes (training count < {few:g}): the tail angles are null")
        notes.append(what.format(few=few) + "; set groups to split many / medium / few differently")
    tail_sample = _sample_center_keys(s, plan, counts[ids], rows, group_of[ids.cpu().numpy()])
    ncc = None
    if "pass2_ncc_hits" in stats:
        ncc = float(stats["pass2_ncc_hits"][ids].sum() / counts[ids].sum())
    result_verdict = judge(audit, {**s, "ncc_accuracy": ncc}, squeeze_deg=squeeze_deg,
                           counts_known=counts_known or class_counts is not None,
                           tail_means_sample_center=tail_sample)

    for key, value in s.items():
        if isinstance(value, float) and not math.isfinite(value):
            s[key] = None
            notes.append(f"{key} is not finite for this input (coinciding vectors?) and is reported as null")
    icpa_means_full = icpa_m.cpu() if c_used == num_classes else _scatter_square(icpa_m, ids, num_classes)
    if weight is None:
        icpa_w_full = None
    elif c_used == num_classes:
        icpa_w_full = icpa_w.cpu()
    else:  # rows of absent classes still have angles
        icpa_w_full = geo.icpa_degrees(weight).cpu()
    options = {K.CENTER: center, "groups": list(check_groups(groups)), "squeeze_deg": squeeze_deg,
               "class_counts_given": class_counts is not None}
    return NCResult(s, per_class, icpa_means_full, icpa_w_full, audit, notes, options, result_verdict)


def _sample_center_keys(s: dict, plan, counts: torch.Tensor, rows: torch.Tensor | None,
                        group_of: np.ndarray) -> float | None:
    """The ``_sample_center`` keys: NC3 and the few-shot means' angles with the class means centred on
    the sample-weighted global mean; returns the few-shot means' mean angle (None with < 2 of them)."""
    centred = plan.means - centre_of(plan.means, counts, "sample")  # (C', d)
    few = group_of == "few"
    tail_angle = None
    if few.sum() >= 2:
        tail_angle = tail_mean_angle(geo.icpa_degrees(centred[torch.as_tensor(few, device=centred.device)]),
                                     group_of[few])
    s[K.TAIL_ICPA_MEAN_DEG_MEANS_SAMPLE_CENTER] = _finite_or_none(tail_angle)
    if rows is not None:
        dual = geo.duality_summary(rows, centred)
        s[K.NC3_SELF_DUALITY_SAMPLE_CENTER] = dual["self_duality"]
        if few.any():
            cosines = dual["cosines"]
            s[K.TAIL_NC3_COS_MEAN_SAMPLE_CENTER] = float(cosines[torch.as_tensor(few, device=cosines.device)].mean())
    return tail_angle


def _pass2_metrics(stats, plan, s, per_class, has_classifier: bool, notes: list[str]) -> torch.Tensor | None:
    """The pass-2 keys and per-class columns; returns the per-class NC1 (C',), ``None`` when it is null."""
    ids = plan.present_ids
    n = stats["counts"][ids].to(torch.float64)
    resid_sq = stats["pass2_resid_sq"][ids] - n * plan.delta_sq  # undo the rounding of the means
    within_var = resid_sq / n  # V_c: mean squared distance to the own class mean
    c_used = len(ids)
    nc1_class = nc1_per_class(stats["counts"], stats["pass2_nc1_terms"], plan)
    s[K.NC1] = nc1_value(stats["counts"], stats["pass2_nc1_terms"], plan)
    s[K.NC1_BALANCED] = nc1_balanced_value(stats["counts"], stats["pass2_nc1_terms"], plan)
    if nc1_class is None:
        notes.append("the class means coincide: Sigma_B is zero, so NC1 (nc1, nc1_balanced, tail_nc1 and the "
                     "per-class nc1) is null")
    between = plan.centred.square().sum() / c_used
    s[K.NC1_TRACE_RATIO] = float((resid_sq.sum() / n.sum()) / between)
    s[K.NC1_CDNV] = geo.cdnv_mean(within_var, plan.centred)
    num_classes = per_class.shape[0]
    per_class["within_var"] = _scatter(within_var, ids, num_classes)
    per_class[K.NC1] = np.full(num_classes, np.nan) if nc1_class is None else _scatter(nc1_class, ids, num_classes)
    per_class["ncc_accuracy"] = _scatter(stats["pass2_ncc_hits"][ids] / n, ids, num_classes)
    if has_classifier:
        total = n.sum()
        s[K.ACCURACY] = float(stats["pass2_hits"][ids].sum() / total)
        s[K.NC4_NCC_MISMATCH] = mismatch_rate(stats["counts"], stats["pass2_mismatch"], plan)
        per_class[K.ACCURACY] = _scatter(stats["pass2_hits"][ids] / n, ids, num_classes)
        per_class["ncc_mismatch"] = _scatter(stats["pass2_mismatch"][ids] / n, ids, num_classes)
    return nc1_class


def _nearest(angles: torch.Tensor) -> torch.Tensor:
    """Angle to the nearest other vector, per row (the diagonal is masked in place, then restored)."""
    nearest = angles.fill_diagonal_(float("inf")).min(dim=1).values
    angles.fill_diagonal_(0.0)
    return nearest


def _scatter(values: torch.Tensor, ids: torch.Tensor, size: int) -> np.ndarray:
    out = np.full(size, np.nan)
    out[ids.cpu().numpy()] = values.detach().double().cpu().numpy()
    return out


def _scatter_square(matrix: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.full((size, size), float("nan"), dtype=torch.float64)
    idx = ids.cpu()
    out[idx.unsqueeze(1), idx.unsqueeze(0)] = matrix.cpu()
    return out
