"""The training counts of a split's classes, as a user gives them: the groups of an audit of a test
or validation split come from the training counts, not from the split's own.

``--class-counts`` takes a comma list (``5000,2997,...,50``) or a file: a report's ``per_class.csv``
(its ``train_count`` column, else ``count``), a run's ``run.json`` (``data.class_counts``, as
allnc-train writes it), or a JSON list.

>>> read_class_counts("500,100,5")
[500, 100, 5]
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError, first_line

__all__ = ["read_class_counts"]


def _counts(values, where: str) -> list[int]:
    try:
        counts = [int(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{where}: class counts must be whole numbers, got {list(values)[:5]!r}.") from None
    if len(counts) < 2 or any(c < 0 for c in counts) or not any(counts):
        raise InputError(f"{where}: expected a count >= 0 for each of at least 2 classes, got {counts[:10]!r}.")
    return counts


def read_class_counts(value: str) -> list[int]:
    """Counts per class from a comma list or a file (see the module docstring); one sentence when unusable."""
    path = Path(value)
    if not path.is_file():
        if "," not in value and not value.strip().isdigit():
            raise InputError(f"--class-counts {value}: neither a file nor a comma list of counts such as 500,100,5.")
        return _counts([part.strip() for part in value.split(",")], f"--class-counts {value}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot be read ({first_line(err)}).") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        column = next((c for c in ("train_count", "count") if rows and c in rows[0]), None)
        if column is None:
            raise InputError(f"{path}: a per_class.csv with a train_count or count column was expected.")
        return _counts([row[column] for row in rows], str(path))
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InputError(f"{path}: not a CSV and not valid JSON ({first_line(err)}).") from None
    if isinstance(data, dict):
        data = (data.get("data") or {}).get("class_counts") if isinstance(data.get("data"), dict) else None
        if data is None:
            raise InputError(f"{path}: a run.json without data.class_counts (allnc-train writes them).")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of counts or a run.json.")
    return _counts(data, str(path))
