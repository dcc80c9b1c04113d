"""The CLI-wide checks: help texts, exit codes of internal errors, and every command once as a real
subprocess."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import nctools
from tests.helpers.cli import invoke, leftovers, make_dump, make_run


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("analyze", "track", "compare", "demo"):
        assert name in result.output
    assert "Exit status" in result.output


@pytest.mark.parametrize("command, words", [
    ("analyze", ["--out", "--center", "--split", "--groups", "--device", "--png", "--no-figures", "--format", "--quiet",
                 "--arch", "--data", "Examples"]),
    ("track", ["--out", "track.csv", "--split", "--png", "--no-figures", "Example"]),
    ("compare", ["--labels", "icpa_grid.pdf", "vs_ratio.pdf", "--no-figures", "Example"]),
    ("demo", ["--out", "nctools-demo", "make_demo_dump.py"]),
])
def test_every_subcommand_help_is_complete(command, words):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for word in words:
        assert word in result.output, word


@pytest.mark.parametrize("command", ["analyze", "track", "compare"])
def test_png_and_no_figures_together_are_refused_before_any_work(command, tmp_path):
    result = invoke(command, tmp_path / "absent", "--png", "--no-figures", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "--png asks for figures and --no-figures for none; give one of them" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_unexpected_error_exits_1_with_one_line(tmp_path, monkeypatch):
    import nctools.report.writer

    def boom(*args, **kwargs):
        raise RuntimeError("figure engine fell over")

    monkeypatch.setattr(nctools.report.writer, "analysis_figures", boom)
    dump = make_dump(tmp_path / "d.safetensors")
    result = invoke("analyze", dump, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "internal error" in result.stderr and "NCTOOLS_DEBUG=1" in result.stderr
    assert not (tmp_path / "out").exists()
    debug = invoke("analyze", dump, "--out", tmp_path / "out", env={"NCTOOLS_DEBUG": "1"})
    assert isinstance(debug.exception, RuntimeError)  # the traceback is there when asked for


def test_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    import nctools.report.writer

    def broken_book(figures, path):
        raise OSError("disk full")

    monkeypatch.setattr(nctools.report.writer, "_save_book", broken_book)  # after metrics.json was staged
    result = invoke("analyze", make_dump(tmp_path / "d.safetensors"), "--out", tmp_path / "out")
    assert result.exit_code == 2 and "disk full" in result.stderr
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- the console script


def _console(*args, cwd):
    exe = shutil.which("nctools")
    assert exe, "the nctools console script is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=240)


def test_console_script_analyzes_and_refuses(tmp_path):
    """The installed ``nctools`` script in a real process: one analysis, one refused input."""
    dump = make_dump(tmp_path / "d.safetensors")
    done = _console("analyze", dump, "--out", "rep", "--quiet", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["summary"]) == set(nctools.SUMMARY_KEYS) and done.stderr == ""
    bad = _console("analyze", tmp_path / "missing.pt", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"Error: {tmp_path / 'missing.pt'}: no such file."]


@pytest.mark.slow  # 35 s: every command's figures in its own process; in-process, each is in the default run
def test_console_script_runs_every_command(tmp_path):
    run_a = make_run(tmp_path / "run_a", ratio=10)
    run_b = make_run(tmp_path / "run_b", ratio=100)
    done = _console("track", run_a, "--out", "trk", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "trk" / "track.csv").is_file(), done.stderr
    done = _console("compare", run_a, run_b, "--out", "cmp", "--quiet", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "cmp" / "vs_ratio.pdf").is_file(), done.stderr
    done = _console("demo", "--quiet", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "nctools-demo" / "report.pdf").is_file(), done.stderr


# --------------------------------------------------------------------------- one version, one JSON shape


def test_version_is_the_packages():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"nctools, version {nctools.__version__}\n"


def test_help_of_shared_options_is_specific_to_each_command():
    """--split and --format mean something different for one input, one run and several runs."""
    helps = {name: " ".join(invoke(name, "--help").stdout.split()) for name in ("analyze", "track", "compare")}
    assert "the split to extract features on" in helps["analyze"] and "metrics.json" in helps["analyze"]
    assert "Track RUN_DIR/dumps/ (train)" in helps["track"] and "rows of track.csv" in helps["track"]
    assert "Compare the runs' dumps/" in helps["compare"] and "rows of compare.csv" in helps["compare"]
    assert "nctools-track-test" in helps["track"]


@pytest.mark.parametrize("command", ["analyze", "demo"])
def test_analyze_and_demo_json_is_metrics_json_under_the_common_keys(tmp_path, command):
    args = [make_dump(tmp_path / "d.safetensors")] if command == "analyze" else []
    result = invoke(command, *args, "--out", tmp_path / "out", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    head = {"command": command, "nctools_version": nctools.__version__, "out": str(tmp_path / "out")}
    assert {k: report.pop(k) for k in head} == head
    assert report == json.loads((tmp_path / "out" / "metrics.json").read_text())
    metadata = report["source"]["metadata"]
    assert isinstance(metadata["epoch"], int) and isinstance(metadata["class_names"], list)  # typed, not text
