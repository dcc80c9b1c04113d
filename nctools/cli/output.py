"""What the commands print on stdout with ``--format json``: one JSON object, in one shape for all.

Every object opens with the same three keys, then the command's own (docs/CLI.md, "JSON output"):

- ``command``: ``analyze``, ``demo``, ``track`` or ``compare``;
- ``nctools_version``: the version that computed it;
- ``out``: the folder the command wrote its files into;
- ``analyze`` and ``demo``: the keys of the ``metrics.json`` they write (``verdict``, ``summary``,
  ``notes``, ``options``, ``audit``, ``per_class``, ``source``);
- ``track``: ``run`` (``path``, ``split``, ``method``, ``imbalance_ratio``), ``epochs`` (the rows of
  ``track.csv``) and ``skipped`` (``file`` and ``problem`` of each epoch left out);
- ``compare``: ``runs`` (the rows of ``compare.csv``).

Non-finite numbers are ``null``, as in every file the commands write.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..core.plain import to_plain

__all__ = ["COMMON_KEYS", "json_object", "records"]

COMMON_KEYS = ("command", "nctools_version", "out")


def json_object(command: str, out: Path | str, body: dict) -> str:
    """The JSON text a command prints: the common keys, then ``body``'s.

    >>> print(json_object("track", "runs/a/nctools-track", {"epochs": []}))  # doctest: +ELLIPSIS
    {
      "command": "track",
      "nctools_version": "...",
      "out": "runs/a/nctools-track",
      "epochs": []
    }
    >>> json_object("track", "x", {"out": 1})
    Traceback (most recent call last):
    ...
    ValueError: the body of the track JSON object repeats a common key: out
    """
    clash = [key for key in COMMON_KEYS if key in body]
    if clash:
        raise ValueError(f"the body of the {command} JSON object repeats a common key: {', '.join(clash)}")
    head = {"command": command, "nctools_version": __version__, "out": str(out)}
    return json.dumps({**head, **body}, indent=2, allow_nan=False)


def records(table) -> list[dict]:
    """A DataFrame's rows as JSON-ready dicts (NaN and missing values as ``None``), numbers unrounded.

    >>> import pandas as pd
    >>> records(pd.DataFrame({"epoch": [1, 2], "nc1": [0.25, float("nan")]}))
    [{'epoch': 1, 'nc1': 0.25}, {'epoch': 2, 'nc1': None}]
    """
    return to_plain(table.to_dict(orient="records"))
