"""Adding a method is one module and one row of the methods table: a toy method, label-smoothed
cross-entropy (Szegedy et al. 2016), defined here as its own module would define it and entered in
the table, is resolved, checked, trained and dumped like the bundled ones."""
from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from allnc_train import make_configs
from allnc_train.config import resolve
from allnc_train.methods import METHODS, Batch, build_model, build_objective
from allnc_train.methods.components import ComponentsObjective, nc_model
from allnc_train.methods.method import Method
from allnc_train.schema import Config, ConfigError
from allnc_train.train import train

# --- what allnc_train/methods/label_smoothing.py would hold -------------------------------------


def _objective(cfg: Config, class_counts: Sequence[int], device: torch.device) -> ComponentsObjective:
    return ComponentsObjective(cfg, lambda logits, labels: F.cross_entropy(logits.float(), labels,
                                                                           label_smoothing=0.1))


def _check(cfg: Config) -> None:
    if cfg.p2p.enabled:
        raise ConfigError("method ls trains without P2P: set p2p.enabled to false.")


LS = Method("ls", "label-smoothed cross-entropy (Szegedy et al. 2016)", nc_model, _objective, check=_check,
            recipe={"method": {"name": "ls"}})

# --- and the row: METHODS = {m.name: m for m in (..., LS)} ----------------------------------------


@pytest.fixture
def with_ls(monkeypatch):
    monkeypatch.setitem(METHODS, "ls", LS)


UFM = {"data": {"dataset": "synthetic", "num_classes": 4, "n_max": 12, "imbalance_ratio": 4},
       "model": {"arch": "ufm", "feature_dim": 6}, "method": {"name": "ls"},
       "optim": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0},
       "run": {"device": "cpu", "progress": False}}


def test_an_unknown_method_is_refused_with_the_table_s_names():
    with pytest.raises(ConfigError) as err:
        resolve(UFM)
    assert str(err.value) == f"config key 'method.name' must be one of {', '.join(METHODS)}, got 'ls'."


def test_the_new_row_is_resolved_checked_and_built(with_ls):
    cfg = resolve(UFM)
    assert (cfg.gbbn.enabled, cfg.hycon.enabled, cfg.p2p.enabled, cfg.gbbn.heads) == (False, False, False, 1)
    with pytest.raises(ConfigError, match="method ls trains without P2P"):
        resolve(UFM, ["p2p.enabled=true"])
    model = build_model(cfg, 4, 20)
    objective = build_objective(cfg, [12, 6, 4, 3])
    x, y = torch.arange(4)[:, None], torch.tensor([0, 1, 2, 3])
    loss, parts, _ = objective.loss(model, Batch((x, y)))
    plain = F.cross_entropy(model(x[:, 0]), y)
    assert parts["ce"] == loss and not torch.isclose(loss, plain)  # smoothed: not the plain CE
    assert make_configs.method_blocks()["ls"] == ("method ls: label-smoothed cross-entropy (Szegedy et al. 2016)",
                                                  {"method": {"name": "ls"}})


def test_the_new_method_trains_and_dumps(with_ls, tmp_path):
    record = train(resolve(UFM), tmp_path / "run")
    assert record["status"] == "finished" and record["method"] == "ls"
    assert [e["epoch"] for e in json.loads((tmp_path / "run" / "run.json").read_text())["epochs"]] == [1, 2]
    assert (tmp_path / "run" / "dumps" / "epoch_0002.safetensors").is_file()


def test_a_malformed_row_is_refused_when_it_is_made():
    with pytest.raises(ValueError, match="components must name each of gbbn, hycon, p2p"):
        Method("bad", "no p2p switch", nc_model, _objective, components={"gbbn": True, "hycon": False})
    with pytest.raises(ValueError, match="ablation 'hycon' needs the part on"):
        Method("bad", "ablates a part it never switches on", nc_model, _objective, ablations=("hycon",))
