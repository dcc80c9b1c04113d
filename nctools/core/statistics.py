"""Streaming, mergeable sufficient statistics for every NC metric: the ``NeuralCollapse`` accumulator.

Two passes over the features make every metric exact in float64 (docs/DEFINITIONS.md,
"Conventions: Two passes"):

* pass 1 accumulates per-class counts and float64 sums, hence the class means (:mod:`.sums`);
* pass 2 measures each residual ``r = h - mu_y`` against the frozen means with one matrix
  product per chunk: ``r @ [W^T | V]`` gives the logits (accuracy, NC4) and the coordinates of
  ``r`` in the span ``V`` of the centred means, which is all that ``tr(Sigma_W Sigma_B^+)`` and
  the nearest-class-centre rule need. Residuals are formed before any product, so nearly
  collapsed features keep their digits (the textbook ``E[hh^T] - mu mu^T`` does not)
  (:mod:`.residuals`).

Every piece of state is a sum, so chunks, files and processes merge by addition; under an
initialised ``torch.distributed`` the sums are all-reduced before the means are frozen and
before the result is computed (:mod:`.reducer`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .device import resolve_device
from .reducer import State, StateSpec, join, zeros_like
from .residuals import (
    Pass2Plan,
    add_residuals,
    check_same_data,
    compute_dtype_for,
    make_plan,
    pass2_spec,
)
from .sums import PASS1, Scratch, chunk_sums, on_device
from .validation import as_tensor, check_classifier, check_labels

if TYPE_CHECKING:
    from .result import NCResult

__all__ = ["NeuralCollapse", "CENTERS"]

CENTERS = ("class", "sample")
_F64 = torch.float64


class NeuralCollapse:
    """Accumulate the statistics of every neural-collapse metric, chunk by chunk.

    A torchmetrics-style accumulator: ``update(features, labels)`` per chunk on any device,
    ``next_pass()`` between the two passes, ``compute()`` for an :class:`~nctools.NCResult`,
    ``reset()``, ``merge(other)``; sums are all-reduced across processes when
    ``torch.distributed`` is initialised. Nothing holds more than one chunk of features.

    After pass 1 alone, ``compute()`` gives every metric of the class means and the classifier
    (NC2, NC3, ICPA, bias collapse); NC1, NC4 and accuracy need pass 2 and are ``None`` until then.

    Args:
        num_classes: C.
        weight: classifier weight (C, d), optional.
        bias: classifier bias (C,), optional.
        center: ``"class"`` (mean of class means, default) or ``"sample"`` (global sample mean).
        device: where the statistics live; ``"auto"`` picks CUDA when available.
        validate_args: check each chunk's shape, labels and finiteness (cheap: no extra pass).

    >>> import torch
    >>> from nctools.core.geometry import simplex_etf
    >>> means = 5 * simplex_etf(4, 8, dtype=torch.float32)
    >>> labels = torch.arange(4).repeat(25)
    >>> feats = means[labels] + 0.01 * torch.randn(100, 8)
    >>> nc = NeuralCollapse(4, weight=means)
    >>> for part in (slice(0, 50), slice(50, 100)):
    ...     nc.update(feats[part], labels[part])
    >>> nc.next_pass()
    >>> for part in (slice(0, 50), slice(50, 100)):
    ...     nc.update(feats[part], labels[part])
    >>> result = nc.compute()
    >>> result.summary["accuracy"], result.summary["nc1"] < 1e-4
    (1.0, True)
    """

    def __init__(
        self,
        num_classes: int,
        weight=None,
        bias=None,
        *,
        center: str = "class",
        device="auto",
        validate_args: bool = True,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        num_classes = int(num_classes)
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        self.num_classes = num_classes
        self.center = center
        self.device = resolve_device(device)
        self.validate_args = validate_args
        self.weight = self.bias = None
        self.dim: int | None = None
        if bias is not None and weight is None:
            raise ValueError("bias was given without weight; pass the classifier's weight too")
        if weight is not None:
            w = as_tensor(weight, "weight")
            w, b = check_classifier(w, bias, w.shape[-1] if w.ndim == 2 else -1)
            if w.shape[0] != num_classes:
                raise ValueError(f"weight must have num_classes = {num_classes} rows, got {w.shape[0]}")
            self.weight = w.detach().to(self.device, _F64)
            self.bias = None if b is None else b.detach().to(self.device, _F64)
            self.dim = w.shape[1]
        self.reset()

    # ----------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget all data (the classifier and options stay)."""
        self.pass_index = 1
        self.dim = None if self.weight is None else self.weight.shape[1]
        self.plan: Pass2Plan | None = None
        self._global1: State | None = None
        self._rows = 0
        self._state: State = {}
        self._compute_dtype: torch.dtype | None = None
        self._scratch = Scratch(self.device)

    def _spec(self) -> StateSpec:
        return PASS1 if self.pass_index == 1 else pass2_spec(self.weight is not None)

    def _zeros(self, dim: int) -> State:
        return self._spec().zeros(self.num_classes, dim, self.device)

    # ---------------------------------------------------------------------------------- update
    def _check_chunk(self, features, labels):
        h = as_tensor(features, "features")
        y = as_tensor(labels, "labels")
        if self.validate_args:
            if h.ndim != 2 or not h.dtype.is_floating_point:
                raise ValueError(f"features must be a 2-D floating tensor (n, d), got {tuple(h.shape)} {h.dtype}")
            if self.dim is not None and h.shape[1] != self.dim:
                raise ValueError(f"features have dim {h.shape[1]}, expected {self.dim}")
            y = check_labels(y, h.shape[0], self.num_classes)
        return h, y

    @torch.no_grad()
    def update(self, features, labels) -> None:
        """Add one chunk: features (n, d) float, labels (n,) int in [0, C)."""
        h, y = self._check_chunk(features, labels)
        if h.shape[0] == 0:
            return
        if self.dim is None:
            self.dim = h.shape[1]
        if self._compute_dtype is None:
            self._compute_dtype = compute_dtype_for(h.dtype)
        if not self._state:
            self._state = self._zeros(self.dim)
        h, y = on_device(h, y, self.device)
        if self.pass_index == 1:
            part = chunk_sums(h, y, self.num_classes, self._scratch, check=self.validate_args, row_offset=self._rows)
            PASS1.merge_(self._state, part)
        else:
            add_residuals(self._state, self.plan, h, y, self._scratch, check=self.validate_args)
        self._rows += h.shape[0]

    # ------------------------------------------------------------------------- passes, merging
    def _ensure_state(self) -> None:
        # A process or twin that saw no data still joins the all-reduce (every process must).
        self._state, self.dim, self._compute_dtype = join(self._state, self._spec(), self.num_classes, self.dim,
                                                          self._compute_dtype, self.device)

    @torch.no_grad()
    def next_pass(self) -> None:
        """Freeze the class means (summed across processes) and start pass 2."""
        if self.pass_index != 1:
            raise RuntimeError("next_pass() was already called; call reset() to start again")
        self._ensure_state()
        self._global1 = PASS1.all_reduce(self._state, self.device)
        counts = self._global1["counts"]
        if int((counts > 0).sum()) < 2:
            raise ValueError(f"need samples of at least 2 classes, got {int((counts > 0).sum())}")
        self.plan = make_plan(counts, self._global1["sums"], self.weight, self.bias, self.center,
                              self._compute_dtype)
        self.pass_index = 2
        self._state = self._zeros(self.dim)

    def free_buffers(self, *, tables: bool = False) -> None:
        """Drop the per-chunk scratch tensors (made again by the next ``update``) and, with
        ``tables=True``, pass 2's (C, C) look-up tables too: ``compute()`` still works, further
        updates need ``reset()``."""
        self._scratch.clear()
        if tables and self.plan is not None:
            for name in ("logit_gap", "mean_dist_sq", "projector", "to_scores", "means_c"):
                setattr(self.plan, name, None)

    def spawn(self) -> NeuralCollapse:
        """An empty accumulator with the same options, classifier and (in pass 2) frozen means:
        give one to each worker, then ``merge`` them back."""
        twin = NeuralCollapse.__new__(NeuralCollapse)
        twin.__dict__.update(self.__dict__)
        twin._rows = 0
        twin._scratch = Scratch(self.device)
        twin._state = zeros_like(self._state)
        return twin

    def merge(self, other: NeuralCollapse) -> NeuralCollapse:
        """Add another accumulator's statistics (same classes, dimension and pass) into this one."""
        if not isinstance(other, NeuralCollapse):
            raise TypeError(f"can only merge another NeuralCollapse, got {type(other).__name__}")
        if (other.num_classes, other.center) != (self.num_classes, self.center):
            raise ValueError("cannot merge accumulators with different num_classes or center")
        if not _same_tensor(self.weight, other.weight):
            raise ValueError("cannot merge accumulators with different classifier weights")
        if not _same_tensor(self.bias, other.bias):
            raise ValueError("cannot merge accumulators with different classifier biases")
        if not other._state or other._rows == 0 and other.pass_index == self.pass_index:
            return self
        if self.dim is not None and other.dim is not None and other.dim != self.dim:
            raise ValueError(f"cannot merge dims {self.dim} and {other.dim}")
        if other.pass_index != self.pass_index:
            raise ValueError(f"cannot merge an accumulator in pass {other.pass_index} "
                             f"into one in pass {self.pass_index}")
        if self.pass_index == 2 and not torch.equal(self.plan.means, other.plan.means.to(self.device)):
            raise ValueError("cannot merge pass-2 statistics measured against different class means")
        if not self._state:
            self.dim, self._compute_dtype = other.dim, other._compute_dtype
            self._state = self._zeros(self.dim)
        self._spec().merge_(self._state, other._state)
        self._rows += other._rows
        return self

    def statistics(self) -> dict[str, torch.Tensor]:
        """The pass-1 sums (and the pass-2 sums when pass 2 ran), reduced across processes.

        Under ``torch.distributed`` this is a collective: call it (and ``next_pass``, ``compute``)
        on every process."""
        self._ensure_state()
        if self.pass_index == 1:
            return PASS1.all_reduce(self._state, self.device)
        second = self._spec().all_reduce(self._state, self.device)
        if not torch.equal(second["counts"], self._global1["counts"]):
            raise ValueError(
                "pass 2 saw different data than pass 1 "
                f"({int(second['counts'].sum())} vs {int(self._global1['counts'].sum())} samples)"
            )
        if "checksum" in second:
            check_same_data(self._global1["counts"], second, self.plan)
        return {**self._global1, **{f"pass2_{k}": v for k, v in second.items()}}

    @torch.no_grad()
    def compute(self, *, class_counts=None, groups=(100, 20), squeeze_deg: float = 5.0,
                split: str | None = None) -> NCResult:
        """The :class:`~nctools.NCResult` of everything seen so far.

        ``class_counts``: the training counts per class, which define the many / medium / few groups;
        without them the counts of the data seen stand in, which is right only for the training set:
        with ``split`` other than ``"train"`` (a test or validation split) the verdict is then withheld.
        ``squeeze_deg``: how far below the optimum a group's mean angle counts as squeezed."""
        from .result import build_result

        stats = self.statistics()
        plan = self.plan
        if plan is None:
            plan = make_plan(stats["counts"], stats["sums"], self.weight, self.bias, self.center,
                             self._compute_dtype) if int((stats["counts"] > 0).sum()) >= 2 else None
            if plan is None:
                raise ValueError("need samples of at least 2 classes")
        return build_result(stats, plan, self.weight, self.bias, center=self.center, class_counts=class_counts,
                            groups=groups, squeeze_deg=squeeze_deg, counts_known=split in (None, "train"))


def _same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Both ``None``, or equal values (a twin from ``spawn`` shares the very tensor)."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and torch.equal(a, b.to(a.device)))
