"""Streaming, mergeable sufficient statistics for every NC metric.

Two passes over the features make every metric exact in float64 (``DESIGN.md``, "Few passes"):

* pass 1 accumulates per-class counts and float64 sums, hence the class means;
* pass 2 measures each residual ``r = h - mu_y`` against the frozen means with one matrix
  product per chunk: ``r @ [W^T | V]`` gives the logits (accuracy, NC4) and the coordinates of
  ``r`` in the span ``V`` of the centred means, which is all that ``tr(Sigma_W Sigma_B^+)`` and
  the nearest-class-centre rule need. Residuals are formed before any product, so nearly
  collapsed features keep their digits (the textbook ``E[hh^T] - mu mu^T`` does not).

Every piece of state is a sum, so chunks, files and processes merge by addition; under an
initialised ``torch.distributed`` the sums are all-reduced before the means are frozen and
before the result is computed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from .validation import as_tensor, check_classifier, check_finite, check_labels
from .device import resolve_device
from .geometry import squared_distances

__all__ = ["NeuralCollapse", "CENTERS"]

CENTERS = ("class", "sample")
_F64 = torch.float64


@contextlib.contextmanager
def _exact_matmul():
    """Keep TF32 out of float32 products on GPUs (it would cost about three digits)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@dataclass
class Pass2Plan:
    """Everything pass 2 needs, derived once from the pass-1 sums (all on one device)."""

    present: torch.Tensor  # (C,) bool: classes with at least one sample
    present_ids: torch.Tensor  # (C',) class index of each present class
    index: torch.Tensor  # (C,) position among present classes, -1 if absent
    means: torch.Tensor  # (C', d) float64 class means
    center: torch.Tensor  # (d,) float64 global centre mu_G
    centred: torch.Tensor  # (C', d) float64, M~ = means - center
    basis: torch.Tensor  # (d, k) float64 right singular vectors of M~ kept for the pseudo-inverse
    singular: torch.Tensor  # (k,) float64 their singular values
    compute_dtype: torch.dtype
    means_c: torch.Tensor  # (C', d) means rounded to the compute dtype
    # One product r @ [V | W^T] per chunk: a single wide GEMM runs near the BLAS peak, two
    # narrower ones (measured on 2 cores) about 20% below it.
    projector: torch.Tensor  # (d, k + C), or (d, k) without a classifier, in the compute dtype
    # Decisions are scored against the sample's own class, so that float32 rounding scales with
    # the gaps between classes, not with the size of the features (two nearly merged tail means
    # stay apart; a large common offset cancels):
    logit_gap: Optional[torch.Tensor]  # (C', C) (w_c - w_y).mu_y + b_c - b_y: logits - own logit at h = mu_y
    mean_dist_sq: torch.Tensor  # (C', C') ||mu_c - mu_y||^2
    to_scores: torch.Tensor  # (k, C') (U S)^T = V^T M~^T: projections -> dot products with M~
    inv_singular: torch.Tensor  # (k,) 1/s, float64 when the means are too ill-conditioned for float32
    # Pass 2 measures r = h - round(mu_y); these undo the rounding, per class and exactly, since
    # the class sum of round-off residuals is n_c (mu - round(mu)) (DESIGN: match float64).
    delta_sq: torch.Tensor  # (C',) float64 ||mu - round(mu)||^2
    nc1_offset_sq: torch.Tensor  # (C',) float64 ||S^-1 V^T (mu - round(mu))||^2


# Eigenvalues of the Gram matrix M~ M~^T are exact to about eps64 * lambda_max, so the Gram route
# gives singular values to ~1e-10 relative while lambda_min >= 1e-6 lambda_max; past that the
# (slower) SVD of M~ itself resolves them.
GRAM_EIGEN_FLOOR = 1e-6



def pseudo_inverse_directions(centred: torch.Tensor):
    """Right singular vectors V and values s of M~ kept for Sigma_B^+.

    DESIGN: at most C'-1 directions (the rank of centred means), dropping singular values below
    max(C', d) * eps64 * s_max.
    """
    c, d = centred.shape
    k_max = min(c - 1, d)
    # The smaller Gram matrix: M~ M~^T (C', C') gives U, then V = M~^T U S^-1; M~^T M~ (d, d)
    # gives V directly (iNaturalist: C' = 8,142 > d = 2,048).
    evals, evecs = torch.linalg.eigh(centred @ centred.T if c <= d else centred.T @ centred)  # ascending
    evals, evecs = evals.flip(0)[:k_max], evecs.flip(1)[:, :k_max]
    if k_max == 0 or evals[0] <= 0:
        return centred.new_zeros(d, 0), centred.new_zeros(0)
    if evals[-1] >= GRAM_EIGEN_FLOOR * evals[0]:
        s = evals.sqrt()
        return ((centred.T @ evecs) / s if c <= d else evecs.contiguous()), s
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    tol = max(c, d) * torch.finfo(_F64).eps * s[0]
    keep = int(min(k_max, int((s > tol).sum())))
    return vh[:keep].T.contiguous(), s[:keep].contiguous()


def centre_of(means: torch.Tensor, counts: torch.Tensor, center: str) -> torch.Tensor:
    """mu_G: the unweighted mean of class means (``class``) or the sample mean (``sample``)."""
    if center == "class":
        return means.mean(0)
    weights = counts.to(_F64) / counts.sum()
    return weights @ means


def make_plan(counts, sums, weight, bias, center: str, compute_dtype: torch.dtype) -> Pass2Plan:
    present = counts > 0
    present_ids = present.nonzero().squeeze(1)
    index = torch.full_like(counts, -1)
    index[present_ids] = torch.arange(len(present_ids), device=counts.device)
    means = sums[present_ids] / counts[present_ids].to(_F64).unsqueeze(1)
    mu_g = centre_of(means, counts[present_ids], center)
    centred = means - mu_g
    basis, singular = pseudo_inverse_directions(centred)
    means_c = means.to(compute_dtype)
    delta = means - means_c.to(_F64)  # (C', d) round-off of the means
    logit_gap = None
    if weight is not None:  # (C', C), a block of classes at a time (C'^2 float64 is 530 MB for iNat)
        logit_gap = torch.empty(len(present_ids), weight.shape[0], dtype=compute_dtype, device=means.device)
        for start in range(0, len(present_ids), 1024):
            rows = slice(start, start + 1024)
            logits = means_c[rows].to(_F64) @ weight.T + (0.0 if bias is None else bias)  # at the rounded means
            logit_gap[rows] = logits - logits.gather(1, present_ids[rows].unsqueeze(1))
    return Pass2Plan(
        present=present,
        present_ids=present_ids,
        index=index,
        means=means,
        center=mu_g,
        centred=centred,
        basis=basis,
        singular=singular,
        compute_dtype=compute_dtype,
        means_c=means_c,
        projector=(basis if weight is None else torch.cat([basis, weight.T], dim=1)).to(compute_dtype).contiguous(),
        logit_gap=logit_gap,
        mean_dist_sq=squared_distances(centred, dtype=compute_dtype),
        to_scores=(centred @ basis).T.to(compute_dtype).contiguous(),
        inv_singular=(1.0 / singular).to(compute_dtype if _well_conditioned(singular) else _F64),
        delta_sq=delta.square().sum(1),
        nc1_offset_sq=((delta @ basis) / singular).square().sum(1),
    )


def _well_conditioned(singular: torch.Tensor) -> bool:
    # (p / s)^2 in float32 overflows or underflows only for condition numbers far past 1e6.
    return singular.numel() == 0 or bool(singular[-1] >= 1e-6 * singular[0])


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
        self.dim: Optional[int] = None
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
        self.plan: Optional[Pass2Plan] = None
        self._global1: Optional[Dict[str, torch.Tensor]] = None
        self._rows = 0
        self._state: Dict[str, torch.Tensor] = {}
        self._compute_dtype: Optional[torch.dtype] = None
        self._buffers: Dict[str, torch.Tensor] = {}

    def _zeros(self, dim: int) -> Dict[str, torch.Tensor]:
        c, dev = self.num_classes, self.device
        if self.pass_index == 1:
            return {"counts": torch.zeros(c, dtype=torch.long, device=dev),
                    "sums": torch.zeros(c, dim, dtype=_F64, device=dev)}
        state = {name: torch.zeros(c, dtype=_F64, device=dev)
                 for name in ("resid_sq", "nc1_terms", "ncc_hits")}
        state["counts"] = torch.zeros(c, dtype=torch.long, device=dev)
        if self.weight is not None:
            state["hits"] = torch.zeros(c, dtype=_F64, device=dev)
            state["mismatch"] = torch.zeros(c, dtype=_F64, device=dev)
        return state

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
        h = h.detach()
        if h.shape[0] == 0:
            return
        if self.dim is None:
            self.dim = h.shape[1]
        if self._compute_dtype is None:
            self._compute_dtype = _F64 if h.dtype == _F64 else torch.float32
        if not self._state:
            self._state = self._zeros(self.dim)
        # Non-blocking only towards a GPU: a non-blocking copy to the CPU may be read too early.
        to_gpu = self.device.type == "cuda"
        h = h.to(self.device, non_blocking=to_gpu)
        y = y.to(self.device, non_blocking=to_gpu).long()
        if self.pass_index == 1:
            self._update_moments(h, y)
        else:
            with _exact_matmul():
                self._update_residuals(h, y)
        self._rows += h.shape[0]

    def _update_moments(self, h: torch.Tensor, y: torch.Tensor) -> None:
        # float64 sums of the float32 values are exact to ~eps64 * sqrt(n) of the features' size:
        # far below any within-class spread, however collapsed (float32 partial sums are not).
        h64 = self._buffer("h64", h.shape[0], h.shape[1], _F64).copy_(h)
        part = self._buffer("part", self.num_classes, self.dim, _F64).zero_().index_add_(0, y, h64)
        if self.validate_args and not bool(torch.isfinite(part).all()):
            check_finite(h, "features", row_offset=self._rows)
        self._state["counts"] += torch.bincount(y, minlength=self.num_classes)
        self._state["sums"] += part

    def _buffer(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """A reusable (rows, cols) scratch tensor: fresh chunk-sized allocations cost a page
        fault per 4 KB on every chunk, a sizeable share of pass 2 on a CPU."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype:
            buf = torch.empty(rows, cols, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:rows]

    def _gather(self, name: str, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = self._buffer(name, index.shape[0], table.shape[1], table.dtype)
        return torch.index_select(table, 0, index, out=out)

    def _update_residuals(self, h: torch.Tensor, y: torch.Tensor) -> None:
        plan, state, c = self.plan, self._state, self.num_classes
        if plan.projector is None:
            raise RuntimeError("pass 2's tables were freed (free_buffers(tables=True)); call reset() to start again")
        yp = plan.index[y]  # position among present classes
        if self.validate_args and bool((yp < 0).any()):
            raise ValueError("pass 2 saw a class that pass 1 never saw: both passes must see the same data")
        hc = h.to(plan.compute_dtype)
        r = self._gather("r", plan.means_c, yp)
        torch.sub(hc, r, out=r)  # (n, d) residual to the rounded class mean
        k = plan.basis.shape[1]
        out = torch.mm(r, plan.projector, out=self._buffer("out", r.shape[0], plan.projector.shape[1], r.dtype))
        proj = out[:, :k]  # (n, k) V^T r
        # ||h - mu_c||^2 = ||r||^2 + 2 r.(mu~_y - mu~_c) + ||mu_y - mu_c||^2, and r.mu~_c = (V^T r).(V^T mu~_c):
        # minus a per-sample constant, the score is ||mu_y - mu_c||^2 - 2 (V^T r).(V^T mu~_c).
        scores = self._gather("scores", plan.mean_dist_sq, yp).addmm_(proj, plan.to_scores, alpha=-2.0)
        nearest = scores.argmin(1)
        add = lambda name, values: state[name].index_add_(0, y, values.to(_F64))  # noqa: E731
        state["counts"] += torch.bincount(y, minlength=c)
        # Sums of positive terms: float32 loses no digits that matter here.
        add("resid_sq", torch.linalg.vector_norm(r, dim=1).square())
        scaled = proj.mul_(plan.inv_singular) if proj.dtype == plan.inv_singular.dtype else proj * plan.inv_singular
        add("nc1_terms", torch.linalg.vector_norm(scaled, dim=1).square())
        add("ncc_hits", nearest == yp)
        if self.weight is not None:
            # W h + b minus the sample's own-class logit (a per-sample constant): W r + gap[y].
            predicted = out[:, k:].add_(self._gather("logits", plan.logit_gap, yp)).argmax(1)
            add("hits", predicted == y)
            add("mismatch", predicted != plan.present_ids[nearest])

    # ------------------------------------------------------------------------- passes, merging
    def _reduced(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The state summed over processes (a copy), or the state itself in one process."""
        if not self._distributed():
            return state
        dist, comm = torch.distributed, self._comm_device()
        out = {}
        for name, value in state.items():
            reduced = value.to(comm, copy=True)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            out[name] = reduced.to(value.device)
        return out

    def _ensure_state(self) -> None:
        """Zero statistics for a process or twin that saw no data, so that it still takes part in
        the all-reduce (every process must); the dimension and product dtype come from the others."""
        if self._distributed():
            dist = torch.distributed
            seen = torch.tensor([self.dim or 0, int(self._compute_dtype == torch.float32)], device=self._comm_device())
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
            if not self._state and int(seen[0]) > 0:
                self.dim = int(seen[0])
                self._compute_dtype = torch.float32 if int(seen[1]) else _F64
        if not self._state and self.dim is not None and (self._compute_dtype or self._distributed()):
            self._compute_dtype = self._compute_dtype or torch.float32
            self._state = self._zeros(self.dim)
        if not self._state:
            raise RuntimeError("no data was seen: call update() first")

    @staticmethod
    def _distributed() -> bool:
        dist = torch.distributed
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")

    @torch.no_grad()
    def next_pass(self) -> None:
        """Freeze the class means (summed across processes) and start pass 2."""
        if self.pass_index != 1:
            raise RuntimeError("next_pass() was already called; call reset() to start again")
        self._ensure_state()
        self._global1 = self._reduced(self._state)
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
        self._buffers = {}
        if tables and self.plan is not None:
            for name in ("logit_gap", "mean_dist_sq", "projector", "to_scores", "means_c"):
                setattr(self.plan, name, None)

    def spawn(self) -> "NeuralCollapse":
        """An empty accumulator with the same options, classifier and (in pass 2) frozen means:
        give one to each worker, then ``merge`` them back."""
        twin = NeuralCollapse.__new__(NeuralCollapse)
        twin.__dict__.update(self.__dict__)
        twin._rows = 0
        twin._buffers = {}
        twin._state = twin._zeros(self.dim) if self._state else {}
        return twin

    def merge(self, other: "NeuralCollapse") -> "NeuralCollapse":
        """Add another accumulator's statistics (same classes, dimension and pass) into this one."""
        if not isinstance(other, NeuralCollapse):
            raise TypeError(f"can only merge another NeuralCollapse, got {type(other).__name__}")
        if (other.num_classes, other.center) != (self.num_classes, self.center):
            raise ValueError("cannot merge accumulators with different num_classes or center")
        if not other._state or other._rows == 0 and other.pass_index == self.pass_index:
            return self
        if self.dim is not None and other.dim is not None and other.dim != self.dim:
            raise ValueError(f"cannot merge dims {self.dim} and {other.dim}")
        if other.pass_index != self.pass_index:
            raise ValueError(f"cannot merge an accumulator in pass {other.pass_index} into one in pass {self.pass_index}")
        if self.pass_index == 2 and not torch.equal(self.plan.means, other.plan.means.to(self.device)):
            raise ValueError("cannot merge pass-2 statistics measured against different class means")
        if not self._state:
            self.dim, self._compute_dtype = other.dim, other._compute_dtype
            self._state = self._zeros(self.dim)
        for name, value in other._state.items():
            self._state[name] += value.to(self.device)
        self._rows += other._rows
        return self

    def statistics(self) -> Dict[str, torch.Tensor]:
        """The pass-1 sums (and the pass-2 sums when pass 2 ran), reduced across processes.

        Under ``torch.distributed`` this is a collective: call it (and ``next_pass``, ``compute``)
        on every process."""
        self._ensure_state()
        if self.pass_index == 1:
            return self._reduced(self._state)
        second = self._reduced(self._state)
        if not torch.equal(second["counts"], self._global1["counts"]):
            raise ValueError(
                "pass 2 saw different data than pass 1 "
                f"({int(second['counts'].sum())} vs {int(self._global1['counts'].sum())} samples)"
            )
        return {**self._global1, **{f"pass2_{k}": v for k, v in second.items()}}

    @torch.no_grad()
    def compute(self, *, class_counts=None, groups=(100, 20)):
        """The :class:`~nctools.NCResult` of everything seen so far."""
        from .result import build_result

        stats = self.statistics()
        plan = self.plan
        if plan is None:
            plan = make_plan(stats["counts"], stats["sums"], self.weight, self.bias, self.center,
                             self._compute_dtype) if int((stats["counts"] > 0).sum()) >= 2 else None
            if plan is None:
                raise ValueError("need samples of at least 2 classes")
        return build_result(stats, plan, self.weight, self.bias, center=self.center,
                            class_counts=class_counts, groups=groups)

