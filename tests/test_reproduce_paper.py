"""The paper-reproduction pipeline (examples/reproduce_paper.py) end to end at toy size."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "reproduce_paper.py"
FIGURES = ("fig2_icpa", "fig3_cos_std", "fig4_self_duality", "fig5b_eta")


def _module():
    spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_paper"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def _check_outputs(out: Path, families):
    for stem in FIGURES:
        for ext in (".pdf", ".png"):
            assert (out / f"{stem}{ext}").stat().st_size > 1000, stem
            for fam in families:
                assert (out / f"{stem}_{fam}{ext}").is_file(), (stem, fam)
    text = (out / "results.md").read_text()
    assert "### Ablation, ufm10, beta = 100" in text
    for label in ("CE balanced", "CE-LT", "AllNC-LT", "AllNC w/o HyCon", "AllNC w/o P2P", "AllNC w/o GBBN"):
        assert f"| {label} |" in text
    assert "nctools compare" in text and "nctools track" in text
    timings = json.loads((out / "timings.json").read_text())
    assert timings["ufm10/allnc_lt_r100"] > 0


def test_smoke_ufm_end_to_end_and_resume(tmp_path, one_torch_thread):
    """The smoke profile on unconstrained features: trains, analyses, writes every figure and table;
    a second invocation skips every finished run."""
    out = tmp_path / "results"
    first = _run("--profile", "smoke", "--no-cifar", "--out", str(out))
    assert first.returncode == 0, first.stderr + first.stdout
    _check_outputs(out, ["ufm10"])
    assert "train  ufm10/allnc_lt_r100" in first.stdout

    plan = _run("--profile", "smoke", "--no-cifar", "--out", str(out), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("[finished]") == 6 and "[new" not in plan.stdout


def test_partial_run_is_resumed(tmp_path, one_torch_thread):
    """A run killed after its first epoch is continued with allnc-train --resume, not restarted."""
    rp = _module()
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    (fam,) = rp.profile_families("smoke", with_cifar=False)
    runs = rp.plan_runs([fam], {})
    run = next(r for r in runs if r.kind == "ce_lt")
    run_dir = tmp_path / "runs" / run.name
    train(load_config(CONFIG_DIR / f"{run.config}.yaml", run.overrides), run_dir, stop_after=1)
    assert rp.run_state(run_dir) == "partial"
    assert rp.train_command(run, run_dir, "partial") == ["allnc-train", "--out", str(run_dir), "--resume"]
    rp.train_all([run], tmp_path, jobs=1, log=lambda m: None)
    assert rp.run_state(run_dir) == "finished"
    record = json.loads((run_dir / "run.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4]


def test_full_profile_dry_run_lists_the_recipes(tmp_path):
    plan = _run("--profile", "full", "--out", str(tmp_path), "--data", "/data/c10", "--data100", "/data/c100",
                "--dry-run", timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0].startswith("profile full: 20 runs")
    assert any("--config cifar10_lt_r100_allnc" in l and "data.root=/data/c10" in l for l in lines)
    assert any("--config cifar100_balanced_ce" in l and "data.root=/data/c100" in l for l in lines)
    assert any("gbbn.enabled=false" in l for l in lines)
    assert "optim.epochs" not in plan.stdout  # the bundled 200-epoch recipes, unchanged
    assert not (tmp_path / "runs").exists()


def test_full_profile_needs_cifar100(tmp_path):
    result = _run("--profile", "full", "--out", str(tmp_path), "--data", "/data/c10", timeout=60)
    assert result.returncode != 0 and "--data100" in result.stderr


def test_eta_figure_matches_the_schedule():
    from allnc_train.paper_figures import eta_curves
    from allnc_train.schedules import gbbn_eta

    fig = eta_curves(10, [1, 2], {"run": ([1, 2], [gbbn_eta(0, 10, 2), gbbn_eta(1, 10, 2)])})
    left, right = fig.axes
    x, y = left.lines[1].get_data()  # gamma = 2
    assert y[0] == 1.0 and abs(y[-1]) < 1e-12 and abs(y[100] - 0.75) < 1e-12  # t = T/2
    _, y2 = right.lines[1].get_data()
    assert abs(y2[100] - 0.25) < 1e-12


@pytest.mark.slow
def test_smoke_with_real_cifar10(tmp_path, cifar10_root):
    """The smoke profile with its tiny real CIFAR-10 part (ResNet-32, 1 epoch) on the shared JPEG copy."""
    out = tmp_path / "results"
    result = _run("--profile", "smoke", "--data", str(cifar10_root), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    _check_outputs(out, ["ufm10", "cifar10"])
    assert "| cifar10/allnc_lt_r10 | AllNC-LT | 10 |" in (out / "results.md").read_text()
