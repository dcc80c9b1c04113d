"""The training runs of ``tools/device_check.sh``: start them under a deadline, track them, tabulate, pack.

    python -m experiments.gpu_runs train --out OUT/runs --seconds 280 --parallel 3 --configs A B C \\
        --set data.root=CIFAR run.device=cuda ...
    python -m experiments.gpu_runs track --out OUT/runs --seconds 30 --device cuda
    python -m experiments.gpu_runs results --out OUT/runs --csv OUT/results.csv
    python -m experiments.gpu_runs pack --out OUT [--prune]

``train`` runs ``allnc-train --config NAME --out OUT/runs/NAME --set ...`` for each config in the order
given, ``--parallel`` at a time, through :mod:`experiments.launcher`: each in its own process group (its
DataLoader workers with it). No run starts with less than ``--min-start`` seconds left; when ``--seconds``
are up the runs still going get SIGTERM, then SIGKILL after ``--grace`` seconds. A killed run keeps its
last checkpoint (``allnc-train --out OUT/runs/NAME --resume`` continues it, and so does ``train`` again on
the same OUT, which also skips the runs that finished); a finished one loses its checkpoints and keeps
run.json and its dumps. Each run's outcome (finished, cut, failed or skipped, and why), exit status,
process seconds and the most runs that shared the machine with it go to ``OUT/runs/status.json``.

``track`` runs ``nctools track`` on each run with dumps (into ``OUT/runs/NAME/track``); ``results``
writes results.csv (final metrics, wall times, the targets) and prints the lines for summary.txt;
``pack`` puts everything under OUT into ``device-check.tar.gz`` (split into 15 MiB parts when larger),
leaving out each run's dumps but the last (``track.csv`` holds their numbers), and with ``--prune``
deletes the rest of OUT but its top files, because the lending tool brings back at most 8 files.
Exit status: 1 when a run, a track or the packing failed (a cut or skipped run is no failure), else 0;
124 when SIGTERM stopped ``train`` before every run had its turn.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from experiments.launcher import ALLNC_TRAIN_MODULE, Job, launch, read_record, start, stop, train_command
from nctools.io.layout import DUMP_FOLDERS, epoch_files

# Wall-time targets for the 200-epoch runs on one H200 (the trainer's speed goals).
TARGETS_S = {"cifar10_lt_r100_ce": 90.0, "cifar10_lt_r100_allnc": 240.0}
NCTOOLS = [sys.executable, "-c", "import sys; from nctools.cli import main; sys.exit(main())"]
TOP_FILES = ("summary.txt", "card.txt", "results.csv", "bench_train.jsonl", "bench_core.txt")
ARCHIVE = "device-check.tar.gz"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _dumps(run_dir: Path) -> list[Path]:
    """The run's training-set dumps, in epoch order."""
    return epoch_files((run_dir / DUMP_FOLDERS["train"]).glob("epoch_*"))


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def train(args) -> int:
    began = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first, rest = args.configs[:args.max_runs], args.configs[args.max_runs:]
    jobs = [Job(name, out / name, train_command(name, out / name, args.set, ALLNC_TRAIN_MODULE),
                log=out / f"{name}.log") for name in first]
    log = lambda m: print(f"{time.monotonic() - began:6.0f} s  {m}", flush=True)  # noqa: E731
    done = launch(jobs, args.parallel, seconds=args.seconds, min_start=args.min_start, grace=args.grace,
                  threads=args.threads, drop_checkpoints=True, poll=args.poll, log=log,
                  sigterm="the step's own time limit stopped gpu_runs.py")
    status = {name: done.outcomes[name].as_dict() for name in first}
    status.update({name: {"state": "skipped", "why": f"not among the first {args.max_runs} (--max-runs)"}
                   for name in rest})
    (out / "status.json").write_text(json.dumps(status, indent=1))
    if done.stopped:
        return 124
    return int(any(s["state"] == "failed" for s in status.values()))


# ---------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------

def track(args) -> int:
    deadline = time.monotonic() + args.seconds
    out = Path(args.out)
    status = read_json(out / "status.json") or {}
    todo = [name for name in status if _dumps(out / name)]
    for name in status:
        if name not in todo:
            status[name]["track"] = "no dumps"
    running: dict[str, subprocess.Popen] = {}
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            cmd = [*NCTOOLS, "track", str(out / name), "--out", str(out / name / "track"), "--quiet", "--skip-bad",
                   "--device", args.device]
            running[name] = start(cmd, out / f"{name}.track.log")
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                status[name]["track"] = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                del running[name]
        if time.monotonic() > deadline:
            stop(list(running.values()), 2.0)
            for name in running:
                status[name]["track"] = "cut at the time limit"
            for name in todo:
                status[name]["track"] = "not run: out of time"
            break
        time.sleep(0.2)
    for name, entry in status.items():
        print(f"{name}: track {entry.get('track')}")
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return int(any(str(s.get("track", "")).startswith(("failed", "cut", "not run")) for s in status.values()))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

COLUMNS = ["run", "method", "state", "epoch", "epochs", "eval_epoch", "eval_top1", "eval_many", "eval_medium",
           "eval_few", "train_time_s", "process_s", "max_parallel", "target_s", "device", "track", "why"]


def results(args) -> int:
    out = Path(args.out)
    status = read_json(out / "status.json")
    if status is None:
        print(f"no runs: {out / 'status.json'} is missing (the runs step did not run)")
        return 0
    rows = []
    for name, entry in status.items():
        record = read_record(out / name) or {}
        epochs = record.get("epochs", [])
        evaluated = [e for e in epochs if e.get("eval_top1") is not None]
        last = evaluated[-1] if evaluated else {}
        total = record.get("config", {}).get("optim", {}).get("epochs")
        device = record.get("environment", {}).get("device", "")
        row = {"run": name, "method": record.get("method", ""), "state": entry["state"],
               "epoch": epochs[-1]["epoch"] if epochs else 0, "epochs": total, "eval_epoch": last.get("epoch"),
               **{k: last.get(k) for k in ("eval_top1", "eval_many", "eval_medium", "eval_few")},
               "train_time_s": round(sum(e.get("train_time_s", 0.0) for e in epochs), 1) if epochs else None,
               "process_s": entry.get("process_s"), "max_parallel": entry.get("max_parallel"),
               "target_s": TARGETS_S.get(name) if total == 200 and device.startswith("cuda") else None,
               "device": device, "track": entry.get("track", ""), "why": entry.get("why", "")}
        rows.append(row)
        print(summary_line(row))
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return 0


def summary_line(row: dict) -> str:
    name, state = row["run"], row["state"]
    if state == "skipped":
        return f"{name}: skipped, {row['why']}"
    text = f"{name}: {state} at epoch {row['epoch']}/{row['epochs'] or '?'}"
    if state == "cut":
        text += f" ({row['why']}; resume: allnc-train --out runs/{name} --resume)"
    elif state == "failed":
        text += f" ({row['why']})"
    if row["eval_top1"] is not None:
        text += (f"; eval top1 {row['eval_top1']:.2f} (many {_pct(row['eval_many'])}, medium "
                 f"{_pct(row['eval_medium'])}, few {_pct(row['eval_few'])}) at epoch {row['eval_epoch']}")
    if row["process_s"] is not None:
        text += f"; process {row['process_s']:.0f} s, training {row['train_time_s'] or 0:.0f} s"
        text += ", alone" if row["max_parallel"] == 1 else f", with up to {row['max_parallel'] - 1} other run(s)"
    if row["target_s"] is not None and row["process_s"] is not None and state == "finished":
        verdict = lambda s: "met" if s <= row["target_s"] else "missed"  # noqa: E731
        text += (f"; target {row['target_s']:.0f} s: {verdict(row['process_s'])} by process time, "
                 f"{verdict(row['train_time_s'] or 0)} by training time")
    elif row["target_s"] is not None and row["epoch"] and row["process_s"] is not None:
        projected = row["process_s"] * row["epochs"] / row["epoch"]  # startup included: an upper bound
        verdict = "missed" if row["process_s"] > row["target_s"] else "not judged, cut first"
        text += f"; target {row['target_s']:.0f} s: {verdict} (about {projected:.0f} s projected for all epochs)"
    if row["track"]:
        text += f"; track {row['track']}"
    return text


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------

def pack(args) -> int:
    out = Path(args.out)
    tmp = out / f".{ARCHIVE}.tmp"
    for old in out.glob(f"{ARCHIVE}*"):
        old.unlink()
    left_out = {p for run in out.glob("runs/*") for p in _dumps(run)[:-1]}  # all but the last
    members = [p for p in sorted(out.rglob("*")) if p.is_file() and p != tmp and p not in left_out]
    with tarfile.open(tmp, "w:gz") as tar:
        for path in members:
            tar.add(path, arcname=str(path.relative_to(out)))
    size, part = tmp.stat().st_size, int(args.part_mib * 2**20)
    if size <= part:
        parts = [tmp.rename(out / ARCHIVE)]
    else:
        parts = []
        with open(tmp, "rb") as fh:
            while chunk := fh.read(part):
                parts.append(out / f"{ARCHIVE}.part-{len(parts):02d}")
                parts[-1].write_bytes(chunk)
        tmp.unlink()
    print(f"packed {len(members)} files ({len(left_out)} intermediate dumps left out) into "
          f"{', '.join(p.name for p in parts)}: {size / 2**20:.1f} MiB; unpack with: cat {ARCHIVE}* | tar -xz")
    if args.prune:
        keep = {*TOP_FILES, *(p.name for p in parts)}
        for path in out.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        remaining = sorted(p.name for p in out.iterdir())
        print(f"pruned {out} to {len(remaining)} files: {', '.join(remaining)}")
        if len(remaining) > 8:
            print("warning: more than 8 files: the lending tool brings back only 8 of them")
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="start the runs, cut them at the deadline")
    p.add_argument("--out", required=True, help="folder of the run directories (OUT/runs)")
    p.add_argument("--configs", nargs="+", required=True, help="bundled config names, in the order to run them")
    p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides for every run")
    p.add_argument("--seconds", type=float, required=True, help="the deadline, from now")
    p.add_argument("--parallel", type=int, default=3)
    p.add_argument("--max-runs", type=int, default=None, help="run only the first N configs (the rest: skipped)")
    p.add_argument("--min-start", type=float, default=60.0, help="start no run with fewer seconds left")
    p.add_argument("--grace", type=float, default=8.0, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) // 3), help="OMP_NUM_THREADS per run")
    p.add_argument("--poll", type=float, default=0.5)
    p = sub.add_parser("track", help="nctools track of each run with dumps")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--parallel", type=int, default=6)
    p = sub.add_parser("results", help="results.csv and the summary lines")
    p.add_argument("--out", required=True)
    p.add_argument("--csv", required=True)
    p = sub.add_parser("pack", help="everything under OUT into one archive (or 15 MiB parts)")
    p.add_argument("--out", required=True)
    p.add_argument("--part-mib", type=float, default=15.0)
    p.add_argument("--prune", action="store_true", help=f"then delete all of OUT but {', '.join(TOP_FILES)} "
                                                        "and the archive")
    args = parser.parse_args()
    if args.command == "train":
        args.configs = list(dict.fromkeys(args.configs))  # each run directory once
        args.max_runs = len(args.configs) if args.max_runs is None else args.max_runs
    return {"train": train, "track": track, "results": results, "pack": pack}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
