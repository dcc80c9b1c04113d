"""Tables written as CSV, safe to open in a spreadsheet: a text cell that begins with ``=``, ``+``,
``-``, ``@`` (or a tab or carriage return) would be evaluated as a formula there (class names and run
labels come from the input), so it is written with a leading apostrophe, which spreadsheets show
as text. Numbers are left as they are.

>>> import pandas as pd
>>> safe_table(pd.DataFrame({"class": [0, 1], "name": ["=HYPERLINK(1)", "cat"], "x": [-1.5, 2.0]})).values.tolist()
[[0, "'=HYPERLINK(1)", -1.5], [1, 'cat', 2.0]]
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is made
    import pandas as pd

__all__ = ["FORMULA_STARTS", "safe_cell", "safe_table"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` with a leading apostrophe when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of the DataFrame ``table`` whose text cells (and column names) are :func:`safe_cell`."""
    from pandas.api.types import is_numeric_dtype

    out = table.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):  # object or string columns: text may hide there
            out[column] = out[column].map(safe_cell)
    out.columns = [safe_cell(c) for c in out.columns]
    return out
