"""Plain JSON values from what the analysis produces: the one conversion behind ``metrics.json``, the
commands' JSON output and ``NCResult.to_dict``.

>>> import numpy as np
>>> to_plain({"nc1": np.float64(0.5), "rows": (np.int64(3), float("nan")), 7: None})
{'nc1': 0.5, 'rows': [3, None], '7': None}
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["to_plain"]


def to_plain(value: Any) -> Any:
    """``value`` with dicts (string keys), lists, numbers and strings only: numpy scalars become Python
    numbers, tuples lists, and NaN, Inf and pandas' missing values ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value
