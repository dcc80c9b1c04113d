"""The experiments' CSV files: rows of dicts written atomically (a reader never sees half a table).

>>> import csv, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = write_rows(Path(tmp) / "t" / "a.csv", ["run", "acc"], [{"run": "ce", "acc": 0.5}])
...     print(path.read_text().splitlines())
['run,acc', 'ce,0.5']
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from nctools.io.atomic import atomic_write


def write_rows(path: Path, fieldnames: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write ``rows`` (dicts keyed by ``fieldnames``) as a CSV with a header to ``path``, its folder made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)
