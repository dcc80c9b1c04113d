"""Float64 brute-force twins of every metric: plain loops over samples and classes, straight from
the definitions of docs/DEFINITIONS.md, sharing no code with the package."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _angle(a, b):
    return math.degrees(math.acos(max(-1.0, min(1.0, _cos(a, b)))))


def _pairs_stats(vectors):
    k = len(vectors)
    cosines = [_cos(vectors[i], vectors[j]) for i, j in combinations(range(k), 2)]
    angles = [_angle(vectors[i], vectors[j]) for i, j in combinations(range(k), 2)]
    norms = [float(np.linalg.norm(v)) for v in vectors]
    mean_norm = sum(norms) / k
    equinorm = math.sqrt(sum((x - mean_norm) ** 2 for x in norms) / (k - 1)) / mean_norm
    mean_cos = sum(cosines) / len(cosines)
    cos_std = math.sqrt(sum((x - mean_cos) ** 2 for x in cosines) / len(cosines))
    max_angle = sum(abs(x + 1.0 / (k - 1)) for x in cosines) / len(cosines)
    gram = np.array([[float(vectors[i] @ vectors[j]) for j in range(k)] for i in range(k)])
    return {
        "equinorm": equinorm,
        "cos_std": cos_std,
        "maxangle": max_angle,
        "etf_error": _etf_gap(gram),
        "icpa_mean": sum(angles) / len(angles),
        "icpa_min": min(angles),
    }


def _etf_gap(matrix):
    k = matrix.shape[0]
    fro = math.sqrt(sum(matrix[i, j] ** 2 for i in range(k) for j in range(k)))
    total = 0.0
    for i in range(k):
        for j in range(k):
            target = ((1.0 if i == j else 0.0) - 1.0 / k) / math.sqrt(k - 1)
            total += (matrix[i, j] / fro - target) ** 2
    return math.sqrt(total)


def brute_force(features, labels, weight=None, bias=None, center="class", num_classes=None, class_counts=None,
                groups=(100, 20)):
    """Every summary metric (and a few per-class ones) in float64, by loops. The few-shot classes
    (``tail_nc1``) are the present classes whose training count (``class_counts``, else the count of
    the labels) is below ``groups[1]``, unless every present class has the same count (balanced data)."""
    h = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n, d = h.shape
    c_all = num_classes or (weight.shape[0] if weight is not None else int(y.max()) + 1)
    present = [c for c in range(c_all) if (y == c).any()]
    k = len(present)
    sums = {c: np.zeros(d) for c in present}
    counts = {c: 0 for c in present}
    for i in range(n):
        sums[y[i]] += h[i]
        counts[y[i]] += 1
    means = {c: sums[c] / counts[c] for c in present}
    if center == "class":
        mu_g = sum(means[c] for c in present) / k
    else:
        mu_g = sum(h[i] for i in range(n)) / n
    centred = [means[c] - mu_g for c in present]
    sigma_w = np.zeros((d, d))
    within = {c: 0.0 for c in present}
    for i in range(n):
        r = h[i] - means[y[i]]
        sigma_w += np.outer(r, r)
        within[y[i]] += float(r @ r)
    sigma_w /= n
    sigma_b = sum(np.outer(m, m) for m in centred) / k
    out = {}
    # The documented pseudo-inverse: at most k-1 directions, singular values of M~ above
    # max(k, d) * eps64 * s_max (an SVD of M~, not the package's Gram route).
    _, s, vt = np.linalg.svd(np.array(centred), full_matrices=False)
    keep = min(k - 1, int((s > max(k, d) * np.finfo(np.float64).eps * s[0]).sum()))
    sigma_b_pinv = k * (vt[:keep].T / s[:keep] ** 2) @ vt[:keep]
    out["nc1"] = float(np.trace(sigma_w @ sigma_b_pinv)) / k
    per_class_w = {c: np.zeros((d, d)) for c in present}  # Sigma_W^(c): each class over its own n_c
    for i in range(n):
        r = h[i] - means[y[i]]
        per_class_w[y[i]] += np.outer(r, r) / counts[y[i]]
    out["nc1_class"] = {c: float(np.trace(per_class_w[c] @ sigma_b_pinv)) / k for c in present}
    # Class-balanced Sigma_W: the mean of the per-class covariances over the present classes.
    sigma_w_bal = sum(per_class_w[c] for c in present) / k
    out["nc1_balanced"] = float(np.trace(sigma_w_bal @ sigma_b_pinv)) / k
    train = {c: counts[c] if class_counts is None else int(class_counts[c]) for c in present}
    balanced = len({train[c] for c in present}) == 1  # one training count for all: a "balanced" group, no few-shot
    few = [] if balanced else [c for c in present if train[c] < groups[1]]
    if few:  # the same with the mean of the few-shot classes' covariances (Sigma_B, C: all classes present)
        sigma_w_few = sum(per_class_w[c] for c in few) / len(few)
        out["tail_nc1"] = float(np.trace(sigma_w_few @ sigma_b_pinv)) / k
    else:
        out["tail_nc1"] = None
    out["nc1_trace_ratio"] = float(np.trace(sigma_w) / np.trace(sigma_b))
    var = {c: within[c] / counts[c] for c in present}
    cdnv = [(var[a] + var[b]) / (2 * float((means[a] - means[b]) @ (means[a] - means[b])))
            for a, b in combinations(present, 2)]
    out["nc1_cdnv"] = sum(cdnv) / len(cdnv)
    for key, value in _pairs_stats(centred).items():
        out[f"means_{key}"] = value
    few_centred = [centred[i] for i, c in enumerate(present) if c in few]
    out["tail_means_icpa_mean"] = _pairs_stats(few_centred)["icpa_mean"] if len(few) >= 2 else None
    out["within_var"] = var
    out["counts"] = counts
    if weight is None:
        return out
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(c_all) if bias is None else np.asarray(bias, dtype=np.float64)
    rows = [w[c] for c in present]
    for key, value in _pairs_stats(rows).items():
        out[f"rows_{key}"] = value
    w_fro = math.sqrt(sum(float(r @ r) for r in rows))
    m_fro = math.sqrt(sum(float(m @ m) for m in centred))
    out["nc3_self_duality"] = sum(float(((rows[i] / w_fro - centred[i] / m_fro) ** 2).sum()) for i in range(k))
    wh = np.array([[float(rows[i] @ centred[j]) for j in range(k)] for i in range(k)])
    out["nc3_wh_etf_error"] = _etf_gap(wh)
    out["duality_cos"] = {c: _cos(w[c], centred[i]) for i, c in enumerate(present)}
    out["nc3_cos_mean"] = sum(out["duality_cos"].values()) / k
    out["tail_nc3_cos_mean"] = sum(out["duality_cos"][c] for c in few) / len(few) if few else None
    out["bias_collapse"] = float(np.linalg.norm(w @ mu_g + b))
    hits = mismatch = 0
    ncc_hits = {c: 0 for c in present}
    for i in range(n):
        logits = [float(w[c] @ h[i] + b[c]) for c in range(c_all)]
        pred = max(range(c_all), key=lambda c: logits[c])
        nearest = min(present, key=lambda c: float((h[i] - means[c]) @ (h[i] - means[c])))
        hits += pred == y[i]
        mismatch += pred != nearest
        ncc_hits[y[i]] += nearest == y[i]
    out["accuracy"] = hits / n
    out["nc4_ncc_mismatch"] = mismatch / n
    out["ncc_accuracy"] = {c: ncc_hits[c] / counts[c] for c in present}
    return out


SUMMARY_TWINS = {
    "nc1": "nc1", "nc1_balanced": "nc1_balanced", "nc1_trace_ratio": "nc1_trace_ratio", "nc1_cdnv": "nc1_cdnv",
    "nc2_equinorm_means": "means_equinorm", "nc2_cos_std_means": "means_cos_std",
    "nc2_maxangle_means": "means_maxangle", "nc2_etf_error_means": "means_etf_error",
    "icpa_mean_deg_means": "means_icpa_mean", "icpa_min_deg_means": "means_icpa_min",
    "nc2_equinorm_classifier": "rows_equinorm", "nc2_cos_std_classifier": "rows_cos_std",
    "nc2_maxangle_classifier": "rows_maxangle", "nc2_etf_error_classifier": "rows_etf_error",
    "icpa_mean_deg_classifier": "rows_icpa_mean", "icpa_min_deg_classifier": "rows_icpa_min",
    "nc3_self_duality": "nc3_self_duality", "nc3_wh_etf_error": "nc3_wh_etf_error",
    "nc3_cos_mean": "nc3_cos_mean", "bias_collapse": "bias_collapse",
    "accuracy": "accuracy", "nc4_ncc_mismatch": "nc4_ncc_mismatch",
}
