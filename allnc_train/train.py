"""The training loop: one run directory, resumable, a feature dump and a checkpoint every epoch.

The run directory (its layout is :mod:`nctools.io.layout`'s) holds ``run.json`` (config,
environment, data summary, per-epoch metrics, status), the lock of the live run, a checkpoint per
epoch (model, optimiser, scaler, history, config; weights_only-loadable) and the train-set dumps
(features + classifier), with ``run.dump_test`` the evaluation-set dumps too.

Reproducibility: the model is initialised from ``seed``; every epoch re-seeds python, numpy and
torch from (seed, epoch) and every sampler draws from its own (seed, stream, epoch) generator, so a
run resumed from the checkpoint of epoch k repeats epochs k+1.. exactly (bitwise on the CPU).

Data: CIFAR and the labels-only synthetic data run through the batched on-device pipeline
(:mod:`allnc_train.data.pipeline`, ``data.pipeline``), file-backed data through torch DataLoaders; both
draw the same samples from the same samplers. On CUDA the model and its image batches are
channels-last (``run.channels_last``), the step runs under autocast (``run.amp``, ``run.amp_dtype``)
and ``run.compile`` compiles the backbone with ``torch.compile``.

Across processes (``torchrun``, DistributedDataParallel) the hooks in :mod:`allnc_train.distributed`
shard the samplers and evaluation sets, merge losses and accuracies, gather the dumps to rank 0 and
leave all writing to rank 0; on one process each hook is the identity.

The run directory is checked, locked and tidied before anything trains, and a failed write stops the
run with one sentence, the last complete epoch intact: see :mod:`allnc_train.rundir`.
"""
from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

import torch
from tqdm import tqdm

from nctools.core.device import resolve_device
from nctools.errors import first_line
from nctools.interrupts import signals_as_interrupts
from nctools.io import layout
from nctools.io.atomic import atomic_write_json

from . import distributed, rundir
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    nothing_to_resume,
    predates_reread,
    save_checkpoint,
)
from .config import from_dict, method_label
from .data import DataBundle, build_data, shot_groups
from .data.loaders import Loaders, make_loaders, set_epoch, to_device
from .data.pipeline import pipeline_kind, use_channels_last
from .data.seeds import epoch_seed, loop_stream, seed_everything
from .evaluate import collect, write_dump
from .methods import Batch, Objective, build_model, build_objective
from .models import num_parameters
from .rundir import RunError
from .schedules import learning_rate
from .schema import Config, conventional_views, flatten, to_dict
from .step import Optimisation, train_step

# Keys that may differ between a run and its resumption: where data lives and how the run is shown.
RESUME_MAY_CHANGE = {"run.progress", "run.device", "data.root", "data.download", "data.train_split",
                     "data.test_split", "data.num_workers", "run.compile"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint stays on disk."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def run_device(name: str) -> torch.device:
    """``run.device`` as a torch.device (nctools' reading of ``auto`` / ``cpu`` / ``cuda[:N]``)."""
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise RunError(f"run.device: {exc}.") from None


def environment(device: torch.device) -> dict:
    """Provenance stored in run.json: versions, device, code revision."""
    import torchvision

    try:  # read-only; None outside a git checkout or before the first commit
        done = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).resolve().parent)
        commit = done.stdout.strip() if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "platform": platform.platform(), "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or None),
            "threads": torch.get_num_threads(), "git_commit": commit}


def compile_model(model: torch.nn.Module) -> None:
    """``torch.compile`` the backbone (and HyCon heads) in place, keeping the state-dict keys; a
    failure to set it up raises RunError (one that shows only at the first call: see ``_compiled``)."""
    try:
        for part in (model.backbone, model.projector, model.predictor):
            if part is not None:
                part.compile()
    except Exception as exc:  # e.g. a Python version torch.compile does not support
        raise RunError(f"run.compile: torch.compile is not available here ({first_line(exc)}); set "
                       "run.compile=false.") from None


@contextmanager
def _compiled(cfg: Config) -> Iterator[None]:
    """Turn torch.compile's failures (raised at the first forward) into one RunError sentence."""
    try:
        yield
    except Exception as exc:
        if cfg.run.compile and type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise RunError(f"run.compile: torch.compile failed on this model ({first_line(exc)}); set "
                           "run.compile=false to train without it.") from None
        raise


# ---------------------------------------------------------------------------------------------
# Starting and resuming
# ---------------------------------------------------------------------------------------------

def _open_run(cfg: Config, out: Path, resume: bool) -> dict | None:
    """Check the run directory; return the checkpoint to resume from (or None for a fresh run)."""
    existing = latest_checkpoint(out)
    if not resume:
        if existing is not None or layout.record_path(out).exists():
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
        return None
    if existing is None:
        raise RunError(nothing_to_resume(out))
    try:
        ckpt = load_checkpoint(existing)
    except CheckpointError as exc:  # train() refuses a run it cannot resume with one kind of error
        raise RunError(str(exc)) from None
    if predates_reread(ckpt):
        raise RunError(f"{existing} was written by an earlier allnc_train (checkpoint format 1, before AllNC was "
                       "re-read and BBN rebuilt); nctools can still analyse it, but it cannot be resumed: start a "
                       "new run.")
    # The run's config read as today's schema reads it: a key added since the run began takes its default,
    # which keeps the behaviour the run was trained with (the rule for every new key).
    old, new = flatten(to_dict(from_dict(ckpt["config"]))), flatten(to_dict(cfg))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUME_MAY_CHANGE)
    if changed:
        k = changed[0]
        raise RunError(f"the config differs from the run's own in {', '.join(changed)} (e.g. {k}: run has "
                       f"{old.get(k)!r}, now {new.get(k)!r}); resume with the run's config.")
    return ckpt


# ---------------------------------------------------------------------------------------------
# One epoch's evaluation and dumps
# ---------------------------------------------------------------------------------------------

def evaluate_and_dump(model, cfg: Config, data: DataBundle, out: Path, epoch: int, loaders: Loaders, device
                      ) -> dict:
    """Evaluate and write this epoch's dumps as the config asks; returns the metrics to log.

    Across processes each rank evaluates its block, accuracies are merged and rank 0 writes the dumps.
    """
    accuracy_by_group = distributed.accuracy_by_group  # over every rank's samples; the plain one on one process
    train_loader, eval_loader = loaders.train_eval, loaders.test
    last = epoch == cfg.optim.epochs
    do_eval = last or epoch % cfg.run.eval_every == 0
    do_dump = cfg.run.dump_every > 0 and (last or epoch % cfg.run.dump_every == 0)
    groups = shot_groups(data.class_counts)
    meta = {"epoch": epoch, "dataset": cfg.data.dataset, "imbalance_ratio": round(data.imbalance_ratio, 6),
            "method": method_label(cfg), "class_names": data.class_names, "arch": cfg.model.arch, "seed": cfg.seed}
    fmt = cfg.run.dump_format
    metrics: dict = {}
    if do_dump or (do_eval and eval_loader is None):
        feats, labels, logits = collect(model, train_loader, device, loaders.channels_last)
        metrics["train_top1"] = accuracy_by_group(logits, labels, groups)["top1"]
        if do_dump:
            path = layout.dump_path(out, "train", epoch, fmt)
            _write_dump(out, path, feats, labels, model, data.class_counts, cfg.run.dump_dtype,
                        {**meta, "split": "train"})
            metrics["dump"] = path.relative_to(out).as_posix()
        if eval_loader is None:  # labels-only data (unconstrained features): the training samples are all there is
            metrics.update({f"eval_{k}": v for k, v in accuracy_by_group(logits, labels, groups).items()})
            metrics["eval_split"] = "train"
    if eval_loader is not None and (do_eval or (do_dump and cfg.run.dump_test)):
        feats, labels, logits = collect(model, eval_loader, device, loaders.channels_last)
        metrics.update({f"eval_{k}": v for k, v in accuracy_by_group(logits, labels, groups).items()})
        metrics["eval_split"] = data.eval_split
        if do_dump and cfg.run.dump_test:
            path = layout.dump_path(out, "test", epoch, fmt)
            _write_dump(out, path, feats, labels, model, data.class_counts, cfg.run.dump_dtype,
                        {**meta, "split": data.eval_split})
            metrics["dump_test"] = path.relative_to(out).as_posix()
    return metrics


def _write_dump(out: Path, path: Path, feats, labels, *args) -> None:
    """``write_dump`` of every rank's rows, gathered to rank 0 in rank order (plain on one process)."""
    gathered = distributed.gather_to_main(feats, labels)
    if gathered is not None:
        with rundir.writing(path, out):
            write_dump(path, *gathered, *args)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def train_one_epoch(model, cfg: Config, objective: Objective, optim: Optimisation, loaders: Loaders, epoch: int,
                    device, loss_forward=None) -> dict:
    """One pass over the training set; returns the epoch's mean losses, last lr and eta.

    ``loss_forward``: the DistributedDataParallel-wrapped objective when training across processes.
    """
    conv_loader, rebal_loader = loaders.conventional, loaders.rebalancing
    steps = len(conv_loader)
    seed_everything(epoch_seed(cfg.seed, loop_stream(distributed.rank()), epoch))  # the DataLoaders' augmentation
    for loader in (conv_loader, rebal_loader):
        if loader is not None:
            set_epoch(loader, epoch)
    objective.set_epoch(epoch)
    model.train()
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))  # summed on device: no sync
    tic = time.perf_counter()
    batches = zip(conv_loader, rebal_loader if rebal_loader is not None else repeat(None))
    # disable=None: a bar only where stderr is a terminal (a log file gets the per-epoch lines alone)
    shown = None if cfg.run.progress and distributed.is_main() else True
    for i, (batch, rebal) in enumerate(tqdm(batches, total=steps, desc=f"epoch {epoch}/{cfg.optim.epochs}",
                                            disable=shown, leave=False, file=sys.stderr)):
        lr = learning_rate(cfg.optim, (epoch - 1) * steps + i, steps)
        for group in optim.optimizer.param_groups:
            group["lr"] = lr
        cl = loaders.channels_last
        parts = train_step(model, objective, optim, Batch(to_device(batch, device, cl), to_device(rebal, device, cl)),
                           loss_forward)
        for k, v in parts.items():
            sums[k] += v.float()
    sums = distributed.mean_over_ranks(sums)  # the same on every rank, so all ranks agree on divergence
    distributed.sync_buffers(model)  # evaluate and checkpoint rank 0's running statistics everywhere
    entry = {"epoch": epoch, "lr": lr, "eta": objective.eta, **{k: (v / steps).item() for k, v in sums.items()},
             "train_time_s": round(time.perf_counter() - tic, 3)}
    if not math.isfinite(entry["loss"]):
        raise TrainingDiverged(f"training diverged in epoch {epoch}: the mean loss is {entry['loss']}; lower "
                               "optim.lr or the loss weights.")
    return entry


def train(cfg: Config, out: str | Path, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train as ``cfg`` says, writing into ``out``; returns the run record (also ``out/run.json``).

    ``resume`` continues from the latest checkpoint in ``out``. ``stop_after`` ends the call after
    that epoch, exactly as if the process had been killed there (used by tests and by time-sliced jobs).
    ``out`` is locked for the call: a second run on it raises ``RunError`` naming the holder, and so
    does a file system error (full disk, permission, read-only), with the last complete epoch kept.
    SIGTERM and SIGHUP raise :class:`nctools.interrupts.Interrupted` (a ``KeyboardInterrupt``) like
    Ctrl-C: the last complete epoch is kept, temporaries are removed and the lock is given up.
    """
    out = Path(out)
    with signals_as_interrupts(), distributed.process_group(run_device(cfg.run.device)) as device:
        with rundir.claim(out, resume):  # before any training: writable, locked, tidied
            try:
                return _train(cfg, out, device, resume, stop_after)
            except OSError as exc:
                if exc.errno is None:  # one of ours with its own sentence (e.g. a missing image folder)
                    raise
                raise RunError(rundir.stopped_by(exc, out)) from None


def _save_epoch(out: Path, cfg: Config, epoch: int, model, optimizer, scaler, record: dict) -> None:
    """Rank 0: the epoch's checkpoint, then run.json, each atomic; a failed write raises RunError."""
    with rundir.writing(layout.checkpoint_path(out, epoch), out):
        save_checkpoint(out, cfg, epoch, model, optimizer, scaler, record, cfg.run.keep_checkpoints)
    _save_record(out, record)


def _save_record(out: Path, record: dict) -> None:
    with rundir.writing(layout.record_path(out), out):
        atomic_write_json(layout.record_path(out), record, allow_nan=True)


def _train(cfg: Config, out: Path, device: torch.device, resume: bool, stop_after: int | None) -> dict:
    ckpt = _open_run(cfg, out, resume)  # every rank checks (under rank 0's lock) before any can write
    main = distributed.is_main()  # only rank 0 writes
    # autocast dtype for the training step; the free-feature model has no convolution to gain from it and
    # its geometry (NC3 ~ 1e-10) would drown in bf16 round-off. Evaluation and dumps run in float32: the
    # dumped features are what NC1..NC4 are measured on.
    amp = getattr(torch, cfg.run.amp_dtype) if cfg.run.amp and device.type == "cuda" and cfg.model.arch != "ufm" \
        else None
    views = conventional_views(cfg)
    pipeline = pipeline_kind(cfg)  # a batched pipeline for file-backed data is refused before any loading
    data = build_data(cfg.data, views)

    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, len(data.train_labels)).to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay,
                                nesterov=cfg.optim.nesterov)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # bfloat16 needs no loss scaling
    record = {"config": to_dict(cfg), "environment": {**environment(device), **distributed.describe()},
              "status": "running",
              "data": {"num_train": len(data.train_labels), "class_counts": data.class_counts,
                       "class_names": data.class_names, "groups": shot_groups(data.class_counts),
                       "imbalance_ratio": data.imbalance_ratio, "eval_split": data.eval_split,
                       "num_eval": None if data.test is None else len(data.test), "pipeline": pipeline},
              "model": {"parameters": num_parameters(model), "feature_dim": model.feature_dim},
              "method": method_label(cfg), "epochs": []}
    start = 1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:  # empty when the run was written without float16 scaling (CPU, bf16)
            scaler.load_state_dict(ckpt["scaler"])
        record["epochs"], start = list(ckpt["history"]), ckpt["epoch"] + 1

    if cfg.run.compile:
        compile_model(model)
    objective = build_objective(cfg, data.class_counts, device)
    loss_forward = distributed.wrap(model, objective, device)  # DistributedDataParallel across processes, else None
    loaders = make_loaders(cfg, data, device)
    optim = Optimisation(optimizer, scaler, amp)

    for epoch in range(start, cfg.optim.epochs + 1):
        with _compiled(cfg):
            entry = train_one_epoch(model, cfg, objective, optim, loaders, epoch, device, loss_forward)
            entry.update(evaluate_and_dump(model, cfg, data, out, epoch, loaders, device))
        record["epochs"].append(entry)
        if epoch == cfg.optim.epochs:
            record["status"] = "finished"
        if main:
            _save_epoch(out, cfg, epoch, model, optimizer, scaler, record)
        distributed.barrier()  # nobody runs ahead of a checkpoint being written
        if cfg.run.progress and main:
            shown = {k: entry.get(k) for k in ("loss", "eval_top1", "eval_many", "eval_medium", "eval_few")}
            tqdm.write(f"epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items() if v is not None),
                       file=sys.stderr)
        if stop_after is not None and epoch >= stop_after:
            break
    if start > cfg.optim.epochs:  # resumed a finished run: nothing to do, keep the record current
        record["status"] = "finished"
        if main:
            _save_record(out, record)
    return record
