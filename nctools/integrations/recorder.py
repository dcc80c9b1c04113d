"""Measure neural collapse at the end of a training epoch, the way the trainer's dumps do.

:class:`EpochRecorder` runs the model in eval mode over a fixed data loader, reads the input of
its classifier layer with the same forward hook as :func:`nctools.extract`, streams the features
through :class:`~nctools.NeuralCollapse` (two passes), and, when given a folder, writes
``out/dumps/epoch_NNNN.safetensors`` and ``out/run.json`` so that ``nctools track out`` draws the
curves. The model's train / eval mode and every random number generator are restored afterwards,
so the training run is the same with or without it.

The dumps hold float32 features unless ``dump_dtype`` asks for ``float16`` or ``bfloat16``; the
metrics are then computed on the rounded features, exactly what is written, so the logged numbers
equal what ``nctools track`` computes from the dumps. An epoch whose features exceed float16's range
(65504) is not stored as float16: a warning, and that epoch's dump is written in float32.
:meth:`EpochRecorder.try_record` (what the callbacks call) turns any failure into one warning naming
the epoch and the reason, so that measuring never stops a training run.

The run folder is kept as ``allnc-train`` keeps its own (:mod:`nctools.io.run_folder`): ``out`` is
checked when the recorder is made (a file, or a folder that cannot be written, is refused at once);
:meth:`EpochRecorder.open` (the callbacks call it when training begins; the first write otherwise)
takes ``out/run.lock``, so a second run on the same folder is refused, and removes the temporaries
a killed writer left; :meth:`EpochRecorder.close` gives the lock up. ``run.json`` is merged by epoch
with the record on disk, so a resumed run keeps the epochs before it; nothing is written through a
symbolic link inside ``out``. Floating inputs are cast to the model's dtype (a half-precision model).

Under ``torch.distributed`` every rank measures its share of the batches (batch ``i`` on rank
``i % world``) and the statistics are all-reduced; rank 0 alone writes. A rank whose own part fails (its
batches, the model on them, the local math after a reduction) tells the others before the next
collective, and every rank gives up that epoch (:class:`RankFailed` on the ranks that did not fail) instead
of waiting for it; every rank must be given the same ``out``, ``class_counts`` and ``dump_dtype`` (checked).
Not covered: a rank failing inside a collective, one whose CUDA context is lost, and models whose forward
communicates (FSDP, ZeRO-3: the ranks run different numbers of batches). Without ``out`` nothing is
kept: the model runs over the loader twice, one pass per statistics pass, so the loader must give
the same samples both times (no random augmentation; shuffling is fine).

>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> data = DataLoader(TensorDataset(torch.randn(30, 4), torch.arange(3).repeat(10)), batch_size=8)
>>> recorder = EpochRecorder(data)
>>> result = recorder.record(net, epoch=1)
>>> result.summary["num_samples"], sorted(recorder.scalars(result))[:2]
(30, ['nc/accuracy', 'nc/icpa_mean_deg_classifier'])
"""
from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import keys as K
from ..core.audit import DEFAULT_GROUPS
from ..core.reducer import comm_device
from ..core.result import NCResult
from ..core.statistics import NeuralCollapse
from ..errors import one_line
from ..io.atomic import atomic_write_json
from ..io.dump import save_dump
from ..io.extraction import FeatureTap, batch_xy
from ..io.layout import dump_path, record_path
from ..io.run_folder import (
    RunLock,
    check_writable,
    make_run_folder,
    merge_epochs,
    read_epochs,
    refuse_links,
    remove_stale_temporaries,
)

__all__ = ["EpochRecorder", "LOGGED_KEYS", "RankFailed", "run_pair", "run_keywords"]

# The summary keys logged as scalars (``nc/<key>``) each time: the paper's curves.
LOGGED_KEYS = (
    K.NC1, K.NC1_BALANCED, K.NC2_COS_STD_MEANS, K.NC2_COS_STD_CLASSIFIER, K.NC2_EQUINORM_MEANS,
    K.NC2_EQUINORM_CLASSIFIER, K.ICPA_MEAN_DEG_MEANS, K.ICPA_MEAN_DEG_CLASSIFIER, K.NC3_SELF_DUALITY, K.NC3_COS_MEAN,
    K.NC4_NCC_MISMATCH, K.ACCURACY, K.TAIL_ICPA_MEAN_DEG_MEANS, K.TAIL_ICPA_MEAN_DEG_CLASSIFIER, K.TAIL_NC1,
)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# How one batch is fed to the model: (model, batch, index, device) -> the batch's labels.
BatchRunner = Callable[[torch.nn.Module, Any, int, torch.device], torch.Tensor]


def run_pair(model: torch.nn.Module, batch, index: int, device: torch.device) -> torch.Tensor:
    """``model(inputs)`` for ``(inputs, labels)`` batches (or dicts with ``image`` and ``label``)."""
    x, y = batch_xy(batch, index)
    model(_to_model(x, model, device))
    return torch.as_tensor(y)


def _to_model(x, model: torch.nn.Module, device: torch.device):
    """``x`` on ``device``; a floating tensor also in the model's floating dtype (a ``16-true`` model)."""
    if not isinstance(x, torch.Tensor):
        return x
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if x.is_floating_point() and dtype is not None:
        return x.to(device=device, dtype=dtype)
    return x.to(device)


def run_keywords(model: torch.nn.Module, batch, index: int, device: torch.device) -> torch.Tensor:
    """``model(**inputs)`` for dict batches whose labels are under ``labels`` or ``label``
    (Hugging Face style); the labels are not passed to the model, so it computes no loss."""
    if not isinstance(batch, dict):
        return run_pair(model, batch, index, device)
    key = next((k for k in ("labels", "label") if k in batch), None)
    if key is None:
        raise TypeError(f"batch {index} of the loader has no 'labels' (or 'label') entry; its keys are "
                        f"{sorted(batch)}; neural collapse needs the class of every sample")
    inputs = {k: _to_model(v, model, device) for k, v in batch.items() if k != key}
    model(**inputs)
    return torch.as_tensor(batch[key])


class EpochRecorder:
    """Neural collapse of a model on a fixed loader, measured when an epoch ends.

    Args:
        dataloader: the samples to measure (e.g. the training set without augmentation).
        out: run folder for ``dumps/epoch_NNNN.safetensors`` and ``run.json``; None keeps nothing.
        every_n_epochs: measure after epochs ``n, 2n, ...`` (epochs counted from 1).
        layer: dotted name of the classifier layer; default the last ``nn.Linear``.
        num_classes: C, when the classifier's rows do not say it.
        dump_dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"`` for the dumped features;
            the metrics are computed on the features as dumped. Features beyond float16's range
            are dumped in float32 instead, with a warning.
        class_counts: training counts per class, for the many / medium / few groups; default
            the counts in ``dataloader``.
        class_names: stored in the dumps' metadata.
        center, groups: as in :func:`nctools.analyze`.
        run_batch: how a batch is fed to the model (:func:`run_pair` or :func:`run_keywords`).
        metadata: more dump metadata (``dataset``, ``imbalance_ratio`` ...).
        method: the training method's name, stored as ``method`` in the dumps and run.json; None
            (default) leaves it out (or as ``metadata`` says).

    ``history`` holds one entry per measured epoch (``epoch`` and the summary keys), as in run.json;
    measuring an epoch again drops the entries from that epoch on.
    """

    def __init__(self, dataloader: Iterable, out: str | Path | None = None, *, every_n_epochs: int = 1,
                 layer: str | None = None, num_classes: int | None = None, dump_dtype: str = "float32",
                 class_counts: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 center: str = "class", groups: Sequence[float] = DEFAULT_GROUPS, run_batch: BatchRunner = run_pair,
                 metadata: dict | None = None, method: str | None = None):
        if not isinstance(dataloader, Iterable):
            raise TypeError(f"dataloader must be an iterable of batches, got a {type(dataloader).__name__}")
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if dump_dtype not in _DTYPES:
            raise ValueError(f"dump_dtype must be one of {sorted(_DTYPES)}, got {dump_dtype!r}")
        self.dataloader, self.every_n_epochs, self.layer = dataloader, every_n_epochs, layer
        self.out = None if out is None else Path(out)
        self.num_classes, self.dump_dtype = num_classes, _DTYPES[dump_dtype]
        self.class_counts, self.class_names = class_counts, None if class_names is None else list(class_names)
        self.center, self.groups, self.run_batch = center, tuple(groups), run_batch
        self.metadata = dict(metadata or {})
        if method is not None:
            self.metadata["method"] = method
        self.history: list[dict] = []
        self._lock: RunLock | None = None
        if self.out is not None:  # a bad out fails now, not after the first epoch has trained
            make_run_folder(self.out, option="out")
            check_writable(self.out)

    def open(self) -> None:
        """Take ``out/run.lock`` (rank 0) and remove the temporaries a killed writer left; a second run on
        ``out`` raises :class:`~nctools.io.run_folder.RunFolderError` naming the holder. Called by the
        callbacks when training begins, else by the first write; nothing to do without ``out``."""
        if self.out is None or self._lock is not None or _rank_world()[0] != 0:
            return
        make_run_folder(self.out, option="out")
        self._lock = RunLock.acquire(self.out, option="out")
        if self._lock.held:  # only under the lock: then no live writer's temporary can be touched
            remove_stale_temporaries(self.out)

    def close(self) -> None:
        """Give up ``out/run.lock`` (the callbacks call it when training ends); :meth:`open` takes it again."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> EpochRecorder:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the kernel drops the lock anyway
            pass

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (counted from 1) is one to measure."""
        return epoch % self.every_n_epochs == 0

    def record(self, model: torch.nn.Module, epoch: int) -> NCResult:
        """Measure ``model`` now (on its own device), write the epoch's dump on rank 0, return the result.

        A failure raises; :meth:`try_record` turns it into a warning instead."""
        result, dump = self._measure(model, epoch)
        self._keep(epoch, result)
        if dump is not None:
            self._write(epoch, result, *dump)
        return result

    def try_record(self, model: torch.nn.Module, epoch: int) -> NCResult | None:
        """:meth:`record`, but a failure becomes one warning naming the epoch and the reason: None when
        nothing was measured; the result when only the dump could not be written."""
        try:
            result, dump = self._measure(model, epoch)
        except Exception as err:  # noqa: BLE001 - measuring must never stop the training
            _warn(f"nctools: neural collapse was not measured at epoch {epoch}: {one_line(err)}; training goes on")
            return None
        self._keep(epoch, result)
        if dump is not None:
            try:
                self._write(epoch, result, *dump)
            except Exception as err:  # noqa: BLE001
                _warn(f"nctools: the dump of epoch {epoch} was not written to {self.out}: {one_line(err)}; "
                      "training goes on")
        return result

    def scalars(self, result: NCResult, prefix: str = "nc/") -> dict[str, float]:
        """The logged summary keys as ``{"nc/<key>": value}``, leaving out those that are null."""
        return {prefix + key: float(result.summary[key]) for key in LOGGED_KEYS if result.summary[key] is not None}

    # ------------------------------------------------------------------------------------------
    def _measure(self, model: torch.nn.Module, epoch: int):
        """The result, and what ``_write`` needs (None without ``out``); every generator put back.

        Under ``torch.distributed`` the work is cut into steps that :func:`_together` ends with one
        all-reduce saying whether any rank failed: a rank's own work (its batches through the model, its
        updates, the local math after a reduction) never stands between two collectives unannounced, so a
        failure on one rank makes every rank raise instead of leaving the others waiting for it."""
        state = _rng_state()
        device = _device_of(model)
        try:
            with contextlib.ExitStack() as stack:
                def start():
                    tap = stack.enter_context(FeatureTap(model, self.layer))
                    weight, bias = tap.classifier()
                    c = self.num_classes or (weight.shape[0] if weight is not None else None)
                    if c is None:
                        raise ValueError(f"layer {tap.name!r} has no weight; pass num_classes")
                    acc = NeuralCollapse(c, weight, bias, center=self.center, device=device)
                    # with out, device memory stays at one batch and the metrics are of the features as dumped
                    kept = None if self.out is None else [(h.cpu(), y.cpu()) for h, y in self._batches(tap, device)]
                    return tap, weight, bias, acc, kept

                tap, weight, bias, acc, kept = _together(start, device, same=self._settings())
                if kept is not None:
                    dtype = self._dump_dtype_for(kept, epoch, device)
                    kept = _together(lambda: [(h.to(dtype), y) for h, y in kept], device)

                def one_pass() -> int:  # without out the model runs once per pass: nothing is kept
                    seen = 0
                    for h, y in self._batches(tap, device) if kept is None else kept:
                        acc.update(h.to(device), y.to(device))
                        seen += len(y)
                    return seen

                if _together(one_pass, device, count=True) == 0:
                    raise ValueError("the data loader gave no samples to measure")
                _together(acc.next_pass, device)  # its reduction, then the class means' look-up tables
                _together(one_pass, device)

                def finish():
                    result = acc.compute(class_counts=self.class_counts, groups=self.groups)
                    counts = self.class_counts
                    if counts is None:  # the counts seen stand in, as compute() reduced them (once, with the rest)
                        counts = result.per_class["count"].to_numpy()
                    # this rank's share of the dump, made here so that nothing can fail before _write's gather
                    mine = (torch.cat([h for h, _ in kept]), torch.cat([y for _, y in kept])) if kept else None
                    return counts, result, mine

                counts, result, mine = _together(finish, device)
                layer = tap.name
        finally:
            _set_rng_state(state)
        return result, None if kept is None else (mine, weight, bias, counts, layer)

    def _settings(self) -> int:
        """What decides which collectives a measurement runs, as one small int: every rank must agree on it."""
        return (self.out is None) + 2 * (self.class_counts is None) + 4 * list(_DTYPES.values()).index(self.dump_dtype)

    def _dump_dtype_for(self, kept, epoch: int, device: torch.device) -> torch.dtype:
        """The dump's dtype: the one asked for, or float32 when the features exceed its range (all ranks agree)."""
        if self.dump_dtype == torch.float32:
            return self.dump_dtype
        peak = torch.stack([h.detach().abs().max().float() for h, _ in kept if h.numel()] or [torch.zeros(())])
        peak = peak.max().reshape(1)
        if _rank_world()[1] > 1:
            peak = peak.to(device)
            torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
        top, limit = float(peak.item()), torch.finfo(self.dump_dtype).max
        if top > limit:
            name = str(self.dump_dtype).removeprefix("torch.")
            if _rank_world()[0] == 0:  # every rank agrees on the dtype; the one that writes the dump says it
                _warn(f"nctools: the features of epoch {epoch} reach {top:.4g}, beyond {name}'s range (+-{limit:g}); "
                      f"its dump is written in float32 instead of {name} (and measured in float32)")
            return torch.float32
        return self.dump_dtype

    def _batches(self, tap: FeatureTap, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = _rank_world()
        for i, batch in enumerate(self.dataloader):
            if i % world != rank:
                continue
            labels: list[torch.Tensor] = []
            h = tap.features(lambda b=batch, i=i: labels.append(self.run_batch(tap.net, b, i, device)))
            yield h, _class_indices(labels[0], i).to(h.device)

    def _keep(self, epoch: int, result: NCResult) -> None:
        """Add the epoch to ``history``, dropping entries from this epoch on (a run resumed from earlier)."""
        self.history = [entry for entry in self.history if entry["epoch"] < epoch]
        self.history.append({"epoch": epoch, **{k: result.summary[k] for k in K.SUMMARY_KEYS}})

    def _write(self, epoch: int, result: NCResult, mine, weight, bias, counts, layer: str) -> None:
        feats, labels = _gather_to_main(mine)  # mine: this rank's (features, labels) in the dump's dtype, or None
        if feats is None:  # not rank 0
            return
        self.open()
        meta = {"epoch": epoch, "split": "train", "layer": layer, **self.metadata}
        if self.class_names is not None:
            meta["class_names"] = self.class_names
        path = dump_path(self.out, "train", epoch, "safetensors")
        refuse_links(self.out, path, option="out")
        save_dump(path, feats, labels, weight, bias, torch.as_tensor(counts, dtype=torch.int64), metadata=meta)
        # A resumed run (a new process, or Lightning's restored history) keeps the epochs before it.
        self.history = merge_epochs(read_epochs(self.out), self.history)
        record = {"writer": "nctools.integrations", "method": self.metadata.get("method"), "epochs": self.history}
        atomic_write_json(record_path(self.out), record, allow_nan=True)


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _class_indices(labels: torch.Tensor, index: int) -> torch.Tensor:
    """A batch's labels as int64 class indices; floating labels are refused (as ``analyze`` refuses them),
    never truncated."""
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"batch {index} of the loader has {labels.dtype} labels; neural collapse needs integer "
                        "class indices")
    return labels.long()


class RankFailed(RuntimeError):
    """Another process of the group failed its part of a measurement (this one did not)."""


def _together(step: Callable[[], Any], device: torch.device, count: bool = False, same: int | None = None) -> Any:
    """``step()`` on this rank, then, under ``torch.distributed``, one all-reduce in which every rank says
    whether its step raised: a failure anywhere raises everywhere, the failed rank's own error there and
    :class:`RankFailed` naming the failed ranks elsewhere. ``step`` must run no collective of its own before
    its last one (then a rank failing early would meet the others in different all-reduces). With ``count``
    the ints the ranks' steps return are summed and the sum returned, else this rank's value; ``same``, a
    small int every rank must agree on, is checked in the same all-reduce."""
    rank, world = _rank_world()
    if world == 1:
        return step()
    error, value = None, None
    try:
        value = step()
    except Exception as err:  # noqa: BLE001 - re-raised below, once every rank knows
        error = err
    # [failed flag per rank, the count, same, same squared]: ranks agree when world * sum(same^2) == sum(same)^2
    mark = 0 if same is None else same
    flags = torch.zeros(world + 3, dtype=torch.int64, device=comm_device(device))
    flags[rank] = error is not None
    flags[world:] = torch.tensor([int(value) if count and error is None else 0, mark, mark * mark])
    torch.distributed.all_reduce(flags)
    flags = flags.tolist()
    if same is not None and world * flags[world + 2] != flags[world + 1] ** 2:
        raise ValueError("the ranks measure with different settings (out, class_counts or dump_dtype given on "
                         "some ranks only): give every rank the same ones, and rank 0 alone writes")
    if error is not None:
        raise error
    failed = [r for r in range(world) if flags[r]]
    if failed:
        names = ", ".join(map(str, failed))
        raise RankFailed(f"rank{'s' * (len(failed) > 1)} {names} of {world} failed to measure, so no rank "
                         "measures this epoch")
    return flags[world] if count else value


def _device_of(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_to_main(mine: tuple[torch.Tensor, torch.Tensor] | None):
    """Every rank's (features, labels) on rank 0, as on one process (``(None, None)`` elsewhere); a rank that
    had no batch sends None."""
    rank, world = _rank_world()
    if world == 1:
        return mine if mine is not None else (None, None)
    parts = [None] * world if rank == 0 else None
    torch.distributed.gather_object(mine, parts, dst=0)
    if rank != 0:
        return None, None
    parts = [p for p in parts if p is not None]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _rng_state() -> dict:
    """Every generator a data loader or a model may draw from, to put back after measuring."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
