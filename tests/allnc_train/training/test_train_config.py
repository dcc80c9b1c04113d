"""Config resolution, bundled configs, and the CLI's handling of bad input."""
from __future__ import annotations

import pytest

from allnc_train import make_configs
from allnc_train.cli import CONFIG_DIR, main
from allnc_train.config import load_config, resolve
from allnc_train.schema import ConfigError, parse_override, to_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defaults_and_method_switches():
    assert resolve().method.name == "ce" and not resolve().gbbn.enabled
    cfg = resolve({"method": {"name": "bbn"}})
    assert cfg.gbbn.enabled and not cfg.hycon.enabled and not cfg.p2p.enabled
    cfg = resolve({"method": {"name": "allnc"}, "p2p": {"enabled": False}})
    assert cfg.gbbn.enabled and cfg.hycon.enabled and not cfg.p2p.enabled
    assert resolve(to_dict(cfg)) == cfg  # the stored form rebuilds the same config


@pytest.mark.parametrize("data, overrides, message", [
    ({"optim": {"lrr": 0.1}}, [], "unknown config key 'optim.lrr'"),
    ({"bogus": 1}, [], "unknown config key 'bogus'"),
    ({}, ["optim.lr=fast"], "'optim.lr' must be a number, got 'fast'"),
    ({}, ["optim.epochs=2.5"], "'optim.epochs' must be an integer"),
    ({}, ["run.amp=maybe"], "'run.amp' must be true or false"),
    ({}, ["data.n_max=big"], "'data.n_max' must be an integer or null"),
    ({}, ["optim.milestones=[1, x]"], "'optim.milestones' must be a list of integers"),
    ({}, ["method.name=focal"], "'method.name' must be one of"),
    ({}, ["optim.lr=-1"], "'optim.lr' must be positive"),
    ({}, ["p2p.momentum=1"], "'p2p.momentum' must lie in [0, 1)"),
    ({}, ["data.imbalance_ratio=0.5"], "must be at least 1"),
    ({"optim": 3}, [], "section 'optim' must be a mapping"),
    ({}, ["model.arch=ufm"], "go together"),
    ({}, ["data.dataset=imagenet_lt"], "set data.source to 'splits'"),
    ({}, ["data.dataset=cifar100", "method.name=etf"], "raise model.width"),
    ({}, ["optim.lr"], "must look like key=value"),
])
def test_bad_values_get_one_sentence(data, overrides, message):
    with pytest.raises(ConfigError) as info:
        resolve(data, overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_exponent_notation_is_a_number():
    assert resolve({"optim": {"weight_decay": "5e-4"}}, ["optim.lr=1e-3"]).optim.lr == 1e-3


def test_parse_override_types():
    assert parse_override("optim.lr=0.05") == {"optim": {"lr": 0.05}}
    assert parse_override("data.n_max=null") == {"data": {"n_max": None}}
    assert parse_override("optim.milestones=[10, 20]") == {"optim": {"milestones": [10, 20]}}


def test_bundled_configs_are_the_generators_output_and_all_load():
    expected = make_configs.all_configs()
    shipped = {p.name: p.read_text() for p in CONFIG_DIR.glob("*.yaml")}
    assert shipped == expected
    for name in expected:
        cfg = load_config(CONFIG_DIR / name)
        assert cfg.method.name in name
    cfg = load_config(CONFIG_DIR / "cifar100_lt_r50_allnc_no_hycon.yaml")
    assert (cfg.data.imbalance_ratio, cfg.model.width, cfg.hycon.enabled, cfg.p2p.enabled) == (50, 2, False, True)
    for prefix in ("cifar10_lt_r100", "cifar10_lt_r50", "cifar10_lt_r10", "cifar10_balanced", "cifar100_lt_r100",
                   "imagenet_lt", "inat2018"):
        for method in ("ce", "la", "etf", "bbn", "allnc", "allnc_no_gbbn", "allnc_no_hycon", "allnc_no_p2p"):
            assert f"{prefix}_{method}.yaml" in expected


def _run_cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["--config", "no_such.yaml", "--out", "X"], "does not exist"),
    (["--config", "cifar10_lt_r100_ce", "--out", "X", "--set", "optim.lr=abc"], "'optim.lr' must be a number"),
    (["--config", "cifar10_lt_r100_ce", "--out", "X", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["--config", "cifar10_lt_r100_ce"], "--out is required"),
    (["--out", "X"], "--config is required"),
    (["--out", "X", "--resume"], "nothing to resume"),
    (["--config", "cifar10_lt_r100_ce", "--out", "X", "--set", "data.root=/nonexistent/c10"], "does not exist"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run_cli(capsys, argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_bad_yaml_and_unknown_flag(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    code, _, err = _run_cli(capsys, ["--config", str(bad), "--out", str(tmp_path / "r")])
    assert code == 2 and "not valid YAML" in err and err.count("\n") == 1
    code, out, err = _run_cli(capsys, ["--frobnicate"])  # a usage error is returned, not raised
    assert code == 2 and out == "" and err.count("\n") == 1 and "--frobnicate" in err


def test_cli_lists_and_prints_configs(capsys):
    code, out, _ = _run_cli(capsys, ["--list-configs"])
    assert code == 0 and "cifar10_lt_r100_allnc" in out.split()
    code, out, _ = _run_cli(capsys, ["--config", "ufm_lt_r100_ce", "--print-config", "--set", "optim.epochs=3"])
    assert code == 0 and "epochs: 3" in out and "arch: ufm" in out
    code, out, _ = _run_cli(capsys, ["--config", "configs/cifar10_lt_r100_allnc.yaml", "--print-config"])
    assert code == 0 and "name: allnc" in out  # the documented spelling finds the bundled file


def test_cli_reports_a_diverged_run_in_one_line(capsys, tmp_path):
    code, _, err = _run_cli(capsys, ["--config", "ufm_lt_r100_ce", "--out", str(tmp_path / "r"), "--set",
                                     "optim.lr=1e30", "optim.epochs=2", "run.progress=false"])
    assert code == 1 and "training diverged in epoch 1" in err and err.count("\n") == 1
