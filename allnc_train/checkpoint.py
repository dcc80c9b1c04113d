"""Checkpoints: written atomically every epoch, read with ``weights_only=True``, and turned back
into a model from the config they carry (how ``nctools`` analyses a trainer checkpoint).

A checkpoint is a plain dict: ``format``, ``epoch``, ``config`` (the resolved config as nested
dicts), ``model``, ``optimizer`` and ``scaler`` state dicts, ``history`` (per-epoch metrics),
``class_counts`` and ``class_names``. Nothing in it needs pickle to load, so a checkpoint from a
stranger cannot run code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nctools.errors import InputError
from nctools.io import layout
from nctools.io.atomic import atomic_write
from nctools.io.safe_files import load_pt

from .config import from_dict
from .methods import build_model
from .models import NCModel
from .schema import Config, to_dict

# Format 2: AllNC re-read (docs/ALLNC.md) and BBN rebuilt as its paper has it. A format-1 checkpoint
# whose config lacks the keys of that change (``predates_reread``) is rebuilt with the behaviour it
# was trained with (LEGACY_KEYS) and cannot be resumed; such a BBN (one backbone) cannot be rebuilt.
# (Format-1 checkpoints that carry the keys were written by the re-read code before the format
# number changed: they are read and resumed as format 2.)
CHECKPOINT_FORMAT = "allnc_train.checkpoint/2"
LEGACY_FORMAT = "allnc_train.checkpoint/1"
LEGACY_KEYS = {"gbbn": {"heads": 1, "encoder_grad": "full"},
               "hycon": {"feature_share": 0.0, "balanced": False, "prototypes": "running", "rebal_anchors": False,
                         "fade": True},
               "p2p": {"means": "running"}}


class CheckpointError(InputError):
    """A file is not a readable allnc_train checkpoint, or a run has none; the message names the file."""


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest ``checkpoints/epoch_*.pt`` of a run directory, or None."""
    found = layout.checkpoint_files(Path(out))
    return found[-1] if found else None


def nothing_to_resume(out: Path) -> str:
    return f"nothing to resume in {out}: it holds no {layout.CHECKPOINTS}/epoch_*.pt."


def save_checkpoint(out: Path, cfg: Config, epoch: int, model, optimizer, scaler, record: dict, keep: int) -> Path:
    """Write this epoch's checkpoint, then prune all but the newest ``keep`` (0 = keep all)."""
    ckpt = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "config": to_dict(cfg),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "history": record["epochs"],
            "class_counts": record["data"]["class_counts"],
            "class_names": record["data"]["class_names"]}
    # Plain data only, so that torch.load(weights_only=True) reads it back.
    path = atomic_write(layout.checkpoint_path(out, epoch), lambda tmp: torch.save(ckpt, tmp))
    if keep > 0:  # prune only after the new one is safely on disk
        for old in layout.checkpoint_files(out)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _unreadable(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be read as a checkpoint: {problem}.")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    # nctools' safe reader: truncated files and foreign pickles become one sentence naming the file.
    ckpt = load_pt(path, _unreadable, map_location=map_location, refusal="it holds Python objects",
                   expected="a checkpoint dict")
    if ckpt.get("format") not in (CHECKPOINT_FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{path} is not an allnc_train checkpoint (format {ckpt.get('format')!r}).")
    return ckpt


def predates_reread(ckpt: dict) -> bool:
    """True for a checkpoint written before AllNC was re-read: format 1 without ``gbbn.heads``."""
    return ckpt.get("format") == LEGACY_FORMAT and "heads" not in ckpt["config"].get("gbbn", {})


def trained_config(ckpt: dict) -> dict:
    """The checkpoint's config as a dict; a format-1 checkpoint's with the keys it predates filled in
    with the behaviour it was trained with (:data:`LEGACY_KEYS`)."""
    config = ckpt["config"]
    if not predates_reread(ckpt):
        return config
    # The one method whose format-1 model differs from today's (BBN had one backbone then): a matter of
    # the checkpoint's history, not of the method, so it is named here rather than in the methods table.
    if config.get("method", {}).get("name") == "bbn":
        raise ValueError("a format-1 bbn checkpoint holds the earlier one-backbone BBN, which this version does not "
                         "build; retrain it")
    return {**config, **{part: {**keys, **config.get(part, {})} for part, keys in LEGACY_KEYS.items()}}


def model_from_checkpoint(ckpt: dict) -> tuple[NCModel, Config]:
    """The model a checkpoint's own config describes, with its weights: (model, config).

    The one way to rebuild a model from a checkpoint (``load_model`` and ``nctools analyze`` both
    use it). Raises ``KeyError`` for a missing entry, ``ConfigError`` for an invalid config and
    ``RuntimeError`` when the weights do not fit.
    """
    cfg = from_dict(trained_config(ckpt))
    # the unconstrained-features model sizes its table by N (nested one level deeper in bbn and etf_dr)
    table = next((v for k, v in ckpt["model"].items() if k.split(".")[-1] == "table"), None)
    model = build_model(cfg, len(ckpt["class_counts"]), 1 if table is None else table.shape[0])
    model.load_state_dict(ckpt["model"])
    return model, cfg


def load_model(path: str | Path, map_location="cpu") -> tuple[NCModel, Config, dict]:
    """Rebuild a checkpoint's model (in eval mode) from its own config: (model, config, checkpoint).

    Extract features with ``model.features(x)``; the classifier is ``model.weight`` / ``model.bias``;
    ``allnc_train.data.build_data(config.data, 1)`` rebuilds the run's data.
    """
    ckpt = load_checkpoint(path, map_location)
    model, cfg = model_from_checkpoint(ckpt)
    return model.to(map_location).eval(), cfg, ckpt


def run_config(out: Path) -> Config:
    """The resolved config of the run in ``out``, from its latest checkpoint (resuming without --config)."""
    ckpt_file = latest_checkpoint(Path(out))
    if ckpt_file is None:
        raise CheckpointError(nothing_to_resume(Path(out)))
    return from_dict(trained_config(load_checkpoint(ckpt_file)))
