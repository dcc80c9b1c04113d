"""Checkpoints written before AllNC was re-read (format 1): rebuilt with the behaviour they were
trained with, readable by nctools, refused for resumption with one sentence."""
from __future__ import annotations

import pytest
import torch

from allnc_train.checkpoint import LEGACY_FORMAT, LEGACY_KEYS, load_checkpoint, model_from_checkpoint
from allnc_train.cli import CONFIG_DIR
from allnc_train.config import load_config, resolve
from allnc_train.methods import build_model
from allnc_train.schema import to_dict
from allnc_train.train import RunError, train
from nctools.io.sources import load_source


def _legacy(tmp_path, method: str):
    """A one-epoch ufm run whose checkpoint is rewritten as format 1 wrote it: its config without the
    keys format 2 added, its weights those of the model the old keys describe."""
    cfg = load_config(CONFIG_DIR / f"ufm_lt_r100_{method}.yaml", ["run.progress=false", "optim.epochs=1"])
    out = tmp_path / method
    train(cfg, out)
    path = next((out / "checkpoints").glob("*.pt"))
    ckpt = load_checkpoint(path)
    old = to_dict(cfg)
    for part, keys in LEGACY_KEYS.items():
        old[part].update(keys)
    model = build_model(resolve(old), 10, len(ckpt["model"]["backbone.table"]))
    for part, keys in LEGACY_KEYS.items():
        for key in keys:
            del old[part][key]
    ckpt.update(format=LEGACY_FORMAT, config=old, model=model.state_dict())
    torch.save(ckpt, path)
    return out, path, model


def test_format_1_allnc_checkpoint_is_rebuilt_and_analysed_but_not_resumed(tmp_path):
    out, path, model = _legacy(tmp_path, "allnc")
    rebuilt, cfg = model_from_checkpoint(load_checkpoint(path))
    assert cfg.gbbn.heads == 1 and cfg.hycon.feature_share == 0.0 and cfg.p2p.means == "running"
    assert rebuilt.projector is not None  # the old HyCon's projection heads
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    dump = load_source(path)
    assert torch.equal(dump.features, model.backbone.table.detach())
    with pytest.raises(RunError, match="checkpoint format 1.*cannot be resumed: start a new run"):
        train(load_config(CONFIG_DIR / "ufm_lt_r100_allnc.yaml", ["run.progress=false", "optim.epochs=1"]), out,
              resume=True)


def test_format_1_bbn_checkpoint_is_refused_with_a_sentence(tmp_path):
    cfg = load_config(CONFIG_DIR / "ufm_lt_r100_ce.yaml", ["run.progress=false", "optim.epochs=1"])
    out = tmp_path / "run"
    train(cfg, out)
    path = next((out / "checkpoints").glob("*.pt"))
    ckpt = load_checkpoint(path)
    ckpt["config"]["method"]["name"] = "bbn"
    for part, keys in LEGACY_KEYS.items():  # as format 1 wrote it: without the keys format 2 added
        for key in keys:
            del ckpt["config"][part][key]
    ckpt["format"] = LEGACY_FORMAT
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="format-1 bbn checkpoint holds the earlier one-backbone BBN"):
        model_from_checkpoint(load_checkpoint(path))


def test_format_1_checkpoint_with_the_new_keys_resumes(tmp_path):
    """Written by the re-read code before the format number changed: read and resumed as format 2."""
    cfg = load_config(CONFIG_DIR / "ufm_lt_r100_allnc.yaml", ["run.progress=false", "optim.epochs=2"])
    train(cfg, tmp_path / "whole")
    out = tmp_path / "run"
    train(cfg, out, stop_after=1)
    path = next((out / "checkpoints").glob("*.pt"))
    ckpt = load_checkpoint(path)
    ckpt["format"] = LEGACY_FORMAT
    torch.save(ckpt, path)
    train(cfg, out, resume=True)
    a = load_checkpoint(next((out / "checkpoints").glob("*.pt")))["model"]
    b = load_checkpoint(next((tmp_path / "whole" / "checkpoints").glob("*.pt")))["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
