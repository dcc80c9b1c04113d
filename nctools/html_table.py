"""The small HTML tables that dumps and results show in a notebook (their ``_repr_html_``).

>>> print(html_table([("features", "6 x 4, float32")]).replace("><", ">\\n<"))
<table>
<tbody>
<tr>
<th style='text-align:left'>features</th>
<td style='text-align:right'>6 x 4, float32</td>
</tr>
</tbody>
</table>
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["html_table"]


def html_table(rows: Sequence[tuple[str, str | Sequence[str]]], columns: Sequence[str] = ()) -> str:
    """An HTML table of ``(label, cell)`` or ``(label, [cells])`` rows, under ``columns`` when any is
    non-empty; every text is escaped.

    >>> html_table([("nc1", ["0.5", "-"])], columns=["means", "classifier"]).count("<td")
    2
    >>> html_table([("nc1",)])
    Traceback (most recent call last):
    ...
    ValueError: rows must be (label, cell or cells) pairs, got ('nc1',)
    """
    head = ""
    if any(columns):
        head = "<thead><tr><th></th>" + "".join(f"<th>{escape(str(c))}</th>" for c in columns) + "</tr></thead>"
    body = []
    for row in rows:
        if not (isinstance(row, (tuple, list)) and len(row) == 2):
            raise ValueError(f"rows must be (label, cell or cells) pairs, got {row!r}")
        label, cells = row
        cells = [cells] if isinstance(cells, str) else cells
        body.append(f"<tr><th style='text-align:left'>{escape(str(label))}</th>"
                    + "".join(f"<td style='text-align:right'>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"
