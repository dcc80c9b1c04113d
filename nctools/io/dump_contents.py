"""What a feature dump holds, and the one check every dump passes: the :class:`Dump` type, the file
keys and metadata of the format (docs/DEFINITIONS.md, "The feature dump format"), and
:class:`DumpError`, the one-sentence error for a dump that breaks them.

:func:`build_dump` is the single place where tensors and metadata read from any container (or given
to ``save_dump``) are checked and assembled into a :class:`Dump`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nctools.core.validation import check_inputs
from nctools.errors import InputError
from nctools.io.rows import RowSource

__all__ = ["Dump", "DumpError", "FORMAT_VERSION", "build_dump", "metadata_values", "stringify_metadata"]

FORMAT_VERSION = "1"

# File key -> Dump field, in the order of save_dump's arguments: the one table every format uses.
TENSOR_KEYS = {
    "features": "features",
    "labels": "labels",
    "classifier.weight": "weight",
    "classifier.bias": "bias",
    "class_counts": "class_counts",
}
_REQUIRED_KEYS = ("features", "labels")
KEYS_SENTENCE = "a dump holds features and labels, and optionally classifier.weight, classifier.bias and class_counts"


class DumpError(InputError):
    """A dump file, or the data given to ``save_dump``, is unusable.

    The message is one sentence, ``"<path>: <problem>."``, fit to show a user as it is.
    """


def dump_error(path: Path, problem: str) -> DumpError:
    """The ``DumpError`` ``"<path>: <problem>."`` (a trailing full stop in ``problem`` is not doubled)."""
    return DumpError(f"{path}: {problem.rstrip().rstrip('.')}.")


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters: enough to recognise a value in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(repr=False)
class Dump:
    """The contents of one feature dump; tensors as stored (features are not upcast).

    ``metadata`` holds the values with their JSON types, as :func:`metadata_values` reads them
    (``epoch`` an int, ``class_names`` a list); the file stores them as text. ``repr(dump)`` is a
    short summary (shapes, dtypes, classes, metadata keys), and a notebook shows it as a table.
    """

    features: torch.Tensor | RowSource  # (N, d) floating; a RowSource when loaded lazily
    labels: torch.Tensor  # (N,) int64
    weight: torch.Tensor | None  # (C, d), "classifier.weight"
    bias: torch.Tensor | None  # (C,), "classifier.bias"
    class_counts: torch.Tensor | None  # (C,) int64 training counts
    metadata: dict[str, Any]
    path: Path | None = None

    def __repr__(self) -> str:
        """A few lines: where it came from, shapes and dtypes, classes, metadata keys (never the tensors).

        >>> Dump(torch.zeros(6, 4), torch.tensor([0, 1, 2] * 2), torch.zeros(3, 4), None, None,
        ...      {"epoch": 3, "class_names": ["cat", "dog", "eel"]})
        Dump (in memory)
          features      6 x 4, float32
          labels        6, 3 classes: cat, dog, eel
          classifier    3 x 4, float32, no bias
          class_counts  -
          metadata      class_names, epoch
        """
        return "\n".join([self._title(), *(f"  {name:<13} {text}" for name, text in self._summary_rows())])

    def _repr_html_(self) -> str:
        """What a notebook shows: the rows of ``repr`` as a table."""
        from ..html_table import html_table

        return f"<div><p><b>{escape(self._title())}</b></p>{html_table(self._summary_rows())}</div>"

    def _title(self) -> str:
        return f"Dump of {self.path}" if self.path is not None else "Dump (in memory)"

    def _summary_rows(self) -> list[tuple[str, str]]:
        names = self.class_names
        classes = f"{self.num_classes} classes"
        if names:  # the first few and the last: enough to recognise the dataset
            classes += ": " + ", ".join(names if len(names) <= 4 else [*names[:3], "...", names[-1]])
        on_disk = ", on disk (read in chunks)" if isinstance(self.features, RowSource) else ""
        classifier = "-"
        if self.weight is not None:
            classifier = (f"{self.weight.shape[0]} x {self.weight.shape[1]}, {_dtype_name(self.weight)}, "
                          f"{'with' if self.bias is not None else 'no'} bias")
        return [
            ("features", f"{self.num_samples} x {self.dim}, {_dtype_name(self.features)}{on_disk}"),
            ("labels", f"{self.labels.shape[0]}, {classes}"),
            ("classifier", classifier),
            ("class_counts", "-" if self.class_counts is None else f"{self.class_counts.shape[0]} training counts"),
            ("metadata", ", ".join(sorted(self.metadata)) or "-"),  # sorted: safetensors keeps no order
        ]

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        """C, resolved as ``check_inputs`` does: classifier rows, class_counts, class_names, labels."""
        for source in (self.weight, self.class_counts):
            if source is not None:
                return int(source.shape[0])
        names = self.class_names
        return len(names) if names is not None else int(self.labels.max()) + 1

    @property
    def class_names(self) -> list[str] | None:
        return _parse_class_names(self.metadata)

    @property
    def epoch(self) -> int | None:
        return _parse_optional(self.metadata, "epoch", int)

    @property
    def imbalance_ratio(self) -> float | None:
        return _parse_optional(self.metadata, "imbalance_ratio", imbalance_ratio)

    @property
    def split(self) -> str | None:
        return self.metadata.get("split")

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("dataset")

    @property
    def method(self) -> str | None:
        return self.metadata.get("method")

    @property
    def format_version(self) -> str | None:
        return self.metadata.get("format_version")


def _dtype_name(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def build_dump(path: Path, tensors: dict[str, Any], metadata: Any, *, validate: bool) -> Dump:
    """The one place where a dump is checked and assembled, for every format, on load and on save.

    ``tensors`` maps file keys (only those of ``TENSOR_KEYS``) to what the file held there.
    """
    try:
        fields = _tensor_fields(tensors)
        meta = _check_metadata(metadata)
        names = _parse_class_names(meta)
        # Without classifier rows or counts, the class names are what fix C (a split may lack a class).
        names_fix_c = names is not None and "weight" not in fields and "class_counts" not in fields
        checked = check_inputs(
            fields["features"],
            fields["labels"],
            fields.get("weight"),
            fields.get("bias"),
            fields.get("class_counts"),
            num_classes=len(names) if names_fix_c else None,
            finite=validate,
        )
        if names is not None and len(names) != checked.num_classes:
            raise ValueError(
                f"metadata class_names lists {len(names)} names but the dump has {checked.num_classes} classes"
            )
    except (TypeError, ValueError) as err:
        raise dump_error(path, str(err)) from err
    return Dump(
        features=checked.features,
        labels=checked.labels,
        weight=checked.weight,
        bias=checked.bias,
        class_counts=checked.class_counts,
        metadata=_decoded_all(meta),
        path=path,
    )


def _tensor_fields(tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """File keys -> Dump field names, after checking that the required keys hold dense tensors."""
    for key in _REQUIRED_KEYS:
        if key not in tensors:
            raise ValueError(f"missing the {key!r} tensor; {KEYS_SENTENCE}")
    fields = {}
    for key, value in tensors.items():
        if isinstance(value, RowSource):  # features left on disk (lazy=True)
            fields[TENSOR_KEYS[key]] = value
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key!r} holds a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise TypeError(f"{key!r} is a {value.layout} tensor; a dump holds dense tensors")
        # A .pt may store nn.Parameter objects; the dump is data, not part of a graph.
        fields[TENSOR_KEYS[key]] = value.detach()
    return fields


def _check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of strings, got a {type(metadata).__name__}")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(
                f"metadata must map strings to strings, but it holds {short(key)}: {short(value)} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
    version = metadata.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown format_version {version!r}; this nctools reads format_version {FORMAT_VERSION!r}")
    # Parsed here once so that the Dump properties never fail on a loaded dump.
    _parse_optional(metadata, "epoch", int)
    _parse_optional(metadata, "imbalance_ratio", imbalance_ratio)
    return dict(metadata)


def imbalance_ratio(text: str) -> float:
    """An imbalance ratio n_max / n_min: a finite number of at least 1 (track and compare plot it on a log
    axis, where nan, 0 or a negative ratio has no place).

    >>> imbalance_ratio("100")
    100.0
    """
    value = float(text)
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(text)
    return value


_KINDS = {int: "an integer", imbalance_ratio: "a finite number of at least 1 (n_max / n_min)"}


def _parse_optional(metadata: dict[str, Any], key: str, parse: Callable[[str], Any]):
    if key not in metadata:
        return None
    value = metadata[key]
    try:  # the stored text is parsed, so that "40.5" is no epoch even though int(40.5) would be 40
        return parse(value if isinstance(value, str) else json.dumps(value))
    except ValueError:
        raise ValueError(f"metadata {key} must be {_KINDS.get(parse, 'a number')}, got {short(value)}") from None


def _parse_class_names(metadata: dict[str, Any]) -> list[str] | None:
    raw = metadata.get("class_names")
    if raw is None:
        return None
    names = _decoded(raw)
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise ValueError(f"metadata class_names must be a JSON list of at least 2 strings, got {short(raw)}")
    return names


def _decoded(text: Any) -> Any:
    """A stored value with its JSON type: text that reads as JSON is read as JSON, other text stays text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


# Keys whose values are names, kept as text even where they read as JSON (a method called "2").
_TEXT_KEYS = ("split", "dataset", "method", "format_version")


def _decoded_all(stored: dict[str, Any]) -> dict[str, Any]:
    return {key: value if key in _TEXT_KEYS else _decoded(value) for key, value in stored.items()}


def stringify_metadata(metadata: dict | None) -> dict[str, str]:
    """The metadata as the files store it, text only: strings as they are; numbers, booleans, lists
    and dicts as JSON.

    >>> stringify_metadata({"epoch": 3, "split": "train", "augment": True, "class_names": ["cat", "dog"]})
    {'epoch': '3', 'split': 'train', 'augment': 'true', 'class_names': '["cat", "dog"]'}
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got a {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {short(key)}")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bool, int, float, list, tuple, dict)):
            try:
                out[key] = json.dumps(value)
            except (TypeError, ValueError) as err:
                raise TypeError(f"metadata {key!r} cannot be written as JSON: {err}") from None
        else:
            raise TypeError(f"metadata {key!r} must be a str, number, list or dict, got a {type(value).__name__}")
    return out


def metadata_values(metadata: dict | None) -> dict[str, Any]:
    """``metadata`` as a dump holds it once written and read back: each value with its JSON type. Text
    that reads as JSON is read as JSON (the files keep ``"epoch": "40"`` and ``class_names`` as text),
    so a string such as ``"100"`` comes back as the number 100; other text stays text, and so do the
    names ``split``, ``dataset``, ``method`` and ``format_version``.

    >>> metadata_values({"epoch": 3, "imbalance_ratio": "100", "class_names": '["cat", "dog"]', "split": "test"})
    {'epoch': 3, 'imbalance_ratio': 100, 'class_names': ['cat', 'dog'], 'split': 'test'}
    """
    return _decoded_all(stringify_metadata(metadata))
