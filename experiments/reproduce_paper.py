"""Reproduce the AllNC paper's Figs. 2, 3, 4 and 5b (and an ablation table) from our own runs.

    python -m experiments.reproduce_paper --profile quick --out results/      # 2-core CPU, ~15 min
    python -m experiments.reproduce_paper --profile cpu --out runs/study \\
        --csv docs/results/cifar10_lt.csv --dumps docs/results/dumps       # the evidence study, ~20 h, resumable
    python -m experiments.reproduce_paper --profile cpu ... --only 'cifar10/*_s1'   # a part of it
    python -m experiments.reproduce_paper --profile full --out results/ --data data/cifar10 \\
        --data100 data/cifar100 --dry-run                                   # GPU recipes: the plan
    python -m experiments.reproduce_paper --profile smoke --out /tmp/smoke    # CI size, < 1 min
    python -m experiments.reproduce_paper --profile cpu100 --device cuda ...  # the CIFAR-100 plan on a GPU

(from the repository root).

Three steps, each through the project's own entry points:

1. train every run a figure needs (:mod:`experiments.paper_runs`) with ``allnc-train``, through
   :mod:`experiments.launcher` (one process per run, ``--jobs`` at a time, ``OMP_NUM_THREADS=1``
   unless set): CE on balanced data, CE and AllNC on long-tailed data at each imbalance ratio, and
   the AllNC ablations (no HyCon / no P2P / no GBBN) at the largest;
2. read them (:mod:`experiments.paper_analysis`) with ``nctools track`` (every run:
   ``OUT/track/<run>/track.csv``) and ``nctools compare`` (``OUT/compare/<family>_r<beta>/``:
   CE-balanced vs CE-LT vs AllNC-LT; ``..._vs_ratio``; ``..._ablation``);
3. write ``fig2_icpa.pdf`` (compare's ICPA grid), ``fig3_cos_std.pdf`` and ``fig4_self_duality.pdf``
   (:func:`experiments.paper_figures.methods_by_ratio` on the track tables), ``fig5b_eta.pdf``
   (:func:`experiments.paper_figures.eta_curves`, with the eta the AllNC run logged), PNG twins, and
   ``results.md`` (:mod:`experiments.paper_tables`: a last-epoch table per family, the ablation
   table, every command and wall time).

The ``cpu`` profile is the evidence study (docs/RESULTS.md): ResNet-32 on real CIFAR-10-LT images to
the terminal phase on a 2-core CPU (beta = 100 on a smaller LDAM subset, n_max = 500: 1236 images;
balanced CE on the same N, 124 per class; weight decay 5e-3, chosen on a validation split by
:mod:`experiments.regime_search`): balanced CE, CE-LT, LA, ETF, AllNC, AllNC without each component
and the four controls, seeds 0, 1 and 2 (each seed's runs after all of the previous seed's), tested
on all 10,000 test images. ``cpu100`` is its CIFAR-100-LT part, ``cpu_v1`` the first study's plan.
It writes one row per run into ``--csv`` (accuracies as fractions, the metrics ``nctools analyze``
gives on the run's final training-set and test-set dumps) and copies both dumps (float16) into
``--dumps``.

Families: ``ufm10`` is the unconstrained-features model (10 classes, 500 ... 500/beta free 32-d
features, seconds per run); ``cifar10`` is ResNet-32 on the JPEG copy of CIFAR-10 (in ``quick`` a
small subset for a few epochs; in ``full`` the bundled 200-epoch recipes); ``cifar100`` (``full``
only) needs ``--data100``. Interrupted, the script resumes: a finished run (``run.json`` status
``finished``) is skipped, a partial one continues with ``allnc-train --resume``; the analysis is
redone each time (seconds). ``--dry-run`` prints the plan and every command without running any.
``--device cuda`` trains the same plan on a GPU (float32: ``run.amp=false``; the rows' ``device`` and
``recipe`` say where they were trained; ``tools/device_study.sh`` runs the CIFAR-100 plan so on a lent GPU),
and ``--set KEY=VALUE ...`` adds overrides to every run.

The run folders under ``OUT`` are scratch; the results CSV and its dumps are the study's record. A
run whose row is already in the CSV (its dumps on disk) is not trained again, and its row is kept
as it is when the CSV is rewritten (delete the row to train the run again). ``--only`` trains a
part of the plan (e.g. ``--only 'cifar10/*_s1'``), for a study spread over several sittings. The
track/compare analysis and the figures need every run's folder: they are made only when every
planned run has finished in ``OUT``; otherwise only the CSV is rewritten.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import shutil
import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from experiments.launcher import Job, Launch, launch, resume_command, run_state
from experiments.launcher import train_command as allnc_train_command
from experiments.paper_analysis import analysis_commands, light_track, nctools_cli, write_figures
from experiments.paper_runs import Run, plan_runs, priority, profile_families
from experiments.paper_tables import read_rows, recorded_rows, row_key, write_results_csv, write_results_md
from nctools.errors import one_line
from nctools.io.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
# Offline copies of CIFAR-10 / CIFAR-100 as image-folder JPEGs in a .tar.gz (train/<class>/*.jpg, test/<class>/*.jpg).
TARBALL_ENV = {"cifar10": "NCTOOLS_CIFAR10_TARBALL", "cifar100": "NCTOOLS_CIFAR100_TARBALL"}


CACHE_ENV = "NCTOOLS_DATA_CACHE"  # where the tarballs are extracted, instead of the checkout's .cache/


def cache_folder(name: str) -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO / ".cache") / f"{name}-jpeg"  # /.cache/ is git-ignored


# ---------------------------------------------------------------------------------------------
# Training (resumable, through experiments.launcher)
# ---------------------------------------------------------------------------------------------

def train_command(run: Run, run_dir: Path, state: str) -> list[str]:
    """The ``allnc-train`` command of ``run``: the one that starts it, or for a ``partial`` run the one
    that resumes it."""
    if state == "partial":
        return resume_command(run_dir)
    return allnc_train_command(run.config, run_dir, run.overrides)


def log_path(out: Path, run: Run) -> Path:
    return out / "logs" / (run.name.replace("/", "__") + ".log")


def train_all(runs: list[Run], out: Path, jobs: int, log=print, timings: dict[str, float] | None = None,
              timing_file: Path | None = None, on_finished: Callable[[str], None] | None = None,
              seconds: float | None = None, expected: dict[str, float] | None = None) -> Launch:
    """Train the runs that are not finished, ``jobs`` at a time, in :func:`~experiments.paper_runs.priority`
    order; records {run name: wall seconds} of those trained now in ``timings`` (written atomically to
    ``timing_file`` after each run, so an interruption keeps them). ``OUT/plan.json`` holds each run's
    command: a run whose recipe changed is trained again. Returns the launch's outcomes (and whether a
    SIGTERM stopped it); :func:`failure` says which run failed, if one did. ``on_finished(name)`` is
    called as each run finishes (to record its row while the others train). ``seconds``: a deadline, at
    which the runs still going are cut (resumable); ``expected``: {run name: seconds it is expected to
    take}, so that a run that would overrun the deadline gives its turn to the next."""
    timings = {} if timings is None else timings
    ordered = sorted(runs, key=priority)

    def ended(name: str, outcome) -> None:
        if outcome.state != "finished":
            return
        # A resumed run's process saw only its last part: no wall time is kept (the CSV then sums
        # the epochs' training times from run.json).
        if outcome.resumed:
            timings.pop(name, None)
        else:
            timings[name] = round(outcome.process_s, 1)
        if timing_file is not None:
            atomic_write_json(timing_file, timings)
        if on_finished is not None:
            on_finished(name)

    job_list = [Job(r.name, out / "runs" / r.name, train_command(r, out / "runs" / r.name, "new"),
                    log=log_path(out, r), expected_s=(expected or {}).get(r.name)) for r in ordered]
    # SIGTERM (kill, a job scheduler) cuts the runs going, which keep their checkpoints for a resume, instead
    # of leaving them training behind a dead parent; the CSV is then written for the runs that finished.
    return launch(job_list, jobs, plan=out / "plan.json", log=log, on_end=ended, seconds=seconds,
                  sigterm="reproduce_paper was sent SIGTERM")


def expected_seconds(runs: list[Run], csv_of: dict) -> dict[str, float]:
    """{run name: the median ``wall_s`` its results CSV records for the same method and beta}: the time a
    run is expected to take (runs of a method without a row have no estimate).

    The median, not the longest: a row's ``wall_s`` depends on how many trainings shared the CPU with it,
    and one row trained beside two others would otherwise make every later run of its method look too
    long to fit."""
    recorded: dict[tuple, list[float]] = {}  # (family, method, beta) -> every wall_s recorded
    for fam, path in csv_of.items():
        for row in read_rows(path):
            if row.get("wall_s"):
                recorded.setdefault((fam, row["method"], float(row["beta"])), []).append(float(row["wall_s"]))
    expected = {}
    for run in runs:
        method, beta, _ = row_key(run)
        if (run.family, method, beta) in recorded:
            expected[run.name] = statistics.median(recorded[(run.family, method, beta)])
    return expected


def failure(runs: list[Run], out: Path, done: Launch) -> str | None:
    """One sentence naming the first of ``runs`` that failed in ``done`` (None: none failed)."""
    for run in sorted(runs, key=priority):
        outcome = done.outcomes.get(run.name)
        if outcome is not None and outcome.state == "failed":
            why = f"exited with {outcome.exit}" if outcome.exit is not None else f"did not start: {outcome.why}"
            return f"{run.name}: allnc-train {why}; see {log_path(out, run)}"
    return None


def trained_now(done: Launch) -> set[str]:
    """The runs that ``done`` trained to the end (not those finished before it)."""
    return {name for name, o in done.outcomes.items() if o.state == "finished" and o.process_s is not None}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def cifar_root(name: str, given: str | None, tarball: str | None, dry_run: bool) -> str:
    """The image-folder root of ``name`` (cifar10, cifar100): as given, else its tarball extracted into .cache/."""
    if given:
        return given
    cache = cache_folder(name)
    if dry_run:
        return str(cache)

    def find(base: Path) -> Path | None:
        return next((p for p in [base, *base.iterdir()] if (p / "train").is_dir()), None) if base.is_dir() else None
    root = find(cache)
    if root is None or not (cache / ".complete").exists():
        if not tarball or not Path(tarball).is_file():
            flags = "--data/--tarball" if name == "cifar10" else "--data100/--tarball100"
            sys.exit(f"reproduce_paper: no {name} image folder and no tarball at {tarball or '(none given)'}; pass "
                     f"{flags} (a folder train/<class>/*.jpg, test/<class>/*.jpg, or its .tar.gz; or set "
                     f"{TARBALL_ENV[name]})")
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(cache, filter="data")
        (cache / ".complete").touch()
        root = find(cache)
    return str(root)


def on_device(overrides: list[str], device: str) -> list[str]:
    """A run's overrides with ``run.device`` set to ``device``; on CUDA also ``run.amp=false`` (the trainer's
    autocast is on by default there), so that the GPU row differs from the CPU recipe in the device alone."""
    if device == "cpu":
        return overrides
    return [o for o in overrides if not o.startswith("run.device=")] + [f"run.device={device}", "run.amp=false"]


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--profile", choices=("smoke", "quick", "cpu", "cpu100", "cpu_v1", "full"), default="quick")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--csv", type=Path, help="write one row per real-image run here [OUT/<family>_lt.csv]")
    p.add_argument("--dumps", type=Path, help="copy each run's final dump here, for the CSV [OUT/dumps]")
    p.add_argument("--data", help=f"extracted CIFAR-10 image folder (default: extract --tarball into .cache/, or "
                                  f"${CACHE_ENV})")
    p.add_argument("--tarball", default=os.environ.get(TARBALL_ENV["cifar10"]),
                   help=f"CIFAR-10 as image-folder JPEGs in a .tar.gz, used without --data [${TARBALL_ENV['cifar10']}]")
    p.add_argument("--data100", help="CIFAR-100 image folder (cpu100 and full profiles)")
    p.add_argument("--tarball100", default=os.environ.get(TARBALL_ENV["cifar100"]),
                   help=f"CIFAR-100 as image-folder JPEGs in a .tar.gz, used without --data100 "
                        f"[${TARBALL_ENV['cifar100']}]")
    p.add_argument("--no-cifar", action="store_true", help="smoke/quick: unconstrained features only")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time [2]")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="training seeds of every run, e.g. 0,1 (default: the profile's; cpu: 0 and 1 for CE-LT "
                        "and AllNC, 0 for the rest); the figures show seed 0")
    p.add_argument("--only", type=lambda v: [x for x in v.split(",") if x],
                   help="train only the runs whose names match one of these comma-separated patterns, "
                        "e.g. 'cifar10/ce_lt_r100_s1,cifar10/la_*' (see --dry-run for the names)")
    p.add_argument("--hours", type=float,
                   help="train for at most this long: a run the median wall_s of its method's rows says would not "
                        "finish in the time left is skipped for a shorter one, and the runs still going at the end "
                        "are stopped (resumable)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where every run trains [cpu]; cuda also sets run.amp=false, so that a run differs from "
                        "its CPU recipe in the device alone (float32 on both); the row's recipe says so")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="further overrides for every run, after the profile's (they win); the rows' recipes "
                        "record them, so rows made with them are not rows of the profile's plan")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and commands; run nothing")
    p.add_argument("--skip-train", action="store_true",
                   help="train nothing: remake the CSV rows of the runs finished in OUT (and the figures when every "
                        "planned run is there)")
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
        roots["cifar10"] = cifar_root("cifar10", args.data, args.tarball, args.dry_run)
    if any(f.name == "cifar100" for f in families):
        roots["cifar100"] = cifar_root("cifar100", args.data100, args.tarball100, args.dry_run)
    args.data_used = ", ".join(f"{k}: {v}" for k, v in roots.items())
    runs = plan_runs(families, roots)
    for run in runs:
        run.overrides = on_device(run.overrides, args.device) + args.extra
    out = args.out
    real = [fam for fam in families if fam.real_data]
    if args.csv and len(real) > 1:
        sys.exit(f"reproduce_paper: --csv names one file, and profile {args.profile} has {len(real)} datasets "
                 f"({', '.join(f.name for f in real)}); leave it out to write OUT/<dataset>_lt.csv for each")
    plan = runs  # the whole plan: the CSV keeps its order whatever --only picks
    if args.only:
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.name, pat) for pat in args.only)]
        if not runs:
            sys.exit(f"reproduce_paper: no run of profile {args.profile} matches --only {','.join(args.only)}; "
                     "--dry-run lists the names")
    csv_of = {fam: args.csv or out / f"{fam.name}_lt.csv" for fam in real}
    # A run whose row (same recipe, dumps on disk) the CSV holds is done, whatever its scratch folder says.
    recorded: set[str] = set()
    for fam, path in csv_of.items():
        recorded |= {name for name in recorded_rows(path, [r for r in runs if r.family is fam])
                     if run_state(out / "runs" / name) != "finished"}
    # Fig. 2 (ICPA, CE balanced vs CE-LT) from real images when there are any; Figs. 3-5b from the
    # family with the most imbalance ratios (real images on a tie).
    primary2 = next((f for f in families if f.real_data), families[0])
    primary = max(families, key=lambda f: (len(f.ratios), f.real_data))

    if args.dry_run:
        print(f"profile {args.profile}: {len(runs)} runs into {out}/runs/ ({args.jobs} at a time), "
              "in the order they train")
        for run in sorted(runs, key=priority):
            run_dir = out / "runs" / run.name
            state = "recorded" if run.name in recorded else run_state(run_dir)
            what = "(its row is in the CSV: not trained)" if state == "recorded" else \
                shlex.join(train_command(run, run_dir, state))
            print(f"[{state:8s}] {run.name:34s} {what}")
        print("then: " + ", ".join(str(p) for p in csv_of.values()))
        if recorded or args.only:
            print("and no figures: they need every planned run's folder")
            return 0
        for cmd in analysis_commands(runs, out, light=args.profile == "smoke"):
            print("  nctools " + shlex.join(cmd))
        print(f"  -> {out}/fig2_icpa.pdf fig3_cos_std.pdf fig4_self_duality.pdf fig5b_eta.pdf results.md "
              f"(Fig. 2 from {primary2.name}, Figs. 3-5b from {primary.name})")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    timing_file = out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    done, renew = None, None  # renew: the runs whose rows are made again (None: every run finished in OUT)
    if not args.skip_train:
        t0 = time.perf_counter()
        if recorded:
            log(f"{len(recorded)} run(s) already have their row in the CSV; not trained again")
        def record(name: str) -> None:  # the row now: a sitting cut short keeps every run it finished
            fam = next(r.family for r in runs if r.name == name)
            if fam in csv_of:
                try:
                    write_results_csv([r for r in plan if r.family is fam], out, csv_of[fam],
                                      args.dumps or out / "dumps", timings, renew={name},
                                      count_missing=False)
                    log(f"row    {name} -> {csv_of[fam]}")
                except Exception as err:  # noqa: BLE001 - the training goes on; the end of the sitting tries again
                    log(f"no row yet for {name} ({one_line(err)}); the end of the sitting tries again")

        todo = [r for r in runs if r.name not in recorded]
        done = train_all(todo, out, args.jobs, log, timings, timing_file, on_finished=record,
                         seconds=None if args.hours is None else args.hours * 3600,
                         expected=expected_seconds(todo, csv_of) if args.hours is not None else None)
        renew = trained_now(done)
        timings["_training_wall_s_last_invocation"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(timing_file, timings)
    # The rows first, whatever happened: a failed or stopped sitting still records the runs it finished.
    for fam, path in csv_of.items():
        csv_path = write_results_csv([r for r in plan if r.family is fam], out, path, args.dumps or out / "dumps",
                                     timings, renew=renew)
        log(f"wrote {csv_path}" if csv_path else f"no run of {path} has finished: not written")
    if done is not None and (failed := failure(runs, out, done)):
        print(f"reproduce_paper: {failed}", file=sys.stderr)
        return 1
    if done is not None and done.stopped:
        log("stopped by SIGTERM: the rows of the runs that finished are written; run the same command to resume")
        return 143  # 128 + SIGTERM, as a shell reports a process it terminated
    if args.only or recorded:
        log(f"no figures or results.md: they need every planned run's folder in {out}/runs, and "
            f"{'--only trains part of the plan' if args.only else f'{len(recorded)} run(s) are in the CSV only'}")
        return 0
    missing = [r.name for r in runs if run_state(out / "runs" / r.name) != "finished"]
    if missing:
        log(f"no figures or results.md: {len(missing)} planned run(s) have not finished in {out}/runs "
            f"(e.g. {missing[0]})")
        return 0
    commands = [shlex.join(train_command(r, out / "runs" / r.name, "new")) for r in runs]
    t0 = time.perf_counter()
    light = args.profile == "smoke"
    for cmd in analysis_commands(runs, out, light):
        nctools_cli(cmd)
        commands.append("nctools " + shlex.join(cmd))
    if light:
        light_track(runs, out)
    figures = write_figures(runs, out, primary2, primary)
    timings["_analysis_wall_s_last_invocation"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(timing_file, timings)
    path = write_results_md(runs, out, timings, args, commands, figures)
    log(f"wrote {path} and {len(figures)} figures into {out}/ in {time.perf_counter() - tic:.0f} s "
        f"(analysis {timings['_analysis_wall_s_last_invocation']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
