"""``nctools.analyze``: the whole NC picture of one set of features in two streaming passes."""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .audit import check_groups
from .result import NCResult
from .statistics import CENTERS, NeuralCollapse
from .validation import as_tensor, check_inputs

__all__ = ["analyze", "auto_chunk_size", "chunks"]

_CHUNK_BYTES = 1 << 27  # about 128 MB of float32 temporaries per chunk


def auto_chunk_size(num_classes: int, dim: int) -> int:
    """Rows per chunk so that one chunk's temporaries (residuals, logits, distances) stay near 128 MB."""
    per_row = 4 * (2 * dim + 5 * num_classes)
    return int(min(16384, max(256, _CHUNK_BYTES // per_row)))


def chunks(features, labels, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features, labels)`` in consecutive blocks of ``chunk_size`` rows, one block in memory at a time."""
    # Slicing works for tensors, numpy arrays and numpy memmaps alike; only one chunk is
    # materialised at a time, so a memory-mapped dump is never read whole.
    for start in range(0, features.shape[0], chunk_size):
        h = features[start:start + chunk_size]
        y = labels[start:start + chunk_size]
        if isinstance(h, np.ndarray):  # byte order, read-only memory maps: as_tensor handles them
            h = as_tensor(np.ascontiguousarray(h), "features")
        yield h, y


@torch.no_grad()
def analyze(
    features,
    labels,
    weight=None,
    bias=None,
    *,
    class_counts=None,
    center: str = "class",
    device="auto",
    chunk_size: int | None = None,
    num_classes: int | None = None,
    groups: Sequence[float] = (100, 20),
    squeeze_deg: float = 5.0,
    split: str | None = None,
    progress: bool | None = None,
    validate: bool = True,
) -> NCResult:
    """Compute every neural-collapse metric of penultimate features and a linear classifier.

    Two streaming passes over ``features`` in chunks (float64 statistics, float32 products for
    float32/float16 features, no TF32), so the features may be a memory-mapped array larger
    than memory.

    Args:
        features: (N, d) float tensor or numpy array (float16, bfloat16, float32 or float64).
        labels: (N,) integer class indices in [0, C).
        weight: classifier weight W (C, d), optional; without it the classifier metrics are null.
        bias: classifier bias b (C,), optional.
        class_counts: training counts per class (C,), for the many / medium / few split when the
            features are from a test set; the counts of ``labels`` otherwise.
        center: ``"class"`` (unweighted mean of class means, default) or ``"sample"``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, or a ``torch.device``.
        chunk_size: rows per chunk; default sized so a chunk's temporaries stay near 128 MB.
        num_classes: C when neither ``weight`` nor ``class_counts`` gives it (else max label + 1).
        groups: ``(many, few)`` thresholds: many-shot classes have > many training samples, few-shot < few.
        squeeze_deg: a group whose mean pairwise angle lies more than this below the optimum is squeezed.
        split: which split the features are of (``"train"``, ``"test"``, ...); a non-training split without
            ``class_counts`` has no training counts to group by, and its verdict is withheld.
        progress: show a progress bar (default: on a terminal, for inputs over 50M values).
        validate: check shapes, labels and finiteness (the finiteness check rides on pass 1).

    Returns:
        :class:`~nctools.NCResult` with ``.summary``, ``.per_class``, ``.icpa_means``,
        ``.icpa_classifier``, ``.audit``, ``.verdict``, ``.notes`` and ``.to_json()``.

    >>> import torch, nctools
    >>> from nctools.core.geometry import simplex_etf
    >>> means = 3 * simplex_etf(10, 16, dtype=torch.float32)
    >>> labels = torch.arange(10).repeat_interleave(20)
    >>> result = nctools.analyze(means[labels], labels, weight=means)
    >>> result.summary["nc1"], round(result.summary["icpa_mean_deg_means"], 2), result.summary["accuracy"]
    (0.0, 96.38, 1.0)
    """
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    check_groups(groups)
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        chunk_size = int(chunk_size)
    checked = check_inputs(features, labels, weight, bias, class_counts, num_classes, finite=False)
    if validate:
        from .validation import check_finite

        for name, t in (("weight", checked.weight), ("bias", checked.bias)):
            if t is not None:
                check_finite(t, name)
    feats = features if isinstance(features, np.ndarray) else checked.features
    labs = checked.labels
    n, d = checked.features.shape
    c = checked.num_classes
    rows = chunk_size or auto_chunk_size(c, d)
    acc = NeuralCollapse(c, checked.weight, checked.bias, center=center, device=device, validate_args=validate)
    if progress is None:
        progress = sys.stderr.isatty() and n * d >= 50_000_000
    total = 2 * ((n + rows - 1) // rows)
    with tqdm(total=total, desc="nctools", unit="chunk", disable=not progress, leave=False) as bar:
        for h, y in chunks(feats, labs, rows):
            acc.update(h, y)
            bar.update()
        acc.next_pass()
        for h, y in chunks(feats, labs, rows):
            acc.update(h, y)
            bar.update()
    acc.free_buffers(tables=True)  # the result's (C, C) matrices need the room more
    return acc.compute(class_counts=checked.class_counts, groups=groups, squeeze_deg=squeeze_deg, split=split)
