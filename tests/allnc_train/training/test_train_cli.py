"""The ``allnc-train`` command line, through click's CliRunner and through ``main([...])``.

Bad input is one line on stderr and exit status 2 either way; training is stubbed where only the
command line is under test, and one real run (the unconstrained-features model, one epoch) checks the
summary end to end.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import allnc_train.checkpoint as checkpoint_module
import allnc_train.train as train_module
from allnc_train.cli import CONFIG_DIR, bundled_configs, cli, find_config, main
from allnc_train.config import load_config
from tests.helpers.paths import REPO

UFM = ["--config", "ufm_lt_r100_ce"]
FAST = ["run.progress=false", "run.dump_every=0"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into stdout unless told not to
    except TypeError:
        return CliRunner()  # click >= 8.2: stdout and stderr are always apart


@pytest.fixture(params=["main", "runner"])
def invoke(request, capsys):
    """Run the command line one way or the other: ``invoke(argv) -> (exit status, stdout, stderr)``."""
    if request.param == "main":
        def run(argv):
            code = main(list(argv))
            captured = capsys.readouterr()
            return code, captured.out, captured.err
    else:
        def run(argv):
            result = _runner().invoke(cli, list(argv))
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            return result.exit_code, result.stdout, result.stderr
    return run


def _one_error_line(err: str, *, usage: bool = False) -> bool:
    ok = err.startswith("allnc-train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return ok and (not usage or err.endswith(" (see allnc-train --help)\n"))


# ---------------------------------------------------------------------------------------------
# Help and usage errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--help", "-h", "--he"])
def test_help_exits_0(invoke, flag):
    code, out, err = invoke([flag])
    assert code == 0 and err == ""
    assert out.startswith("Usage: allnc-train [OPTIONS]")
    for option in ("--config", "--out", "--set KEY=VALUE", "--resume", "--list-configs", "--print-config"):
        assert option in out


def test_help_imports_neither_torch_nor_the_training_loop():
    code = ("import sys; from allnc_train.cli import main; assert main(['--help']) == 0; "
            "heavy = [m for m in ('torch', 'allnc_train.train') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--frobnicate"], "No such option '--frobnicate'"),
    (["stray"], "unexpected extra argument (stray)"),
    (["--set"], "Option '--set' requires an argument"),
    (["--config"], "Option '--config' requires an argument"),
    (["--out", "--resume"], "Option '--out' requires an argument"),  # like argparse: an option is no value
    (["--resume=1"], "'--resume' does not take a value"),
    ([*UFM, "--print-config", "--set=optim.epochs=3", "seed=5"], "unexpected extra argument (seed=5)"),
    ([*UFM, "--print-config", "--", "x"], "unexpected extra argument (x)"),
])
def test_usage_error_is_one_line_and_exit_2(invoke, argv, message):
    code, out, err = invoke(argv)
    assert code == 2 and out == "" and _one_error_line(err, usage=True) and message in err, err


def test_main_returns_the_status_and_reads_sys_argv(capsys, monkeypatch):
    assert main(["--frobnicate"]) == 2  # returned, not raised as SystemExit
    monkeypatch.setattr(sys, "argv", ["allnc-train", "--list-configs"])
    assert main() == 0
    assert "ufm_lt_r100_ce" in capsys.readouterr().out.split()


def test_console_script_and_module_exit_with_mains_status():
    scripts = Path(sysconfig.get_path("scripts"))
    commands = [[sys.executable, "-m", "allnc_train.cli"]]
    if (scripts / "allnc-train").is_file():
        commands.append([str(scripts / "allnc-train")])
    for command in commands:
        done = subprocess.run(command + ["--frobnicate"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stdout == "" and _one_error_line(done.stderr, usage=True), done.stderr
        done = subprocess.run(command + [*UFM, "--print-config", "--set", "optim.epochs=3", "seed=5"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and yaml.safe_load(done.stdout)["seed"] == 5, done.stderr


# ---------------------------------------------------------------------------------------------
# --list-configs, --print-config and the forms of --set
# ---------------------------------------------------------------------------------------------

def test_list_configs(invoke):
    code, out, err = invoke(["--list-configs"])
    assert code == 0 and err == ""
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}
    assert list(lines) == bundled_configs()  # one line per config, in name order
    assert lines["cifar10_lt_r100_allnc_no_p2p"] == "cifar10 ratio 100 allnc without p2p"
    assert lines["cifar100_balanced_ce"].startswith("cifar100 balanced ce: cross-entropy")
    assert lines["imagenet_lt_ce"].startswith("imagenet_lt natural ce")  # its split files fix the imbalance
    assert lines["ufm_lt_r100_ce"].startswith("synthetic ratio 100 ce")


def test_version_is_the_distributions(invoke):
    import nctools

    code, out, err = invoke(["--version"])
    assert code == 0 and err == "" and out == f"allnc-train, version {nctools.__version__}\n"


def test_missing_trainer_dependencies_are_one_line(invoke, monkeypatch):
    """The light install has the command but not the trainer's own dependencies: say so and how to add them."""
    import allnc_train.cli as cli_module

    monkeypatch.setitem(cli_module._TRAIN_NEEDS, "no_such_module_for_the_test", "SomeDist")
    code, out, err = invoke([*UFM, "--print-config"])
    assert code == 2 and out == "" and _one_error_line(err)
    assert "the trainer needs SomeDist (not installed here); pip install 'neural-collapse-tools[train]'" in err
    assert invoke(["--help"])[0] == 0  # help and --version still work


def test_bundled_config_lookup_stays_importable():
    assert find_config("ufm_lt_r100_ce") == CONFIG_DIR / "ufm_lt_r100_ce.yaml"
    assert find_config("configs/ufm_lt_r100_ce.yaml") == CONFIG_DIR / "ufm_lt_r100_ce.yaml"


@pytest.mark.parametrize("argv", [
    [*UFM, "--print-config", "--set", "optim.epochs=3", "seed=5"],  # several values after one --set
    [*UFM, "--print-config", "--set", "optim.epochs=3", "--set", "seed=5"],  # repeated --set
    [*UFM, "--set", "optim.epochs=3", "seed=5", "--print-config"],  # an option ends the run of values
    ["--set", "optim.epochs=3", "seed=5", *UFM, "--print-config"],
    [*UFM, "--print-config", "--set=optim.epochs=3", "--set", "seed=5"],
    [*UFM, "--print-config", "--set", "seed=1", "optim.epochs=3", "--set", "seed=5"],  # the last one wins
    ["--conf", "ufm_lt_r100_ce", "--print", "--se", "optim.epochs=3", "seed=5"],  # abbreviations, as argparse
    ["--config=ufm_lt_r100_ce", "--print-config", "--set", "optim.epochs=3", "seed=5"],
])
def test_print_config_with_every_form_of_set(invoke, argv):
    code, out, err = invoke(argv)
    assert code == 0 and err == "", err
    cfg = yaml.safe_load(out)
    assert cfg["optim"]["epochs"] == 3 and cfg["seed"] == 5 and cfg["model"]["arch"] == "ufm"


def test_print_config_does_not_need_out_or_create_anything(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke([*UFM, "--print-config"])
    assert code == 0 and "name: ce" in out and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    ([*UFM], "--out is required"),
    ([*UFM, "--set", "optim.epochs=3"], "--out is required"),
    (["--out", "{run}"], "--config is required for a new run"),
    ([*UFM, "--out", "{run}", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    ([*UFM, "--out", "{run}", "--set", "optim.epochs=3", "optim.lr"], "must look like key=value"),
    ([*UFM, "--out", "{run}", "--set", "optim.lr=abc"], "'optim.lr' must be a number"),
    (["--config", "no_such.yaml", "--out", "{run}"], "does not exist and is not a bundled config"),
    (["--out", "{run}", "--resume"], "nothing to resume in"),
    (["--print-config", "--resume"], "--out is required"),  # was a traceback under argparse
])
def test_bad_input_is_one_line_and_exit_2(invoke, tmp_path, argv, message):
    run = tmp_path / "run"
    code, out, err = invoke([a.format(run=run) for a in argv])
    assert code == 2 and out == "" and _one_error_line(err) and message in err, err
    assert "--help" not in err  # a config problem, not a usage problem
    assert not run.exists()


# ---------------------------------------------------------------------------------------------
# Training: the summary line, exit codes 1 / 2 / 130, rank 0 alone prints (training stubbed)
# ---------------------------------------------------------------------------------------------

RECORD = {"status": "finished", "epochs": [{"epoch": 1, "eval_top1": 0.25}, {"epoch": 2, "eval_top1": 0.5,
                                                                           "eval_many": 0.9, "eval_few": 0.1}]}


@pytest.fixture
def stub_train(monkeypatch):
    """Replace the training loop: records its calls and returns RECORD, or raises ``raises``."""
    calls = []

    def install(raises: BaseException | None = None):
        def fake_train(cfg, out, resume=False):
            calls.append((cfg, out, resume))
            if raises is not None:
                raise raises
            return RECORD
        monkeypatch.setattr(train_module, "train", fake_train)
        return calls
    return install


def test_training_prints_one_json_summary_line(invoke, stub_train, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    calls = stub_train()
    out_dir = str(tmp_path / "run")
    code, out, err = invoke([*UFM, "--out", out_dir, "--set", "optim.epochs=2", *FAST])
    assert code == 0 and err == ""
    assert json.loads(out) == {"out": out_dir, "status": "finished", "epoch": 2, "eval_top1": 0.5,
                               "eval_many": 0.9, "eval_medium": None, "eval_few": 0.1}
    assert out.count("\n") == 1
    (cfg, given_out, resume), = calls
    assert cfg.optim.epochs == 2 and not cfg.run.progress and given_out == out_dir and resume is False


def test_only_rank_0_prints_the_summary(invoke, stub_train, tmp_path, monkeypatch):
    stub_train()
    monkeypatch.setenv("RANK", "1")
    code, out, err = invoke([*UFM, "--out", str(tmp_path / "run")])
    assert (code, out, err) == (0, "", "")
    monkeypatch.setenv("RANK", "0")
    code, out, _ = invoke([*UFM, "--out", str(tmp_path / "run")])
    assert code == 0 and json.loads(out)["status"] == "finished"


def test_training_errors_and_interrupts(invoke, stub_train, tmp_path):
    out_dir = str(tmp_path / "run")
    stub_train(train_module.TrainingDiverged("training diverged in epoch 1 (loss nan)"))
    code, out, err = invoke([*UFM, "--out", out_dir])
    assert code == 1 and out == "" and err == "allnc-train: error: training diverged in epoch 1 (loss nan)\n"
    stub_train(train_module.RunError(f"{out_dir} already holds a run;\nuse --resume"))
    code, out, err = invoke([*UFM, "--out", out_dir])
    assert code == 2 and out == "" and _one_error_line(err) and "already holds a run; use --resume" in err
    stub_train(KeyboardInterrupt())
    code, out, err = invoke([*UFM, "--out", out_dir])
    assert code == 130 and out == ""
    # no epoch was saved, so the hint starts the run again (a --resume would fail), the path shell-quoted
    assert err == (f"allnc-train: interrupted before the first epoch was saved; start it again with: allnc-train "
                   f"--config {UFM[1]} --out {shlex.quote(out_dir)}\n")


def test_resume_passes_the_flag_and_the_runs_own_config(invoke, stub_train, tmp_path, monkeypatch):
    calls = stub_train()
    cfg = load_config(CONFIG_DIR / "ufm_lt_r100_ce.yaml", ["optim.epochs=4"])
    monkeypatch.setattr(checkpoint_module, "run_config", lambda out: cfg)
    code, out, _ = invoke(["--out", str(tmp_path / "run"), "--resume", "--set", "run.progress=false"])
    assert code == 0 and json.loads(out)["status"] == "finished"
    (given, _, resume), = calls
    assert resume is True and given.optim.epochs == 4 and not given.run.progress


# ---------------------------------------------------------------------------------------------
# One real run, end to end (about a second)
# ---------------------------------------------------------------------------------------------

def test_a_real_run_and_its_resume(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    out_dir = tmp_path / "run"
    assert main([*UFM, "--out", str(out_dir), "--set", "optim.epochs=1", *FAST]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished" and summary["epoch"] == 1 and summary["out"] == str(out_dir)
    assert json.loads((out_dir / "run.json").read_text())["status"] == "finished"
    assert main([*UFM, "--out", str(out_dir)]) == 2  # an existing run is not overwritten
    err = capsys.readouterr().err
    assert _one_error_line(err) and str(out_dir) in err
    result = _runner().invoke(cli, ["--out", str(out_dir), "--resume"])
    assert result.exit_code == 0 and json.loads(result.stdout)["epoch"] == 1
