"""The summary keys: the stable names of ``result.summary``, ``metrics.json`` and ``track.csv``.

Each key is named once, here; everything that writes or reads a summary uses these constants.
What each one measures and its value under perfect neural collapse: docs/DEFINITIONS.md.
The few-shot group keeps the prefix ``tail_`` in these names.

>>> NC1, SUMMARY_KEYS[:3]
('nc1', ('num_samples', 'num_classes', 'dim'))
"""
from __future__ import annotations

from typing import TypedDict

__all__ = ["SUMMARY_KEYS", "Summary", "ETF_GAPS"]

NUM_SAMPLES = "num_samples"
NUM_CLASSES = "num_classes"
DIM = "dim"
CENTER = "center"
NC1 = "nc1"
NC1_BALANCED = "nc1_balanced"
NC1_TRACE_RATIO = "nc1_trace_ratio"
NC1_CDNV = "nc1_cdnv"
NC2_EQUINORM_MEANS = "nc2_equinorm_means"
NC2_EQUINORM_CLASSIFIER = "nc2_equinorm_classifier"
NC2_COS_STD_MEANS = "nc2_cos_std_means"
NC2_COS_STD_CLASSIFIER = "nc2_cos_std_classifier"
NC2_MAXANGLE_MEANS = "nc2_maxangle_means"
NC2_MAXANGLE_CLASSIFIER = "nc2_maxangle_classifier"
NC2_ETF_ERROR_MEANS = "nc2_etf_error_means"
NC2_ETF_ERROR_CLASSIFIER = "nc2_etf_error_classifier"
ICPA_MEAN_DEG_MEANS = "icpa_mean_deg_means"
ICPA_MIN_DEG_MEANS = "icpa_min_deg_means"
ICPA_MEAN_DEG_CLASSIFIER = "icpa_mean_deg_classifier"
ICPA_MIN_DEG_CLASSIFIER = "icpa_min_deg_classifier"
ICPA_OPTIMUM_DEG = "icpa_optimum_deg"
NC3_SELF_DUALITY = "nc3_self_duality"
NC3_WH_ETF_ERROR = "nc3_wh_etf_error"
NC3_COS_MEAN = "nc3_cos_mean"
NC4_NCC_MISMATCH = "nc4_ncc_mismatch"
BIAS_COLLAPSE = "bias_collapse"
ACCURACY = "accuracy"
TAIL_ICPA_MEAN_DEG_MEANS = "tail_icpa_mean_deg_means"
TAIL_ICPA_MEAN_DEG_CLASSIFIER = "tail_icpa_mean_deg_classifier"
TAIL_NC3_COS_MEAN = "tail_nc3_cos_mean"
TAIL_NC1 = "tail_nc1"
# The same under the other centring, the sample-weighted global mean (Papyan's mu_G): NC3 and the few-shot
# means' angles depend on the centre (the classifier rows' angles do not).
NC3_SELF_DUALITY_SAMPLE_CENTER = "nc3_self_duality_sample_center"
TAIL_ICPA_MEAN_DEG_MEANS_SAMPLE_CENTER = "tail_icpa_mean_deg_means_sample_center"
TAIL_NC3_COS_MEAN_SAMPLE_CENTER = "tail_nc3_cos_mean_sample_center"

SUMMARY_KEYS = (
    NUM_SAMPLES, NUM_CLASSES, DIM, CENTER,
    NC1, NC1_BALANCED, NC1_TRACE_RATIO, NC1_CDNV,
    NC2_EQUINORM_MEANS, NC2_EQUINORM_CLASSIFIER,
    NC2_COS_STD_MEANS, NC2_COS_STD_CLASSIFIER,
    NC2_MAXANGLE_MEANS, NC2_MAXANGLE_CLASSIFIER,
    NC2_ETF_ERROR_MEANS, NC2_ETF_ERROR_CLASSIFIER,
    ICPA_MEAN_DEG_MEANS, ICPA_MIN_DEG_MEANS, ICPA_MEAN_DEG_CLASSIFIER, ICPA_MIN_DEG_CLASSIFIER,
    ICPA_OPTIMUM_DEG,
    NC3_SELF_DUALITY, NC3_WH_ETF_ERROR, NC3_COS_MEAN,
    NC4_NCC_MISMATCH, BIAS_COLLAPSE, ACCURACY,
    TAIL_ICPA_MEAN_DEG_MEANS, TAIL_ICPA_MEAN_DEG_CLASSIFIER, TAIL_NC3_COS_MEAN, TAIL_NC1,
    NC3_SELF_DUALITY_SAMPLE_CENTER, TAIL_ICPA_MEAN_DEG_MEANS_SAMPLE_CENTER, TAIL_NC3_COS_MEAN_SAMPLE_CENTER,
)
# The gaps to a simplex ETF: meaningless (null, with a note) when d < C - 1.
ETF_GAPS = (NC2_MAXANGLE_MEANS, NC2_MAXANGLE_CLASSIFIER, NC2_ETF_ERROR_MEANS, NC2_ETF_ERROR_CLASSIFIER,
            NC3_WH_ETF_ERROR)

Number = float | None


class Summary(TypedDict):
    """The type of ``result.summary``: ``None`` where a key cannot be computed for the input."""

    num_samples: int
    num_classes: int
    dim: int
    center: str
    nc1: Number
    nc1_balanced: Number
    nc1_trace_ratio: Number
    nc1_cdnv: Number
    nc2_equinorm_means: Number
    nc2_equinorm_classifier: Number
    nc2_cos_std_means: Number
    nc2_cos_std_classifier: Number
    nc2_maxangle_means: Number
    nc2_maxangle_classifier: Number
    nc2_etf_error_means: Number
    nc2_etf_error_classifier: Number
    icpa_mean_deg_means: Number
    icpa_min_deg_means: Number
    icpa_mean_deg_classifier: Number
    icpa_min_deg_classifier: Number
    icpa_optimum_deg: float
    nc3_self_duality: Number
    nc3_wh_etf_error: Number
    nc3_cos_mean: Number
    nc4_ncc_mismatch: Number
    bias_collapse: Number
    accuracy: Number
    tail_icpa_mean_deg_means: Number
    tail_icpa_mean_deg_classifier: Number
    tail_nc3_cos_mean: Number
    tail_nc1: Number
    nc3_self_duality_sample_center: Number
    tail_icpa_mean_deg_means_sample_center: Number
    tail_nc3_cos_mean_sample_center: Number


assert tuple(Summary.__annotations__) == SUMMARY_KEYS  # the two spellings cannot drift apart
