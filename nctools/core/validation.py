"""Input checks shared by every public entry point.

Each check raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value, with one
sentence that names the argument, says what was expected and shows what arrived. Cheap checks
come first; the precise (slower) search for *where* a problem is runs only once one is found.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

from .rows import RowSource

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


_SPARSE_LAYOUTS = tuple(getattr(torch, name) for name in ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr",
                                                           "sparse_bsc") if hasattr(torch, name))


def as_tensor(value, name: str) -> torch.Tensor:
    """Return ``value`` as a tensor without copying where possible (numpy arrays are shared).

    A tensor must be dense and hold data: a sparse, nested or meta tensor raises one sentence
    (torch's own errors deep inside a product would not name the argument).
    """
    if isinstance(value, torch.Tensor):
        check_dense(value, name)
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric array, got a numpy array of dtype {value.dtype}")
        if not value.dtype.isnative:  # big-endian data: torch only takes native byte order
            value = value.astype(value.dtype.newbyteorder("="))
        if value.dtype.kind == "u" and value.dtype.itemsize > 1:  # torch has few unsigned ops
            value = value.astype(np.int64)
        with warnings.catch_warnings():
            # A read-only array (a memory-mapped dump) is fine: nctools never writes to its inputs.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(value)
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} could not be turned into a tensor: {err}") from None
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def check_dense(t: torch.Tensor, name: str) -> None:
    """Raise ``TypeError`` for a sparse or nested tensor and ``ValueError`` for one on the meta
    device (it has a shape but no values)."""
    if t.layout in _SPARSE_LAYOUTS:
        raise TypeError(f"{name} is a sparse tensor; pass a dense tensor ({name}.to_dense())")
    if t.is_nested:
        raise TypeError(f"{name} is a nested tensor; pass one dense tensor")
    if t.layout != torch.strided:
        raise TypeError(f"{name} has layout {t.layout}; pass a dense tensor ({name}.to_dense())")
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no data")


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def check_finite(t: torch.Tensor, name: str, row_offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of a floating tensor (``t`` may be
    rows ``row_offset...`` of a larger one: the message gives the index in the larger one)."""
    flat = t.reshape(-1)
    # Sum in blocks: one float64 sum per block is cheap and never copies the whole tensor.
    if all(bool(torch.isfinite(block.sum(dtype=torch.float64))) for block in flat.split(1 << 22)):
        return
    bad = (~torch.isfinite(t)).nonzero()
    if len(bad) == 0:  # the float64 sum itself overflowed: values near float64's limit
        raise ValueError(f"{name} holds values too large to accumulate in float64")
    first = tuple(int(i) for i in bad[0])
    value = t[first].item()
    first = (first[0] + row_offset, *first[1:])
    where = f"[{first[0]}]" if len(first) == 1 else f"[{first[0]}, {first[1]}]"
    raise ValueError(
        f"{name} must be finite, but {_plural(len(bad), 'entry is', 'entries are')} NaN or Inf "
        f"(first: {name}{where} = {value})"
    )


def check_features(features, name: str = "features", *, finite: bool = True) -> torch.Tensor:
    """A non-empty 2-D floating tensor (N, d), or a :class:`~nctools.core.rows.RowSource` on disk
    (whose finiteness is checked later, chunk by chunk, as the analysis reads it)."""
    if isinstance(features, RowSource):
        if features.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be floating (float16/bfloat16/float32/float64), got {features.dtype}")
        if 0 in features.shape:
            raise ValueError(f"{name} is empty: shape {tuple(features.shape)}")
        return features
    h = as_tensor(features, name)
    if h.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_samples, dim), got shape {_shape(h)}")
    if h.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {h.dtype}")
    if h.shape[0] == 0 or h.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {_shape(h)}")
    if finite:
        check_finite(h, name)
    return h


def check_labels(labels, num_samples: int, num_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """A 1-D integer tensor of length ``num_samples`` with values in ``[0, num_classes)``."""
    y = as_tensor(labels, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (num_samples,), got shape {_shape(y)}")
    if y.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (class indices), got {y.dtype}")
    if y.shape[0] != num_samples:
        raise ValueError(
            f"features and {name} have inconsistent numbers of samples: [{num_samples}, {y.shape[0]}]"
        )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            upper = num_classes if num_classes is not None else hi + 1
            bad = int(((y < 0) | (y >= upper)).sum())
            allowed = f"[0, {num_classes})" if num_classes is not None else "[0, inf)"
            raise ValueError(
                f"{name} must lie in {allowed}, but {_plural(bad, 'label is', 'labels are')} outside it "
                f"(min {lo}, max {hi})"
            )
    return y.long()


def check_classifier(weight, bias, dim: int, *, finite: bool = True, names=("weight", "bias")
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``weight`` (C, d) and ``bias`` (C,) or None; returns them as tensors. ``names`` are the
    words the messages use (a dump file says ``classifier.weight``)."""
    wname, bname = names
    w = as_tensor(weight, wname)
    if w.ndim != 2:
        raise ValueError(f"{wname} must be 2-D (num_classes, dim), got shape {_shape(w)}")
    if w.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{wname} must be a floating tensor, got {w.dtype}")
    if w.shape[1] != dim:
        raise ValueError(
            f"{wname} has {w.shape[1]} columns but the features have dim {dim}: "
            f"{wname} must be (num_classes, {dim}), got {_shape(w)}"
        )
    if w.shape[0] < 2:
        raise ValueError(f"{wname} must have at least 2 rows (classes), got shape {_shape(w)}")
    if finite:
        check_finite(w, wname)
    b = None
    if bias is not None:
        b = as_tensor(bias, bname)
        if b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise ValueError(f"{bname} must be 1-D with one entry per {wname} row ({w.shape[0]},), got {_shape(b)}")
        if b.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{bname} must be a floating tensor, got {b.dtype}")
        if finite:
            check_finite(b, bname)
    return w, b


def check_class_counts(class_counts, num_classes: int) -> torch.Tensor:
    """Non-negative integer training counts, one per class."""
    n = as_tensor(class_counts, "class_counts")
    if n.ndim != 1 or n.shape[0] != num_classes:
        raise ValueError(f"class_counts must be 1-D with one entry per class ({num_classes},), got {_shape(n)}")
    if n.dtype.is_floating_point:
        if not bool(torch.isfinite(n).all()):
            raise ValueError("class_counts must be finite whole numbers, got NaN or Inf")
        if not torch.equal(n, n.round()):
            raise ValueError("class_counts must be whole numbers")
    elif n.dtype not in _INT_DTYPES:
        raise TypeError(f"class_counts must be an integer tensor, got {n.dtype}")
    if n.numel() and int(n.min()) < 0:
        raise ValueError(f"class_counts must be non-negative, got min {int(n.min())}")
    return n.long()


class CheckedInputs(NamedTuple):
    features: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    class_counts: torch.Tensor | None
    num_classes: int


def check_inputs(
    features,
    labels,
    weight=None,
    bias=None,
    class_counts=None,
    num_classes: int | None = None,
    *,
    finite: bool = True,
) -> CheckedInputs:
    """Validate one set of analysis inputs and resolve the number of classes C.

    C comes from ``num_classes``, else the classifier's rows, else ``class_counts``, else
    ``max(labels) + 1``; every source that is given must agree with it.
    """
    h = check_features(features, finite=finite)
    if bias is not None and weight is None:
        raise ValueError("bias was given without weight; pass the classifier's weight too")
    w = b = None
    if weight is not None:
        w, b = check_classifier(weight, bias, h.shape[1], finite=finite)
    sources = {}
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        sources["num_classes"] = int(num_classes)
    if w is not None:
        sources["weight rows"] = w.shape[0]
    if class_counts is not None:
        counts = as_tensor(class_counts, "class_counts")
        if counts.ndim == 1:
            sources["class_counts"] = counts.shape[0]
    if len(set(sources.values())) > 1:
        said = ", ".join(f"{k} = {v}" for k, v in sources.items())
        raise ValueError(f"the number of classes is inconsistent: {said}")
    y = as_tensor(labels, "labels")
    if sources:
        c = next(iter(sources.values()))
    else:
        check_labels(y, h.shape[0])  # dtype, rank and length first: they decide whether max+1 means anything
        c = int(y.max()) + 1
        if c < 2:
            raise ValueError(
                f"need at least 2 classes, but the labels name only {max(c, 0)}; "
                "pass num_classes or the classifier weight"
            )
    y = check_labels(y, h.shape[0], c)
    n = check_class_counts(class_counts, c) if class_counts is not None else None
    return CheckedInputs(h, y, w, b, n, c)
