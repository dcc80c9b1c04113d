"""The paper-reproduction pipeline (experiments/reproduce_paper.py and its modules) end to end at toy size."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from experiments import paper_runs, paper_tables
from experiments import reproduce_paper as rp
from experiments.launcher import run_state
from nctools.io.layout import DUMP_FOLDERS, dump_path, record_path
from tests.helpers.paths import REPO

MODULE = "experiments.reproduce_paper"
FIGURES = ("fig2_icpa", "fig3_cos_std", "fig4_self_duality", "fig5b_eta")


def _run(*args, timeout=300):
    # CI exports the tarball variables; without them gone, a missing --data100 would be filled from the
    # environment and the script would go on to train instead of refusing.
    # Nor may a CIFAR copy a developer extracted into the checkout's .cache/ stand in for a missing one.
    env = {k: v for k, v in os.environ.items() if k not in rp.TARBALL_ENV.values()}
    env[rp.CACHE_ENV] = tempfile.mkdtemp(prefix="no-cifar-cache-")
    return subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


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


@pytest.mark.slow  # 45 s: six UFM runs; the resume, plan, table and figure tests below stay in the default run
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
    from allnc_train.cli import CONFIG_DIR
    from allnc_train.config import load_config
    from allnc_train.train import train

    (fam,) = paper_runs.profile_families("smoke", with_cifar=False)
    runs = paper_runs.plan_runs([fam], {})
    run = next(r for r in runs if r.kind == "ce_lt")
    run_dir = tmp_path / "runs" / run.name
    train(load_config(CONFIG_DIR / f"{run.config}.yaml", run.overrides), run_dir, stop_after=1)
    assert run_state(run_dir) == "partial"
    assert rp.train_command(run, run_dir, "partial") == ["allnc-train", "--out", str(run_dir), "--resume"]
    rp.train_all([run], tmp_path, jobs=1, log=lambda m: None)
    assert run_state(run_dir) == "finished"
    record = json.loads(record_path(run_dir).read_text())
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
    from allnc_train.schedules import gbbn_eta
    from experiments.paper_figures import eta_curves

    fig = eta_curves(10, [1, 2], {"run": ([1, 2], [gbbn_eta(0, 10, 2), gbbn_eta(1, 10, 2)])})
    left, right = fig.axes
    x, y = left.lines[1].get_data()  # gamma = 2
    assert y[0] == 1.0 and abs(y[-1]) < 1e-12 and abs(y[100] - 0.75) < 1e-12  # t = T/2
    _, y2 = right.lines[1].get_data()
    assert abs(y2[100] - 0.25) < 1e-12


def test_legends_lie_inside_the_figure_and_off_the_panels():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from experiments.paper_figures import eta_curves, methods_by_ratio

    labels = ["CE balanced", "CE-LT", "LA-LT", "ETF-LT", "AllNC-LT"]
    line = ([1, 2, 3], [0.3, 0.2, 0.1])
    grid = methods_by_ratio({("cos-Std", 100): {k: line for k in labels}}, ["cos-Std"], [100], "t")
    eta = eta_curves(10, [0.5, 1, 2, 4], {"logged by a run": ([1, 2], [1.0, 0.99])})
    for fig in (grid, eta):
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)  # lay out (constrained layout moves the legend outside the panels)
        (legend,) = fig.legends
        box, page = legend.get_window_extent(renderer), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, "legend cut at the edge"
        assert all(not box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
        assert not any(ax.get_legend() for ax in fig.axes)


@pytest.mark.slow
def test_smoke_with_real_cifar10(tmp_path, cifar10_root):
    """The smoke profile with its tiny real CIFAR-10 part (ResNet-32, 1 epoch) on the shared JPEG copy."""
    out = tmp_path / "results"
    result = _run("--profile", "smoke", "--data", str(cifar10_root), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    _check_outputs(out, ["ufm10", "cifar10"])
    assert "| cifar10/allnc_lt_r10 | AllNC-LT | 10 |" in (out / "results.md").read_text()


def test_cpu_v1_profile_plans_every_method_and_extra_seeds(tmp_path):
    plan = _run("--profile", "cpu_v1", "--out", str(tmp_path), "--data", "/data/c10", "--dry-run", timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0].startswith("profile cpu_v1: 12 runs")
    for config in ("balanced_ce", "lt_r100_ce", "lt_r100_la", "lt_r100_etf", "lt_r100_etf_dr", "lt_r100_bbn",
                   "lt_r100_allnc"):
        assert f"--config cifar10_{config} " in plan.stdout, config
    assert "ce_lt_r100_s1" in plan.stdout and "allnc_lt_r100_s1" in plan.stdout and " seed=1" in plan.stdout
    assert "data.test_per_class" not in plan.stdout  # all 10,000 test images
    assert "data.n_max=124" in plan.stdout and "data.n_max=500" in plan.stdout  # the balanced run has the same N
    assert "optim.weight_decay" not in plan.stdout  # the configs' own 2e-4


def test_cpu_profile_is_the_evidence_study_three_seeds_controls_and_test_dumps(tmp_path):
    plan = _run("--profile", "cpu", "--out", str(tmp_path), "--data", "/data/c10", "--dry-run", timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0].startswith("profile cpu: 36 runs")
    for config in ("balanced_ce", "lt_r100_ce", "lt_r100_la", "lt_r100_etf", "lt_r100_allnc",
                   *(f"lt_r100_{c}" for c in paper_runs.CONTROLS)):
        assert f"--config cifar10_{config} " in plan.stdout, config
    assert "_etf_dr" not in plan.stdout and "_bbn" not in plan.stdout
    assert plan.stdout.count("run.dump_test=true") == 36
    assert f"optim.weight_decay={paper_runs.STUDY_WEIGHT_DECAY:g}" in plan.stdout
    runs = sorted(paper_runs.plan_runs(paper_runs.profile_families("cpu", True), {"cifar10": "/d"}),
                  key=paper_runs.priority)
    assert [r.seed for r in runs] == [0] * 12 + [1] * 12 + [2] * 12
    assert [r.kind for r in runs[:5]] == ["ce_lt", "allnc_lt", "ce_bal", "la", "etf"]  # the claims' runs first


def test_cpu100_profile_is_cifar100_lt_width_2_two_seeds(tmp_path):
    (fam,) = paper_runs.profile_families("cpu100", with_cifar=True)
    runs = paper_runs.plan_runs([fam], {"cifar100": "/d"})
    assert sorted({r.kind for r in runs}) == ["allnc_lt", "ce_bal", "ce_lt", "etf", "la"]
    assert sorted({r.seed for r in runs}) == [0, 1] and len(runs) == 10
    assert all(r.config.startswith("cifar100_") and "data.root=/d" in r.overrides for r in runs)
    lt = next(r for r in runs if r.kind == "ce_lt")
    assert "data.n_max=100" in lt.overrides and "d = 128" in fam.description


def test_cpu100_analysis_has_no_ablation_group(tmp_path):
    # cpu100 trains no ablations; planning its analysis once looked them up (a KeyError after all the training)
    plan = _run("--profile", "cpu100", "--out", str(tmp_path), "--data100", "/data/c100", "--dry-run", timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "compare/cifar100_r100 " in plan.stdout and "_ablation" not in plan.stdout


def test_seeds_give_every_run_each_seed_and_train_seed_0_first(tmp_path):
    fam = paper_runs.profile_families("cpu_v1", with_cifar=True)[0]
    fam.seeds, fam.default_seeds = {}, [0, 1]
    runs = sorted(paper_runs.plan_runs([fam], {"cifar10": "/data/c10"}), key=paper_runs.priority)
    assert len(runs) == 20 and [r.seed for r in runs] == [0] * 10 + [1] * 10
    assert [r.kind for r in runs[10:12]] == ["ce_lt", "allnc_lt"]  # the claims' runs first in each seed
    plan = _run("--profile", "cpu_v1", "--out", str(tmp_path), "--data", "/data/c10", "--seeds", "0,1", "--dry-run",
                timeout=60)
    assert plan.returncode == 0 and plan.stdout.splitlines()[0].startswith("profile cpu_v1: 20 runs"), plan.stderr
    refused = _run("--profile", "cpu", "--out", str(tmp_path), "--data", "/data/c10", "--seeds", "1", "--dry-run",
                   timeout=60)
    assert refused.returncode != 0 and "must include 0" in refused.stderr


def _cpu_run(kind: str, seed: int) -> paper_runs.Run:
    (fam,) = paper_runs.profile_families("cpu", with_cifar=True)
    return next(r for r in paper_runs.plan_runs([fam], {"cifar10": "/data"}) if r.kind == kind and r.seed == seed)


def _fabricate_finished(run: paper_runs.Run, out: Path):
    """A finished run folder of ``run`` under ``out``: train and test dumps at epoch 3, and its run.json.
    Returns (training labels, class means) for checks."""
    import torch

    import nctools

    run_dir = out / "runs" / run.name
    (run_dir / DUMP_FOLDERS["train"]).mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 30, 18, 10, 6, 4, 3, 2, 2, 2]))
    means = torch.randn(10, 16, generator=g)
    feats = means[labels] + 0.3 * torch.randn(len(labels), 16, generator=g)
    weight = torch.randn(10, 16, generator=g)
    nctools.save_dump(dump_path(run_dir, "train", 3, "safetensors"), feats.half(), labels, weight=weight,
                      class_counts=torch.bincount(labels))
    test_labels = torch.arange(10).repeat_interleave(20)  # balanced, the training counts in the metadata
    test_feats = means[test_labels] + 0.6 * torch.randn(len(test_labels), 16, generator=g)
    (run_dir / DUMP_FOLDERS["test"]).mkdir(parents=True)
    nctools.save_dump(dump_path(run_dir, "test", 3, "safetensors"), test_feats.half(), test_labels, weight=weight,
                      class_counts=torch.bincount(labels))
    epochs = [{"epoch": 3, "train_time_s": 2.5, "train_top1": 99.5, "eval_top1": 61.0, "eval_many": 90.0,
               "eval_medium": 60.0, "eval_few": 30.0, "dump": "dumps/epoch_0003.safetensors",
               "dump_test": "dumps-test/epoch_0003.safetensors"}]
    record_path(run_dir).write_text(json.dumps({"status": "finished", "epochs": epochs, "environment":
                                                  {"device": "cpu"}, "data": {"num_train": len(labels),
                                                                              "num_eval": 10000}}))
    return labels, means


def test_a_study_with_no_finished_run_gets_no_csv(tmp_path, capsys):
    """Stopping a sitting before any run of a study finished must not leave a header-only CSV behind: it would
    read as a study with no rows (and the committed-results checks would take it for one)."""
    run = _cpu_run("allnc_lt", 1)
    path = tmp_path / "study.csv"
    assert paper_tables.write_results_csv([run], tmp_path / "out", path, tmp_path / "dumps", {}) is None
    assert not path.exists()
    assert "1 planned run(s) have no row yet" in capsys.readouterr().err


def test_results_csv_rows_are_what_nctools_analyze_gives_on_the_copied_dump(tmp_path):
    """A finished (fabricated) run gives one CSV row: accuracies as fractions, its final dump copied,
    and metric columns equal to ``nctools analyze`` on that copy."""
    import csv

    import nctools

    run = _cpu_run("allnc_lt", 1)
    labels, _ = _fabricate_finished(run, tmp_path)
    path = paper_tables.write_results_csv([run], tmp_path, tmp_path / "out.csv", tmp_path / "dumps", {})
    (row,) = list(csv.DictReader(path.open()))
    assert list(row) == list(paper_tables.CSV_COLUMNS)
    assert (row["method"], row["beta"], row["seed"], row["epochs"]) == ("allnc", "100", "1", "3")
    assert float(row["train_acc"]) == 0.995 and float(row["few_acc"]) == 0.3 and row["n_test"] == "10000"
    copied = Path(row["dump"])
    assert copied.name == "cifar10_allnc_b100_s1.safetensors" and copied.is_file()
    dump = nctools.load_dump(copied)
    summary = nctools.analyze(dump.features, dump.labels, weight=dump.weight, class_counts=dump.class_counts,
                              device="cpu").summary
    same = ("nc1", "nc2_cos_std_means", "nc2_cos_std_classifier", "nc3_self_duality", "tail_icpa_mean_deg_means",
            "tail_icpa_mean_deg_classifier", "nc3_self_duality_sample_center", "tail_icpa_mean_deg_means_sample_center")
    for column, key in [(k, k) for k in same] + [("nc1_tail", "tail_nc1")]:
        assert float(row[column]) == pytest.approx(summary[key], rel=1e-6), column
    assert row["nc3_self_duality_sample_center"] != row["nc3_self_duality"]  # imbalanced: the centrings differ
    test_copy = Path(row["test_dump"])
    assert test_copy.name == "cifar10_allnc_b100_s1_test.safetensors"
    test = nctools.load_dump(test_copy)
    test_summary = nctools.analyze(test.features, test.labels, weight=test.weight, class_counts=test.class_counts,
                                   device="cpu").summary
    for column, key in [("test_nc1", "nc1"), ("test_nc1_tail", "tail_nc1"),
                        ("test_nc4_ncc_mismatch", "nc4_ncc_mismatch"),
                        ("test_tail_icpa_mean_deg_means", "tail_icpa_mean_deg_means"),
                        ("test_nc3_self_duality", "nc3_self_duality")]:
        assert float(row[column]) == pytest.approx(test_summary[key], rel=1e-6), column
    assert float(row["test_nc1"]) > float(row["nc1"])  # the test features are the noisier ones
    # the curves over epochs, kept beside the dumps: here one epoch, the final dump's numbers
    import pandas as pd

    for column, prefix, name in (("track", "", "cifar10_allnc_b100_s1.csv"),
                                 ("test_track", "test_", "cifar10_allnc_b100_s1_test.csv")):
        path = Path(row[column])
        assert path.parent == tmp_path / "tracks" and path.name == name
        (last,) = pd.read_csv(path).to_dict("records")
        assert last["epoch"] == 3
        assert last["nc3_self_duality"] == pytest.approx(float(row[f"{prefix}nc3_self_duality"]), rel=1e-6)


def test_the_csv_keeps_recorded_rows_whose_run_folders_are_gone(tmp_path, capsys):
    """The CSV and its dumps are the study's record: rewriting it from a scratch folder that lost some
    runs keeps their rows verbatim, keeps every other row too (other plans, a lost dump), in a stable
    order, and counts as recorded only a row of the same recipe whose dumps are there."""
    import csv

    def rows():
        with open(csv_path, newline="") as fh:
            return list(csv.DictReader(fh))

    csv_path, dumps = tmp_path / "study.csv", tmp_path / "dumps"
    old, new, other = _cpu_run("allnc_lt", 1), _cpu_run("ce_lt", 0), _cpu_run("la", 2)
    _fabricate_finished(old, tmp_path / "first")
    paper_tables.write_results_csv([old], tmp_path / "first", csv_path, dumps, {old.name: 123.0})
    (recorded,) = rows()
    assert recorded["recipe"] == paper_tables.recipe(old) and "data.root" not in recorded["recipe"]
    extra = [dict(recorded, method="bbn", seed="7"),  # a row of another plan
             dict(recorded, method="ldam", dump=str(tmp_path / "gone.safetensors")),  # its dump deleted
             dict(recorded, method="la", seed="2", recipe="cifar10_lt_r100_la optim.epochs=1")]  # another recipe
    with open(csv_path, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=list(recorded)).writerows(extra)
    assert set(paper_tables.recorded_rows(csv_path, [old, new, other])) == {old.name}

    _fabricate_finished(new, tmp_path / "second")  # a new scratch folder: `old` has no folder there
    paper_tables.write_results_csv([new, old, other], tmp_path / "second", csv_path, dumps, {})
    assert [(r["method"], r["seed"]) for r in rows()] == [("ce", "0"), ("allnc", "1"), ("bbn", "7"), ("ldam", "1"),
                                                          ("la", "2")]
    assert rows()[1] == recorded and rows()[1]["wall_s"] == "123.0"
    assert "1 planned run(s) have no row yet: cifar10/la_r100_s2" in capsys.readouterr().err

    # a finished folder trained with another recipe than planned makes no row; the recorded one stays
    (tmp_path / "second" / "plan.json").write_text(json.dumps({new.name: "allnc-train --config x"}))
    before = rows()
    paper_tables.write_results_csv([new, old, other], tmp_path / "second", csv_path, dumps, {})
    assert rows() == before and "ce_lt_r100 in " in capsys.readouterr().err

    # a recorded run finished in the scratch folder too: its row is made again only when asked
    (tmp_path / "second" / "plan.json").unlink()
    _fabricate_finished(old, tmp_path / "second")
    paper_tables.write_results_csv([new, old, other], tmp_path / "second", csv_path, dumps, {}, renew={new.name})
    assert rows()[1]["wall_s"] == "123.0"
    paper_tables.write_results_csv([new, old, other], tmp_path / "second", csv_path, dumps, {})
    assert rows()[1]["wall_s"] == "2.5"  # remade: the sum of its epochs' training times
    assert [(r["method"], r["seed"]) for r in rows()][:2] == [("ce", "0"), ("allnc", "1")]


def test_only_picks_runs_and_recorded_ones_are_not_trained(tmp_path):
    """--only narrows the plan; a run whose row (with its dumps) is in --csv shows as recorded and is not
    trained; with part of the plan there is no figure step."""
    run = _cpu_run("ce_lt", 1)
    _fabricate_finished(run, tmp_path / "scratch")
    csv_path = paper_tables.write_results_csv([run], tmp_path / "scratch", tmp_path / "s.csv", tmp_path / "d", {})
    plan = _run("--profile", "cpu", "--out", str(tmp_path / "out"), "--data", "/data/c10", "--csv", str(csv_path),
                "--only", "cifar10/ce_lt_r100_s1,cifar10/la_*", "--dry-run", timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0].startswith("profile cpu: 4 runs")
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["[new", "]"], ["[recorded]", "cifar10/ce_lt_r100_s1"], ["[new", "]"], ["[new", "]"]]
    assert "and no figures" in plan.stdout and "nctools track" not in plan.stdout
    none = _run("--profile", "cpu", "--out", str(tmp_path), "--data", "/data/c10", "--only", "nope", timeout=60)
    assert none.returncode != 0 and "no run of profile cpu matches --only nope" in none.stderr


@pytest.mark.parametrize("ending, status", [("stopped", 143), ("failed", 1)])
def test_a_stopped_or_failed_sitting_still_writes_the_rows_it_finished(monkeypatch, tmp_path, capsys, ending,
                                                                       status):
    """SIGTERM reaches the launcher (killed without that, the parent died and its allnc-train children trained
    on with nobody to record them); the runs that finished get their rows before main exits 143, or 1 with one
    sentence naming the run that failed."""
    import csv

    from experiments.launcher import Launch, Outcome

    out, csv_path = tmp_path / "out", tmp_path / "study.csv"
    done, other = _cpu_run("ce_lt", 1), _cpu_run("la", 1)
    seen = {}

    def fake_launch(jobs, parallel, **kw):
        seen.update(kw)
        _fabricate_finished(done, out)
        finished = Outcome("finished", process_s=9.0)
        kw["on_end"](done.name, finished)  # as the launcher reports each run's end: its wall time is kept
        with open(csv_path, newline="") as fh:  # and its row is written then, while the others still train
            seen["rows while training"] = [r["method"] for r in csv.DictReader(fh)]
        second = Outcome("skipped", why="stopped") if ending == "stopped" else Outcome("failed", exit=3)
        return Launch({done.name: finished, other.name: second}, stopped=ending == "stopped")

    monkeypatch.setattr(rp, "launch", fake_launch)
    got = rp.main(["--profile", "cpu", "--out", str(out), "--data", "/data/c10", "--csv", str(csv_path),
                   "--dumps", str(tmp_path / "dumps"), "--only", f"{done.name},{other.name}"])
    assert got == status and seen["sigterm"] and seen["rows while training"] == ["ce"]
    with open(csv_path, newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["method"], row["seed"], row["wall_s"]) == ("ce", "1", "9.0")
    err = capsys.readouterr().err
    if ending == "failed":
        assert "reproduce_paper: cifar10/la_r100_s1: allnc-train exited with 3; see " in err


def test_skip_train_with_only_writes_rows_and_draws_nothing(tmp_path, capsys):
    """--skip-train --only: the rows of the finished runs picked, and no figure step (it needs every run's
    folder; it once failed on a part of the plan with a KeyError)."""
    import csv

    out, csv_path = tmp_path / "out", tmp_path / "study.csv"
    run = _cpu_run("la", 0)
    _fabricate_finished(run, out)
    got = rp.main(["--profile", "cpu", "--out", str(out), "--data", "/data/c10", "--csv", str(csv_path),
                   "--dumps", str(tmp_path / "dumps"), "--only", "cifar10/la_*", "--skip-train"])
    assert got == 0 and "no figures or results.md" in capsys.readouterr().out
    with open(csv_path, newline="") as fh:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(fh)] == [("la", "0")]


def test_one_csv_for_two_datasets_is_refused(tmp_path):
    plan = _run("--profile", "full", "--out", str(tmp_path), "--data", "/d", "--data100", "/d100", "--csv",
                str(tmp_path / "x.csv"), "--dry-run", timeout=60)
    assert plan.returncode != 0 and "--csv names one file, and profile full has 2 datasets" in plan.stderr


def test_a_row_that_fails_while_training_goes_on(monkeypatch, tmp_path, capsys):
    """A row that cannot be made as its run ends (say, the dumps folder is unwritable for a moment) is a log
    line, never the end of the sitting: the runs go on and the sitting's end writes the rows again."""
    from experiments.launcher import Launch, Outcome

    out, run = tmp_path / "out", _cpu_run("ce_lt", 1)
    calls = []
    real = rp.write_results_csv

    def flaky(*args, **kw):
        calls.append(kw.get("renew"))
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real(*args, **kw)

    def fake_launch(jobs, parallel, **kw):
        _fabricate_finished(run, out)
        finished = Outcome("finished", process_s=9.0)
        kw["on_end"](run.name, finished)
        return Launch({run.name: finished})

    monkeypatch.setattr(rp, "launch", fake_launch)
    monkeypatch.setattr(rp, "write_results_csv", flaky)
    got = rp.main(["--profile", "cpu", "--out", str(out), "--data", "/data/c10", "--csv", str(tmp_path / "s.csv"),
                   "--dumps", str(tmp_path / "dumps"), "--only", run.name])
    assert got == 0 and calls == [{run.name}, {run.name}]
    assert "no row yet for cifar10/ce_lt_r100_s1 (No space left on device)" in capsys.readouterr().out
    assert (tmp_path / "s.csv").read_text().count("\nce,100,1,") == 1


def test_the_runs_with_no_row_are_counted_once_a_sitting(monkeypatch, tmp_path, capsys):
    """The CSV is rewritten as each run finishes and again at the end; only the end counts the planned runs
    that still have no row, so a long sitting's log carries that line once, not once per run."""
    from experiments.launcher import Launch, Outcome

    out, runs = tmp_path / "out", [_cpu_run("ce_lt", 1), _cpu_run("la", 1)]

    def fake_launch(jobs, parallel, **kw):
        for run in runs:
            _fabricate_finished(run, out)
            kw["on_end"](run.name, Outcome("finished", process_s=9.0))
        return Launch({run.name: Outcome("finished", process_s=9.0) for run in runs})

    monkeypatch.setattr(rp, "launch", fake_launch)
    got = rp.main(["--profile", "cpu", "--out", str(out), "--data", "/data/c10", "--csv", str(tmp_path / "s.csv"),
                   "--dumps", str(tmp_path / "dumps"), "--only", ",".join(run.name for run in runs)])
    captured = capsys.readouterr()
    assert got == 0 and captured.out.count("row    cifar10/") == 2
    assert captured.err.count("planned run(s) have no row yet") == 1


def test_hours_gives_the_launch_a_deadline_and_each_run_its_expected_time(monkeypatch, tmp_path):
    """--hours H: the runs' expected times are the median wall_s the CSV records for their method, and the
    launch gets H as its deadline (it skips a run that would overrun for a shorter one, tested in
    test_launcher)."""
    from experiments.launcher import Launch

    scratch, csv_path = tmp_path / "scratch", tmp_path / "s.csv"
    recorded = _cpu_run("ce_lt", 0)
    _fabricate_finished(recorded, scratch)
    paper_tables.write_results_csv([recorded], scratch, csv_path, tmp_path / "d", {recorded.name: 1500.0})
    seen = {}

    def fake_launch(jobs, parallel, **kw):
        seen["expected"] = {j.name: j.expected_s for j in jobs}
        seen["seconds"] = kw["seconds"]
        return Launch({})

    monkeypatch.setattr(rp, "launch", fake_launch)
    got = rp.main(["--profile", "cpu", "--out", str(tmp_path / "out"), "--data", "/d", "--csv", str(csv_path),
                   "--dumps", str(tmp_path / "d"), "--only", "cifar10/ce_lt_r100_s1,cifar10/allnc_lt_r100_s1",
                   "--hours", "0.5"])
    assert got == 0 and seen["seconds"] == 1800
    assert seen["expected"] == {"cifar10/ce_lt_r100_s1": 1500.0, "cifar10/allnc_lt_r100_s1": None}


def test_a_runs_expected_time_is_the_median_wall_s_of_its_methods_rows(tmp_path):
    """One row trained beside two other processes must not make every later run of its method look too
    long: the estimate is the median of the method's rows, not the longest."""
    csv_path = tmp_path / "s.csv"
    rows = [("ce", 100, 0, 1500), ("ce", 100, 1, 4800), ("ce", 100, 2, 1700), ("ce", 1, 0, 300), ("la", 100, 0, 900)]
    csv_path.write_text("method,beta,seed,wall_s\n" + "".join(f"{m},{b},{s},{w}\n" for m, b, s, w in rows))
    (fam,) = paper_runs.profile_families("cpu", with_cifar=True)
    plan = {(r.kind, r.seed): r for r in paper_runs.plan_runs([fam], {"cifar10": "/data"})}
    runs = [plan["ce_lt", 1], plan["la", 1], plan["allnc_lt", 1]]
    got = rp.expected_seconds(runs, {fam: csv_path})
    assert got == {runs[0].name: 1700.0, runs[1].name: 900.0}
