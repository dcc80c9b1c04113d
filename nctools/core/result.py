"""Turn the accumulated sums into the NC summary, the per-class table and the audit."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import geometry as geo
from . import keys as K
from .audit import BALANCED, audit_group_names, audit_groups, check_groups, check_squeeze, judge
from .keys import ETF_GAPS, SUMMARY_KEYS, Summary
from .pair_angles import KEEP_ANGLES_UP_TO, PairAngles
from .plain import to_plain
from .residuals import centre_of, mismatch_rate, nc1_balanced_value, nc1_per_class, nc1_value
from .validation import check_class_counts

if TYPE_CHECKING:  # matplotlib is imported only when a figure is made
    from matplotlib.figure import Figure

__all__ = ["PLOT_KINDS", "SUMMARY_KEYS", "NCResult", "build_result"]

# result.plot(kind): the figures of nctools analyze, by the stem of the file each is saved as.
PLOT_KINDS = ("icpa", "per_class", "cosines")

@dataclass
class NCResult:
    """What :func:`nctools.analyze` returns.

    Attributes:
        summary: the summary keys of :mod:`nctools.core.keys` (floats, ints, strings or ``None`` where a key cannot be
            computed for this input; ``notes`` says why).
        per_class: one row per class (identifiers first).
        icpa_means: (C, C) angles in degrees between centred class means (NaN for absent classes); above
            :data:`~nctools.core.pair_angles.KEEP_ANGLES_UP_TO` classes a
            :class:`~nctools.core.pair_angles.PairAngles`, which makes the rows asked for when indexed
            (``icpa_means[rows]``; ``.full()`` makes the whole matrix).
        icpa_classifier: (C, C) angles in degrees between classifier rows, or ``None``; a ``PairAngles``
            above that many classes, like ``icpa_means``.
        audit: the many / medium / few minority-collapse table.
        notes: plain sentences about what could not be computed.
        options: the options the numbers were computed with.
        verdict: ``{"status": ..., "reasons": [...]}``, the reading of the few-shot group
            (:func:`nctools.core.audit.judge`): a kind of minority collapse, none, or ``withheld``.
    """

    summary: Summary
    per_class: pd.DataFrame
    icpa_means: torch.Tensor | PairAngles
    icpa_classifier: torch.Tensor | PairAngles | None
    audit: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (NaN and Inf become ``None``), as written to ``metrics.json``."""
        return to_plain({
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
        """The grouped table ``nctools analyze`` prints (``-`` for null keys), the notes, the verdict."""
        from ..report.writer import format_summary

        return format_summary(self)

    def _repr_html_(self) -> str:
        """What a notebook shows: the grouped table as HTML, one table per section, then the notes and
        the verdict with its reasons."""
        from html import escape

        from ..html_table import html_table
        from ..report.writer import _section_cells, verdict_words

        s = self.summary
        parts = [f"<p><b>NCResult</b>: {s[K.NUM_SAMPLES]} samples, {s[K.NUM_CLASSES]} classes, dim {s[K.DIM]}, "
                 f"center={escape(str(s[K.CENTER]))}</p>"]
        parts += [f"<p><b>{escape(title)}</b></p>{html_table(rows, columns)}"
                  for title, columns, rows in _section_cells(s)]
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{escape(note)}</li>" for note in self.notes) + "</ul>")
        if self.verdict:
            reasons = "".join(f"<li>{escape(reason)}</li>" for reason in self.verdict["reasons"])
            parts.append(f"<p><b>verdict: {escape(verdict_words(self.verdict['status']))}</b></p><ul>{reasons}</ul>")
        return "<div>" + "".join(parts) + "</div>"

    def plot(self, kind: str = "icpa", class_names: Sequence[str] | None = None) -> Figure:
        """One figure of the report as a matplotlib ``Figure`` (a notebook shows it; ``fig.savefig``
        saves it): ``icpa`` (angles between centred means and between classifier rows, one colour scale
        centred on the simplex optimum), ``per_class`` (norms and self-duality by class size) or
        ``cosines`` (histogram of the pairwise cosines); see :data:`PLOT_KINDS`.

        >>> import nctools
        >>> means = 3 * nctools.simplex_etf(4, 6, dtype=torch.float32)
        >>> labels = torch.arange(4).repeat(5)
        >>> result = nctools.analyze(means[labels], labels, weight=means)
        >>> type(result.plot("cosines")).__name__
        'Figure'
        >>> result.plot("heatmap")
        Traceback (most recent call last):
        ...
        ValueError: kind must be one of 'icpa', 'per_class', 'cosines', got 'heatmap'
        """
        if kind not in PLOT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, PLOT_KINDS))}, got {kind!r}")
        from ..report.writer import analysis_figures

        return analysis_figures(self, self._checked_names(class_names))[kind]

    def save(self, out: str | Path, class_names: Sequence[str] | None = None, png: bool = False,
             figures: bool = True) -> list[str]:
        """Write the files ``nctools analyze`` writes into the folder ``out`` (created; every file
        complete, or none): metrics.json, per_class.csv, one PDF per figure and report.pdf (with
        ``png``, PNGs too; with ``figures=False``, the two tables only, as ``--no-figures``). Returns
        the names of the files written.

        >>> import tempfile, nctools
        >>> means = 3 * nctools.simplex_etf(4, 6, dtype=torch.float32)
        >>> labels = torch.arange(4).repeat(5)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     nctools.analyze(means[labels], labels, weight=means).save(f"{tmp}/report")
        ['metrics.json', 'per_class.csv', 'cosines.pdf', 'icpa.pdf', 'per_class.pdf', 'report.pdf']
        """
        from ..report.writer import check_out_dir, write_analysis

        names = self._checked_names(class_names)
        return write_analysis(check_out_dir(out), self, names, {}, {}, png=bool(png), figures=bool(figures))

    def _checked_names(self, class_names: Sequence[str] | None) -> list[str] | None:
        """``class_names`` as a list of one string per class, or a ValueError saying what is wrong."""
        if class_names is None:
            return None
        names = None if isinstance(class_names, str) else list(class_names)
        count = len(self.per_class)
        if names is None or len(names) != count or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be {count} strings, one per class, got {class_names!r:.80}")
        return names


# Below this feature scale, squares (1e-36) approach float32's smallest normal number (1.2e-38).
TINY_FEATURES = 1e-18


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
    keep = c_used <= KEEP_ANGLES_UP_TO  # above: PairAngles, rows of the angle matrices made when read
    means_geo = geo.frame_summary(centred, keep_angles=keep)
    rows_geo = geo.frame_summary(rows, keep_angles=keep) if rows is not None else None
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
    _put("nearest_angle_means", means_geo["nearest"])
    if rows is not None:
        _put("classifier_norm", rows_geo["norms"])
        if bias is not None:
            _put("bias", bias[ids])
        _put("self_duality_cos", duality)
        _put("nearest_angle_classifier", rows_geo["nearest"])

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

    scale = float(plan.means.abs().max()) if plan.means.numel() else 0.0
    if 0.0 < scale < TINY_FEATURES:
        notes.append(f"the features are tiny (largest class-mean entry {scale:.1e}): their squares fall below the "
                     "normal range of float32, so within- and between-class scatter lose their digits or vanish; "
                     "multiply the features by a constant (every NC metric is scale-invariant)")
    for key, value in s.items():
        if isinstance(value, float) and not math.isfinite(value):
            s[key] = None
            notes.append(f"{key} is not finite for this input (coinciding vectors?) and is reported as null")
    icpa_means_full, icpa_w_full = _full_angles(icpa_m, icpa_w, plan, weight, num_classes)
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
        tail_angle = geo.mean_pair_angle(centred[torch.as_tensor(few, device=centred.device)])  # no (k, k) matrix
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


def _full_angles(icpa_m, icpa_w, plan, weight, num_classes: int):
    """The result's (C, C) angle matrices over every class (NaN for the means of absent classes; the rows
    of absent classes still have angles), whole or as PairAngles like the analysed ones."""
    ids, c_used = plan.present_ids, len(plan.present_ids)
    if c_used == num_classes:
        return icpa_m.cpu(), None if icpa_w is None else icpa_w.cpu()  # tensors or PairAngles
    if isinstance(icpa_m, PairAngles):
        centred = torch.full((num_classes, plan.centred.shape[1]), float("nan"), dtype=torch.float64)
        centred[ids.cpu()] = plan.centred.double().cpu()
        return PairAngles(centred), None if weight is None else PairAngles(weight.cpu())
    return (_scatter_square(icpa_m, ids, num_classes),
            None if weight is None else geo.icpa_degrees(weight).cpu())


def _scatter(values: torch.Tensor, ids: torch.Tensor, size: int) -> np.ndarray:
    out = np.full(size, np.nan)
    out[ids.cpu().numpy()] = values.detach().double().cpu().numpy()
    return out


def _scatter_square(matrix: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.full((size, size), float("nan"), dtype=torch.float64)
    idx = ids.cpu()
    out[idx.unsqueeze(1), idx.unsqueeze(0)] = matrix.cpu()
    return out
