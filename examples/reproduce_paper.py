"""Reproduce the AllNC paper's Figs. 2, 3, 4 and 5b (and an ablation table) from our own runs.

    python examples/reproduce_paper.py --profile quick --out results/          # 2-core CPU, ~15 min
    python examples/reproduce_paper.py --profile cpu --out results_cpu/ \
        --csv docs/results/cifar10_lt.csv --dumps docs/results/dumps           # terminal phase, ~4 h, resumable
    python examples/reproduce_paper.py --profile cpu --seeds 0,1 ...           # every run with 2 seeds, ~7 h
    python examples/reproduce_paper.py --profile full --out results/ --data data/cifar10 \\
        --data100 data/cifar100 --dry-run                                       # GPU recipes: the plan
    python examples/reproduce_paper.py --profile smoke --out /tmp/smoke        # CI size, < 1 min

Three steps, each through the project's own entry points:

1. train every run a figure needs with ``allnc-train`` (one subprocess per run, ``--jobs`` at a
   time, ``OMP_NUM_THREADS=1`` unless set): CE on balanced data, CE and AllNC on long-tailed data
   at each imbalance ratio, and the AllNC ablations (no HyCon / no P2P / no GBBN) at the largest;
2. read them with ``nctools track`` (every run: ``OUT/track/<run>/track.csv``) and ``nctools
   compare`` (``OUT/compare/<family>_r<beta>/``: CE-balanced vs CE-LT vs AllNC-LT; ``..._vs_ratio``;
   ``..._ablation``);
3. write ``fig2_icpa.pdf`` (compare's ICPA grid), ``fig3_cos_std.pdf`` and ``fig4_self_duality.pdf``
   (:func:`allnc_train.paper_figures.methods_by_ratio` on the track tables), ``fig5b_eta.pdf``
   (:func:`allnc_train.paper_figures.eta_curves`, with the eta the AllNC run logged), PNG twins, and
   ``results.md`` (a last-epoch table per family, the ablation table, every command and wall time).

The ``cpu`` profile trains ResNet-32 on real CIFAR-10-LT images to the terminal phase on a 2-core CPU
(beta = 100 on a smaller LDAM subset, n_max = 500: 1236 images; balanced CE on the same N, 124 per
class): balanced CE, CE-LT, LA, ETF, ETF + DR, BBN, AllNC and AllNC without each component, with
a second seed for CE-LT and AllNC (``--seeds 0,1``: for every run; seed 1's runs train after all of
seed 0's), tested on all 10,000 test images. It writes one row per run into
``--csv`` (accuracies as fractions, the metrics ``nctools analyze`` gives on the run's final
training-set dump) and copies each final dump (float16) into ``--dumps``.

Families: ``ufm10`` is the unconstrained-features model (10 classes, 500 ... 500/beta free 32-d
features, seconds per run); ``cifar10`` is ResNet-32 on the JPEG copy of CIFAR-10 (in ``quick`` a
small subset for a few epochs; in ``full`` the bundled 200-epoch recipes); ``cifar100`` (``full``
only) needs ``--data100``. Interrupted, the script resumes: a finished run (``run.json`` status
``finished``) is skipped, a partial one continues with ``allnc-train --resume``; the analysis is
redone each time (seconds). ``--dry-run`` prints the plan and every command without running any.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nctools.core import keys as K

REPO = Path(__file__).resolve().parents[1]
# An offline copy of CIFAR-10 as image-folder JPEGs in a .tar.gz (train/<class>/*.jpg, test/<class>/*.jpg).
TARBALL_ENV = "NCTOOLS_CIFAR10_TARBALL"
CACHE = REPO / ".cache" / "cifar10-jpeg"  # /.cache/ is git-ignored

# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------

ABLATIONS = {"allnc_no_hycon": "hycon.enabled=false", "allnc_no_p2p": "p2p.enabled=false",
             "allnc_no_gbbn": "gbbn.enabled=false"}
LABELS = {"ce_bal": "CE balanced", "ce_lt": "CE-LT", "la": "LA-LT", "etf": "ETF-LT", "etf_dr": "ETF+DR-LT",
          "bbn": "BBN-LT", "allnc_lt": "AllNC-LT", "allnc_no_hycon": "AllNC w/o HyCon", "allnc_no_p2p": "AllNC w/o P2P",
          "allnc_no_gbbn": "AllNC w/o GBBN"}
# The method column of the results CSV for each kind of run (ablations keep their kind).
METHOD = {"ce_bal": "ce", "ce_lt": "ce", "allnc_lt": "allnc"}
# The runs the paper's comparison figures show: the classifier-only fixes (LA, ETF) are its foil.
COMPARED = ("ce_bal", "ce_lt", "la", "etf", "allnc_lt")


@dataclass(eq=False)  # hashed by identity
class Family:
    """One dataset / model pairing: which configs, with which overrides, at which ratios."""

    name: str
    description: str
    ratios: list[float]
    ablation_ratio: float | None  # where the ablations run (None: no ablations)
    config: dict[str, str]  # kind (ce_bal, ce_lt, allnc_lt) -> bundled config name; {r} = the ratio
    common: list[str] = field(default_factory=list)  # overrides for every run
    balanced: list[str] = field(default_factory=list)  # extra overrides for the balanced run
    lt: list[str] = field(default_factory=list)  # extra overrides for the long-tailed runs
    set_ratio: bool = False  # pass data.imbalance_ratio=r (configs that do not carry the ratio in their name)
    real_data: bool = False
    baselines: tuple[str, ...] = ()  # further methods at ablation_ratio (la, etf, etf_dr, bbn: self.config[kind])
    seeds: dict[str, list[int]] = field(default_factory=dict)  # kind -> training seeds (default: default_seeds)
    default_seeds: list[int] = field(default_factory=lambda: [0])
    # training order (kinds, first = first); None: the longest runs first. An order puts the runs a claim needs
    # first, so that an interrupted profile has its most informative results already
    order: tuple[str, ...] | None = None
    seed_order: tuple[str, ...] | None = None  # the order of the later seeds' runs (None: ``order``)


def _ufm(epochs: int | None = None, n_max: int | None = None, ratios=(10, 50, 100)) -> Family:
    common = ["run.device=cpu", "run.progress=false"]
    common += [f"optim.epochs={epochs}"] if epochs else []
    common += [f"data.n_max={n_max}"] if n_max else []
    from allnc_train.data import lt_class_counts

    # The balanced run gets as many samples as the most imbalanced set (1236 for n_max 500, beta 100),
    # so that every run takes the same number of SGD steps: with 500 per class (5000 samples) the
    # weight decay, applied at every step to every free feature, shrinks the features to zero and
    # CE-balanced ends at chance accuracy (measured: 10 %).
    n_bal = round(sum(lt_class_counts(n_max or 500, 10, max(ratios))) / 10)
    return Family("ufm10", "unconstrained-features model (bundled ufm_lt_r100_* configs: 10 classes, 32-d free "
                  f"features, long-tailed {n_max or 500} down to {n_max or 500}/beta samples per class, balanced "
                  f"{n_bal} per class; SGD lr 0.5, weight decay 2e-3, {epochs or 200} epochs)",
                  list(ratios), max(ratios), {"ce_bal": "ufm_lt_r100_ce", "ce_lt": "ufm_lt_r100_ce",
                                              "allnc_lt": "ufm_lt_r100_allnc"},
                  common, balanced=["data.imbalance_ratio=1", f"data.n_max={n_bal}"], set_ratio=True)


def _cifar_small(n_max_lt: int, n_bal: int, epochs: int, test_per_class: int, ratios=(100,),
                 ablation_ratio=None) -> Family:
    common = ["data.num_workers=0", f"data.test_per_class={test_per_class}", f"optim.epochs={epochs}",
              "optim.batch_size=64", "optim.lr=0.05", "optim.warmup_epochs=1", "run.device=cpu",
              "run.dump_test=false", "run.progress=false"]
    return Family("cifar10", f"ResNet-32 on a CIFAR-10 subset of the JPEG copy (long-tailed: {n_max_lt} down to "
                  f"{n_max_lt}/beta images per class; balanced: {n_bal} per class; {epochs} epochs, batch 64, "
                  f"lr 0.05 cosine, CPU; test: first {test_per_class} test images per class)",
                  list(ratios), ablation_ratio,
                  {"ce_bal": "cifar10_balanced_ce", "ce_lt": "cifar10_lt_r{r}_ce", "allnc_lt": "cifar10_lt_r{r}_allnc"},
                  common, balanced=[f"data.n_max={n_bal}"], lt=[f"data.n_max={n_max_lt}"], real_data=True)


def _cifar_cpu(n_max: int = 500, epochs: int = 120) -> Family:
    """ResNet-32 to the terminal phase on a 2-core CPU: the LDAM subset at beta 100 with n_max 500 (1236
    images), every method, two seeds for CE-LT and AllNC, all 10,000 test images (evaluated every 10
    epochs and at the end: a pass over them costs about as much as an epoch of training)."""
    from allnc_train.data import lt_class_counts

    n_bal = round(sum(lt_class_counts(n_max, 10, 100)) / 10)  # the balanced run has the same N (124 per class)
    common = ["data.num_workers=0", f"optim.epochs={epochs}", "optim.batch_size=64", "optim.lr=0.05",
              "optim.warmup_epochs=5", "run.device=cpu", "run.dump_test=false", "run.progress=false",
              "run.eval_every=10", "run.dump_every=5", "run.dump_dtype=float16"]
    config = {"ce_bal": "cifar10_balanced_ce", "ce_lt": "cifar10_lt_r{r}_ce", "allnc_lt": "cifar10_lt_r{r}_allnc",
              **{k: f"cifar10_lt_r{{r}}_{k}" for k in ("la", "etf", "etf_dr", "bbn")}}
    return Family("cifar10", f"ResNet-32 on the LDAM CIFAR-10-LT subset of the JPEG copy (beta 100, {n_max} down to "
                  f"{n_max // 100} images per class, {sum(lt_class_counts(n_max, 10, 100))} in all; balanced: {n_bal} "
                  f"per class, the same N; {epochs} epochs, batch 64, lr 0.05 cosine, weight decay 2e-4, CPU; test: "
                  "all 10,000 test images)", [100], 100, config, common, balanced=[f"data.n_max={n_bal}"],
                  lt=[f"data.n_max={n_max}"], real_data=True, baselines=("la", "etf", "etf_dr", "bbn"),
                  seeds={"ce_lt": [0, 1], "allnc_lt": [0, 1]},
                  order=("ce_lt", "allnc_lt", "ce_bal", "etf", "la", "allnc_no_p2p", "etf_dr", "bbn", "allnc_no_hycon",
                         "allnc_no_gbbn"), seed_order=("ce_lt", "allnc_lt", "etf", "ce_bal", "allnc_no_gbbn",
                                                      "allnc_no_hycon", "allnc_no_p2p", "la", "etf_dr", "bbn"))


def _cifar_full(name: str) -> Family:
    return Family(name, f"ResNet-32 on {name.upper().replace('CIFAR', 'CIFAR-')} (bundled recipes: full data / LDAM "
                  "long-tailed subsets, 200 epochs, batch 128, lr 0.1 cosine, AMP on CUDA)",
                  [10, 50, 100], 100,
                  {"ce_bal": f"{name}_balanced_ce", "ce_lt": f"{name}_lt_r{{r}}_ce",
                   "allnc_lt": f"{name}_lt_r{{r}}_allnc"}, ["run.progress=false"], real_data=True)


def profile_families(profile: str, with_cifar: bool) -> list[Family]:
    if profile == "smoke":
        fams = [_ufm(epochs=4, n_max=100, ratios=(100,))]
        if with_cifar:
            fams.append(_cifar_small(n_max_lt=20, n_bal=4, epochs=1, test_per_class=4, ratios=(10,)))
        return fams
    if profile == "cpu":
        return [_cifar_cpu()]
    if profile == "quick":
        fams = [_ufm()]
        if with_cifar:
            fams.append(_cifar_small(n_max_lt=300, n_bal=100, epochs=24, test_per_class=50))
        return fams
    return [_cifar_full("cifar10"), _cifar_full("cifar100")]


@dataclass
class Run:
    family: Family
    kind: str  # ce_bal | ce_lt | allnc_lt | allnc_no_*
    ratio: float  # 1 for the balanced run
    config: str
    overrides: list[str]
    seed: int = 0

    @property
    def name(self) -> str:
        name = f"{self.family.name}/{self.kind}" + ("" if self.kind == "ce_bal" else f"_r{self.ratio:g}")
        return name + (f"_s{self.seed}" if self.seed else "")

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def plan_runs(families: list[Family], data_roots: dict[str, str | None]) -> list[Run]:
    runs = []
    for fam in families:
        root = [f"data.root={data_roots[fam.name]}"] if fam.real_data and data_roots.get(fam.name) else []

        def add(kind: str, r: float, config: str, overrides: list[str]) -> None:
            for seed in fam.seeds.get(kind, fam.default_seeds):
                runs.append(Run(fam, kind, r, config.format(r=f"{r:g}"), overrides + ([f"seed={seed}"] if seed else []),
                                seed))

        add("ce_bal", 1, fam.config["ce_bal"], fam.common + root + fam.balanced)
        for r in fam.ratios:
            ratio = [f"data.imbalance_ratio={r:g}"] if fam.set_ratio else []
            for kind in ("ce_lt", "allnc_lt"):
                add(kind, r, fam.config[kind], fam.common + root + fam.lt + ratio)
        if fam.ablation_ratio is not None:
            r = fam.ablation_ratio
            ratio = [f"data.imbalance_ratio={r:g}"] if fam.set_ratio else []
            for kind in fam.baselines:
                add(kind, r, fam.config[kind], fam.common + root + fam.lt + ratio)
            for kind, switch in ABLATIONS.items():
                add(kind, r, fam.config["allnc_lt"], fam.common + root + fam.lt + ratio + [switch])
    return runs


# ---------------------------------------------------------------------------------------------
# Training (resumable)
# ---------------------------------------------------------------------------------------------

def run_state(run_dir: Path) -> str:
    """finished | partial (has a checkpoint) | new."""
    try:
        if json.loads((run_dir / "run.json").read_text()).get("status") == "finished":
            return "finished"
    except (OSError, ValueError):
        pass
    if any((run_dir / "checkpoints").glob("epoch_*.pt")):
        return "partial"
    return "new"


def train_command(run: Run, run_dir: Path, state: str) -> list[str]:
    if state == "partial":
        return ["allnc-train", "--out", str(run_dir), "--resume"]
    return ["allnc-train", "--config", run.config, "--out", str(run_dir), "--set", *run.overrides]


def train_all(runs: list[Run], out: Path, jobs: int, log=print, timings: dict[str, float] | None = None,
              timing_file: Path | None = None) -> dict[str, float]:
    """Train the runs that are not finished; records {run name: wall seconds} of those trained now in
    ``timings`` (written to ``timing_file`` after each run, so an interruption keeps them)."""
    import threading

    lock = threading.Lock()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: measured much faster on a shared CPU
    (out / "logs").mkdir(parents=True, exist_ok=True)
    timings = {} if timings is None else timings

    plan_file = out / "plan.json"  # run name -> the command that made it: a changed recipe is retrained
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}

    def one(run: Run) -> None:
        run_dir = out / "runs" / run.name
        state = run_state(run_dir)
        wanted = shlex.join(train_command(run, run_dir, "new"))
        if state != "new" and plan.get(run.name) not in (None, wanted):
            log(f"stale  {run.name} (its recipe changed): training it again")
            shutil.rmtree(run_dir)
            state = "new"
        with lock:
            plan[run.name] = wanted
            plan_file.write_text(json.dumps(plan, indent=1))
        if state == "finished":
            log(f"skip   {run.name} (finished)")
            return
        if state == "new" and run_dir.exists():
            shutil.rmtree(run_dir)  # killed before its first checkpoint: start again
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = train_command(run, run_dir, state)
        log(f"{'resume' if state == 'partial' else 'train '} {run.name}")
        tic = time.perf_counter()
        log_path = out / "logs" / (run.name.replace("/", "__") + ".log")
        with open(log_path, "a") as fh:
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            raise RuntimeError(f"{run.name}: allnc-train exited with {proc.returncode}; see {log_path}")
        with lock:
            # A resumed run's process saw only its last part: no wall time is kept (the CSV then sums
            # the epochs' training times from run.json).
            if state == "partial":
                timings.pop(run.name, None)
            else:
                timings[run.name] = round(wall, 1)
            if timing_file is not None:
                timing_file.write_text(json.dumps(timings, indent=1))
        log(f"done   {run.name} ({wall:.1f} s)")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(one, r) for r in sorted(runs, key=_priority)]:
            future.result()
    return timings


def _priority(run: Run) -> tuple:
    """Sort key of the training order: the family's ``order`` (each seed in turn), else the longest first."""
    order = run.family.order if run.seed == 0 else run.family.seed_order or run.family.order
    if order is not None:
        return (run.seed, order.index(run.kind) if run.kind in order else len(order))
    return (0, -_cost(run))


def _cost(run: Run) -> float:
    """Rough relative cost, so that the longest runs start first."""
    method = 3.0 if run.kind.startswith("allnc") else 2.0 if run.kind == "bbn" else 1.0
    balanced = 2.0 if run.kind == "ce_bal" and run.family.name != "cifar10" else 1.0  # more samples than LT
    return method * balanced * (10.0 if run.family.real_data else 1.0)


# ---------------------------------------------------------------------------------------------
# Analysis: nctools track / compare, then the paper figures
# ---------------------------------------------------------------------------------------------

def nctools_cli(args: list[str]) -> str:
    """Run ``nctools ARGS`` in this process (the click command itself); returns its stdout."""
    import click

    from nctools.cli import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            cli.main(args=args, prog_name="nctools", standalone_mode=False)
        except click.ClickException as exc:  # bad input: one line, as the console script prints it
            raise RuntimeError(f"nctools {shlex.join(args)}: {exc.format_message()}") from None
    return buf.getvalue()


def _by_kind(runs: list[Run], fam: Family) -> dict[tuple, Run]:
    """(kind, ratio) -> the seed-0 run: the figures show one run per method."""
    return {(r.kind, r.ratio): r for r in runs if r.family is fam and r.seed == 0}


def analysis_commands(runs: list[Run], out: Path, light: bool = False) -> list[list[str]]:
    """The ``nctools`` command lines of the analysis. ``light`` (the smoke profile): ``track`` only
    for the AllNC-LT run at the largest ratio of each family (the others get their track.csv from
    :func:`light_track`), and ``compare`` only for the Fig. 2 group, since writing figure PDFs
    dominates the analysis time."""
    cmds = []
    for run in runs:
        if not light or (run.kind == "allnc_lt" and run.ratio == max(run.family.ratios)):
            cmds.append(["track", str(out / "runs" / run.name), "--out", str(out / "track" / run.name), "--quiet"])
    for fam in dict.fromkeys(r.family for r in runs):
        by = _by_kind(runs, fam)
        for r in fam.ratios:
            if light and r != max(fam.ratios):
                continue
            group = [by[(k, 1 if k == "ce_bal" else r)] for k in COMPARED if (k, 1 if k == "ce_bal" else r) in by]
            cmds.append(_compare(group, out, f"{fam.name}_r{r:g}"))
        if light:
            continue
        if len(fam.ratios) > 1:
            group = [by[(k, r)] for k in ("ce_lt", "allnc_lt") for r in fam.ratios]
            cmds.append(_compare(group, out, f"{fam.name}_vs_ratio", labels=[f"{x.label} r{x.ratio:g}" for x in group]))
        if fam.ablation_ratio is not None:
            r = fam.ablation_ratio
            group = [by[(k, r)] for k in ("ce_lt", "allnc_lt", *ABLATIONS)]
            cmds.append(_compare(group, out, f"{fam.name}_ablation"))
    return cmds


def light_track(runs: list[Run], out: Path) -> None:
    """track.csv (no figures) for every run that ``nctools track`` did not analyse, through
    :func:`nctools.report.tracking.track_run`, the function behind ``nctools track``."""
    from nctools.report.tracking import track_run

    for run in runs:
        target = out / "track" / run.name / "track.csv"
        if not target.exists() or target.stat().st_mtime < (out / "runs" / run.name / "run.json").stat().st_mtime:
            target.parent.mkdir(parents=True, exist_ok=True)
            track_run(out / "runs" / run.name, device="cpu").table.to_csv(target, index=False)


def _compare(group: list[Run], out: Path, name: str, labels=None) -> list[str]:
    labels = labels or [x.label for x in group]
    return ["compare", *[str(out / "runs" / x.name) for x in group], "--labels", ",".join(labels),
            "--out", str(out / "compare" / name), "--png", "--quiet"]


def read_track(out: Path, run: Run):
    import pandas as pd

    return pd.read_csv(out / "track" / run.name / "track.csv")


def _save(fig, path: Path) -> None:
    fig.savefig(path.with_suffix(".pdf"))
    fig.savefig(path.with_suffix(".png"), dpi=110)


def paper_figures(runs: list[Run], out: Path, primary2: Family, primary: Family) -> list[str]:
    """fig2 .. fig5b (PDF + PNG) into ``out``, one set per family (suffix ``_<family>``) and the
    un-suffixed names for the primary families (``primary2`` for Fig. 2, ``primary`` for the
    rest); returns the file names written."""
    from allnc_train.paper_figures import eta_curves, methods_by_ratio

    written = []
    families = list(dict.fromkeys(r.family for r in runs))
    for fam in families:
        by = _by_kind(runs, fam)
        suffixes = [f"_{fam.name}"] + ([""] if fam is primary else [])
        suffixes2 = [f"_{fam.name}"] + ([""] if fam is primary2 else [])
        # Fig. 2: compare's ICPA grid at the largest ratio (CE balanced | CE-LT | AllNC-LT).
        grid = out / "compare" / f"{fam.name}_r{max(fam.ratios):g}" / "icpa_grid"
        # Figs. 3 and 4: over epochs, one column per ratio.
        cos_panels, sd_panels = {}, {}
        for r in fam.ratios:
            for kind in COMPARED:
                run = by.get((kind, 1 if kind == "ce_bal" else r))
                if run is None:
                    continue
                t = read_track(out, run)
                x = t["epoch"].tolist()
                label = run.label
                cos_panels.setdefault(("cos-Std, centred means", r), {})[label] = (x, t[K.NC2_COS_STD_MEANS].tolist())
                cos_panels.setdefault(("cos-Std, classifier rows", r), {})[label] = \
                    (x, t[K.NC2_COS_STD_CLASSIFIER].tolist())
                sd_panels.setdefault(("self-duality ||W/|W| - M/|M|||^2", r), {})[label] = \
                    (x, t[K.NC3_SELF_DUALITY].tolist())
                sd_panels.setdefault(("mean cos(w_c, mu_c - mu_G)", r), {})[label] = (x, t[K.NC3_COS_MEAN].tolist())
        fig3 = methods_by_ratio(cos_panels, ["cos-Std, centred means", "cos-Std, classifier rows"], fam.ratios,
                                f"Fig. 3: Std of pairwise cosines ({fam.name})")
        fig4 = methods_by_ratio(sd_panels, ["self-duality ||W/|W| - M/|M|||^2", "mean cos(w_c, mu_c - mu_G)"],
                                fam.ratios, f"Fig. 4: self-duality ({fam.name})")
        allnc = by[("allnc_lt", max(fam.ratios))]
        record = json.loads((out / "runs" / allnc.name / "run.json").read_text())
        epochs = [e["epoch"] - 1 for e in record["epochs"] if e.get("eta") is not None]  # eta uses 0-based t
        etas = [e["eta"] for e in record["epochs"] if e.get("eta") is not None]
        total = record["config"]["optim"]["epochs"]
        gamma = record["config"]["gbbn"]["gamma"]
        logged = f"logged by {allnc.name} (gamma {gamma:g}), at t = epoch - 1"
        fig5 = eta_curves(total, [0.5, 1, 2, 4], {logged: (epochs, etas)})
        for s in suffixes2:
            for ext in (".pdf", ".png"):
                shutil.copyfile(grid.with_suffix(ext), out / f"fig2_icpa{s}{ext}")
            written.append(f"fig2_icpa{s}.pdf")
        for s in suffixes:
            _save(fig3, out / f"fig3_cos_std{s}")
            _save(fig4, out / f"fig4_self_duality{s}")
            _save(fig5, out / f"fig5b_eta{s}")
            written += [f"fig3_cos_std{s}.pdf", f"fig4_self_duality{s}.pdf", f"fig5b_eta{s}.pdf"]
    return written


# ---------------------------------------------------------------------------------------------
# results.md
# ---------------------------------------------------------------------------------------------

COLUMNS = [("cosStd(M)", K.NC2_COS_STD_MEANS), ("cosStd(W)", K.NC2_COS_STD_CLASSIFIER),
           ("NC3", K.NC3_SELF_DUALITY), ("NC1", K.NC1), ("tailICPA(M)", K.TAIL_ICPA_MEAN_DEG_MEANS),
           ("tailICPA(W)", K.TAIL_ICPA_MEAN_DEG_CLASSIFIER)]


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _row(out: Path, run: Run, timings: dict[str, float]) -> list[str]:
    t = read_track(out, run).iloc[-1]
    rec = json.loads((out / "runs" / run.name / "run.json").read_text())
    last = rec["epochs"][-1]
    acc = [_fmt(last.get("eval_top1"), 3), _fmt(last.get("eval_few"), 3), last.get("eval_split", "-")]
    return [run.name, run.label, _fmt(run.ratio), str(int(t["epoch"])), str(rec["data"]["num_train"]),
            *[_fmt(float(t[k])) if t[k] == t[k] else "-" for _, k in COLUMNS], *acc,
            _fmt(timings.get(run.name), 4)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_results_md(runs: list[Run], out: Path, timings: dict[str, float], args, commands: list[str],
                     figures: list[str]) -> Path:
    header = ["run", "method", "beta", "epoch", "n_train", *[c for c, _ in COLUMNS], "acc %", "tail acc %",
              "acc on", "train wall s"]
    parts = [f"# AllNC paper reproduction: profile `{args.profile}`", "",
             f"Command: `{' '.join(shlex.quote(a) for a in sys.argv)}`  ",
             f"Device: CPU ({os.cpu_count()} cores visible), OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', '1 (set per run)')}, {args.jobs} run(s) at a time.  ",
             f"Data: {args.data_used or 'none (unconstrained features only)'}", "",
             "Metrics are the last epoch of `nctools track` on the training-set dump (class-centred; tail = classes "
             "with fewer than 20 training images, '-' where the run has fewer than two such classes). Accuracy "
             "and tail (few-shot) accuracy come from the trainer's `run.json`: on the test subset for CIFAR, on the "
             "training samples for the unconstrained-features model (it has no test set). Wall time: `allnc-train` "
             "process, measured when the run was trained ('-': trained by an earlier invocation and no time kept).",
             ""]
    for fam in dict.fromkeys(r.family for r in runs):
        parts += [f"## {fam.name}: {fam.description}", "",
                  _table(header, [_row(out, r, timings) for r in runs if r.family is fam and r.kind in LABELS
                                  and not r.kind.startswith("allnc_no")]), ""]
        if fam.ablation_ratio is not None:
            order = ["ce_lt", "allnc_lt", *ABLATIONS]
            abl = sorted([r for r in runs if r.family is fam and r.ratio == fam.ablation_ratio and r.kind in order],
                         key=lambda r: order.index(r.kind))
            parts += [f"### Ablation, {fam.name}, beta = {fam.ablation_ratio:g}", "", _table(header, [
                _row(out, r, timings) for r in abl]), ""]
    parts += ["## Figures", "", *[f"- `{f}`" for f in figures], "",
              "## Commands run by this invocation", "", "```", *commands, "```", ""]
    path = out / "results.md"
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------------
# The results CSV: one row per real-image run, each backed by its final dump
# ---------------------------------------------------------------------------------------------

CSV_METRICS = ("nc1", "nc1_tail", "nc2_cos_std_means", "nc2_cos_std_classifier", "nc3_self_duality",
               "tail_icpa_mean_deg_means", "tail_icpa_mean_deg_classifier")
SUMMARY_KEY = {"nc1_tail": K.TAIL_NC1}  # CSV column -> nctools summary key, where the names differ
CSV_COLUMNS = ("method", "beta", "seed", "epochs", "n_train", "n_test", "train_acc", "test_acc", "many_acc",
               "medium_acc", "few_acc", *CSV_METRICS, "wall_s", "device", "dump")


def _fraction(percent) -> float | None:
    return None if percent is None else round(percent / 100.0, 6)


def csv_row(run: Run, out: Path, dumps: Path, timings: dict[str, float]) -> dict:
    """One CSV row: the run's final accuracies from run.json, and ``nctools analyze`` on its final
    training-set dump, copied into ``dumps`` (the copy is what the row's metrics describe).
    ``wall_s``: the ``allnc-train`` process's wall time when the run was trained in one go, else
    (resumed, or trained by an invocation that kept no time) the sum of its epochs' training times."""
    record = json.loads((out / "runs" / run.name / "run.json").read_text())
    last = record["epochs"][-1]
    if record.get("status") != "finished" or "dump" not in last:
        raise RuntimeError(f"{run.name} has not finished with a final dump")
    method = METHOD.get(run.kind, run.kind)
    beta = 1 if run.kind == "ce_bal" else run.ratio
    dump = dumps / f"{run.family.name}_{method}_b{beta:g}_s{run.seed}{Path(last['dump']).suffix}"
    dump.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "runs" / run.name / last["dump"], dump)
    report = json.loads(nctools_cli(["analyze", str(dump), "--out", str(out / "analyze" / dump.stem),
                                     "--format", "json", "--device", "cpu", "--quiet"]))
    summary = report["summary"]
    try:  # the repository-relative path when the dumps folder is inside the repository
        shown = dump.resolve().relative_to(REPO)
    except ValueError:
        shown = dump
    epochs = record["epochs"]
    return {"method": method, "beta": beta, "seed": run.seed, "epochs": last["epoch"],
            "n_train": record["data"]["num_train"], "n_test": record["data"].get("num_eval"),
            "train_acc": _fraction(last.get("train_top1")), "test_acc": _fraction(last.get("eval_top1")),
            "many_acc": _fraction(last.get("eval_many")), "medium_acc": _fraction(last.get("eval_medium")),
            "few_acc": _fraction(last.get("eval_few")), **{k: summary[SUMMARY_KEY.get(k, k)] for k in CSV_METRICS},
            "wall_s": timings.get(run.name, round(sum(e.get("train_time_s", 0.0) for e in epochs), 1)),
            "device": record["environment"]["device"], "dump": str(shown)}


def write_results_csv(runs: list[Run], out: Path, path: Path, dumps: Path, timings: dict[str, float]) -> Path:
    """The CSV of every finished real-image run (unfinished ones are left out and named on stderr)."""
    import csv

    rows = []
    for run in runs:
        if not run.family.real_data:
            continue
        if run_state(out / "runs" / run.name) != "finished":
            print(f"reproduce_paper: {run.name} has not finished; it has no row yet", file=sys.stderr)
            continue
        rows.append(csv_row(run, out, dumps, timings))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def cifar10_root(given: str | None, tarball: str | None, dry_run: bool) -> str:
    """The image-folder root of CIFAR-10: ``--data`` as given, else ``--tarball`` extracted into .cache/."""
    if given:
        return given
    if dry_run:
        return str(CACHE)
    def find(base: Path) -> Path | None:
        return next((p for p in [base, *base.iterdir()] if (p / "train").is_dir()), None) if base.is_dir() else None
    root = find(CACHE)
    if root is None or not (CACHE / ".complete").exists():
        if not tarball or not Path(tarball).is_file():
            sys.exit(f"reproduce_paper: no --data and no CIFAR-10 tarball at {tarball or '(none given)'}; pass --data "
                     f"DIR (train/<class>/*.jpg, test/<class>/*.jpg) or --tarball FILE (or set {TARBALL_ENV})")
        shutil.rmtree(CACHE, ignore_errors=True)
        CACHE.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(CACHE, filter="data")
        (CACHE / ".complete").touch()
        root = find(CACHE)
    return str(root)


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--profile", choices=("smoke", "quick", "cpu", "full"), default="quick")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--csv", type=Path, help="write one row per real-image run here [OUT/cifar10_lt.csv]")
    p.add_argument("--dumps", type=Path, help="copy each run's final dump here, for the CSV [OUT/dumps]")
    p.add_argument("--data", help="extracted CIFAR-10 image folder (default: extract --tarball into .cache/)")
    p.add_argument("--tarball", default=os.environ.get(TARBALL_ENV),
                   help=f"CIFAR-10 as image-folder JPEGs in a .tar.gz, used without --data [${TARBALL_ENV}]")
    p.add_argument("--data100", help="CIFAR-100 image folder (full profile)")
    p.add_argument("--no-cifar", action="store_true", help="smoke/quick: unconstrained features only")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time [2]")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="training seeds of every run, e.g. 0,1 (default: the profile's; cpu: 0 and 1 for CE-LT "
                        "and AllNC, 0 for the rest); the figures show seed 0")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and commands; run nothing")
    p.add_argument("--skip-train", action="store_true", help="analyse what is there; train nothing")
    args = p.parse_args(argv)

    tic = time.perf_counter()
    families = profile_families(args.profile, with_cifar=not args.no_cifar)
    if args.seeds:
        if 0 not in args.seeds:
            sys.exit("reproduce_paper: --seeds must include 0: the figures show the seed-0 runs")
        for fam in families:
            fam.seeds, fam.default_seeds = {}, args.seeds
    roots: dict[str, str | None] = {}
    if any(f.name == "cifar10" for f in families):
        roots["cifar10"] = cifar10_root(args.data, args.tarball, args.dry_run)
    if any(f.name == "cifar100" for f in families):
        if not args.data100 and not args.dry_run:
            sys.exit("reproduce_paper: the full profile needs --data100 (a CIFAR-100 image folder); "
                     "no copy is bundled")
        roots["cifar100"] = args.data100 or "<CIFAR-100 folder>"
    args.data_used = ", ".join(f"{k}: {v}" for k, v in roots.items())
    runs = plan_runs(families, roots)
    out = args.out
    # Fig. 2 (ICPA, CE balanced vs CE-LT) from real images when there are any; Figs. 3-5b from the
    # family with the most imbalance ratios (real images on a tie).
    primary2 = next((f for f in families if f.real_data), families[0])
    primary = max(families, key=lambda f: (len(f.ratios), f.real_data))

    if args.dry_run:
        print(f"profile {args.profile}: {len(runs)} runs into {out}/runs/ ({args.jobs} at a time)")
        for run in runs:
            run_dir = out / "runs" / run.name
            state = run_state(run_dir)
            print(f"[{state:8s}] {run.name:34s} {shlex.join(train_command(run, run_dir, state))}")
        print("then:")
        for cmd in analysis_commands(runs, out, light=args.profile == "smoke"):
            print("  nctools " + shlex.join(cmd))
        print(f"  -> {out}/fig2_icpa.pdf fig3_cos_std.pdf fig4_self_duality.pdf fig5b_eta.pdf results.md "
              f"(Fig. 2 from {primary2.name}, Figs. 3-5b from {primary.name})")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    timing_file = out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    if not args.skip_train:
        t0 = time.perf_counter()
        train_all(runs, out, args.jobs, log, timings, timing_file)
        timings["_training_wall_s_last_invocation"] = round(time.perf_counter() - t0, 1)
        timing_file.write_text(json.dumps(timings, indent=1))
    commands = [shlex.join(train_command(r, out / "runs" / r.name, "new")) for r in runs]
    t0 = time.perf_counter()
    light = args.profile == "smoke"
    for cmd in analysis_commands(runs, out, light):
        nctools_cli(cmd)
        commands.append("nctools " + shlex.join(cmd))
    if light:
        light_track(runs, out)
    figures = paper_figures(runs, out, primary2, primary)
    timings["_analysis_wall_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    timing_file.write_text(json.dumps(timings, indent=1))
    path = write_results_md(runs, out, timings, args, commands, figures)
    if any(r.family.real_data for r in runs):
        csv_path = write_results_csv(runs, out, args.csv or out / "cifar10_lt.csv", args.dumps or out / "dumps",
                                     timings)
        log(f"wrote {csv_path}")
    log(f"wrote {path} and {len(figures)} figures into {out}/ in {time.perf_counter() - tic:.0f} s "
        f"(analysis {timings['_analysis_wall_s_last_invocation']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
