"""The training runs of ``tools/device_check.sh``: start them under a deadline, track them, tabulate, pack.

    python -m experiments.gpu_runs datasets --configs A B C
    python -m experiments.gpu_runs train --out OUT/runs --seconds 280 --parallel 3 --configs A B C \\
        --set run.device=cuda ... --for cifar10 data.root=CIFAR10 --for cifar100 data.root=CIFAR100
    python -m experiments.gpu_runs track --out OUT/runs --seconds 30 --device cuda
    python -m experiments.gpu_runs results --out OUT/runs --csv OUT/results.csv
    python -m experiments.gpu_runs tables --out OUT --seconds 35
    python -m experiments.gpu_runs pack --out OUT [--prune]

``datasets`` prints the datasets the configs train on (their ``data.dataset``), each once, so that the
script prepares only the images some run needs.

``train`` runs ``allnc-train --config NAME --out OUT/runs/NAME --set ...`` for each config in the order
given, ``--parallel`` at a time, through :mod:`experiments.launcher`: each in its own process group (its
DataLoader workers with it). Each run gets the ``--set`` overrides, then the ``--for`` ones of its
config's dataset (a run reads the images of its own dataset: ``--for cifar100 data.root=DIR``); a run on
a dataset named by ``--no-images``, or left out by ``--only``, is listed as skipped. No run starts with
less than ``--min-start`` seconds left; when ``--seconds`` are up the runs still going get SIGTERM, then
SIGKILL after ``--grace`` seconds. A killed run keeps its last checkpoint (``allnc-train --out
OUT/runs/NAME --resume`` continues it, and so does ``train`` again on the same OUT, which also skips the
runs that finished); a finished one loses its checkpoints and keeps run.json and its dumps. Each run's
outcome (finished, cut, failed or skipped, and why), exit status, process seconds and the most runs that
shared the machine with it go to ``OUT/runs/status.json``.

``track`` runs ``nctools track`` on each run with dumps (into ``OUT/runs/NAME/track``); ``results``
writes results.csv (final metrics, wall times, the targets) and prints the lines for summary.txt;
``tables`` gives each finished run one row of ``OUT/<dataset>_lt_full.csv``, the results CSV of
:mod:`experiments.paper_tables` (its columns, its metrics of the final training- and test-set dumps),
and copies those dumps into ``OUT/dumps/`` (``nctools analyze``'s tables of them, without figures, in
``OUT/analyze/``);
a row names its dumps relative to OUT, the archive's root (``dumps/cifar10_ce_b100_s0.safetensors``),
so that the CSV and its dumps/ can be copied into ``docs/results/`` together. A cut run gets no row. ``pack`` puts
everything under OUT into ``device-check.tar.gz`` (split into 15 MiB parts when larger), leaving out
each run's dumps but the last of each split (``track.csv`` holds their numbers) and a finished run's
last ones when ``tables`` copied them into ``OUT/dumps/`` (the archive holds their bytes once), and the
cut runs' checkpoints that would take it past the parts that come back; with ``--prune`` it deletes the
rest of OUT but its top files, because the lending tool brings back at most 8 files.
Exit status: 1 when a run, a track, a row or the packing failed (a cut or skipped run is no failure),
else 0; 124 when SIGTERM stopped ``train`` before every run had its turn.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from experiments.launcher import ALLNC_TRAIN_MODULE, Job, launch, read_record, start, stop, train_command
from experiments.paper_runs import Family, Run
from experiments.paper_tables import CSV_COLUMNS, REPO, csv_row
from nctools.errors import one_line
from nctools.io.atomic import atomic_write_json, atomic_write_path
from nctools.io.layout import CHECKPOINTS, DUMP_FOLDERS, epoch_files

# Wall-time targets for the 200-epoch runs on one H200 (the trainer's speed goals).
TARGETS_S = {"cifar10_lt_r100_ce": 90.0, "cifar10_lt_r100_allnc": 240.0}
NCTOOLS = [sys.executable, "-c", "import sys; from nctools.cli import main; sys.exit(main())"]
TOP_FILES = ("summary.txt", "card.txt", "results.csv", "bench_train.jsonl", "bench_core.txt")
ARCHIVE = "device-check.tar.gz"
BACK = 8  # files the lending tool brings back from OUT: the top files and the archive's parts
STATUS = "status.json"  # in the runs' folder: each run's outcome, track and table row


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_status(runs: Path, status: dict) -> None:
    """``runs/status.json``, atomically (NaN allowed: a table row's metric may be undefined)."""
    atomic_write_json(runs / STATUS, status, allow_nan=True)


def _dumps(run_dir: Path, split: str = "train") -> list[Path]:
    """The run's dumps of ``split`` (train, test), in epoch order."""
    return epoch_files((run_dir / DUMP_FOLDERS[split]).glob("epoch_*"))


def dataset_of(config: str) -> str | None:
    """The ``data.dataset`` of a bundled config (or config file); None when there is no such config, which
    allnc-train then fails with its own sentence."""
    from allnc_train.cli import find_config
    from allnc_train.schema import ConfigError, DataConfig, load_yaml

    try:
        data = load_yaml(find_config(config)).get("data") or {}
    except ConfigError:
        return None
    return data.get("dataset", DataConfig.dataset)


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

def datasets(args) -> int:
    print(" ".join(dict.fromkeys(d for d in map(dataset_of, args.configs) if d is not None)))
    return 0


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def train(args) -> int:
    began = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_dataset: dict[str, list[str]] = {}
    for dataset, *overrides in args.per_dataset:
        per_dataset.setdefault(dataset, []).extend(overrides)
    jobs, skipped = [], {}
    for name in args.configs:
        dataset = dataset_of(name)
        if args.only is not None and name not in args.only:
            skipped[name] = "not among the runs --only picks"
        elif dataset in args.no_images:
            skipped[name] = f"no {dataset} images (the data step prepared none)"
        else:
            overrides = [*args.set, *per_dataset.get(dataset, [])]
            jobs.append(Job(name, out / name, train_command(name, out / name, overrides, ALLNC_TRAIN_MODULE),
                            log=out / f"{name}.log"))
    log = lambda m: print(f"{time.monotonic() - began:6.0f} s  {m}", flush=True)  # noqa: E731
    done = launch(jobs, args.parallel, seconds=args.seconds, min_start=args.min_start, grace=args.grace,
                  threads=args.threads, drop_checkpoints=True, poll=args.poll, log=log,
                  sigterm="the step's own time limit stopped gpu_runs.py")
    status = {name: {"state": "skipped", "why": skipped[name]} if name in skipped else done.outcomes[name].as_dict()
              for name in args.configs}
    write_status(out, status)
    if done.stopped:
        return 124
    return int(any(s["state"] == "failed" for s in status.values()))


# ---------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------

def track(args) -> int:
    deadline = time.monotonic() + args.seconds
    out = Path(args.out)
    status = read_json(out / STATUS) or {}
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
    write_status(out, status)
    return int(any(str(s.get("track", "")).startswith(("failed", "cut", "not run")) for s in status.values()))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

COLUMNS = ["run", "method", "state", "epoch", "epochs", "eval_epoch", "eval_top1", "eval_many", "eval_medium",
           "eval_few", "train_time_s", "process_s", "max_parallel", "target_s", "device", "track", "why"]


def results(args) -> int:
    out = Path(args.out)
    status = read_json(out / STATUS)
    if status is None:
        print(f"no runs: {out / STATUS} is missing (the runs step did not run)")
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
# tables
# ---------------------------------------------------------------------------------------------

class ConfigRun(Run):
    """A run as :func:`experiments.paper_tables.csv_row` reads it (``OUT/runs/<name>``), named here after its
    config, the folder the device check gives it, rather than after a paper run's family and kind."""

    @property
    def name(self) -> str:
        return self.config


def config_run(name: str, record: dict) -> ConfigRun:
    """The run of config ``name`` from its run.json. Its kind is the method part of the bundled config's name
    (ce, allnc, la, allnc_no_p2p ...: the CSV's method column), else the record's method."""
    data = record["config"]["data"]
    ratio = float(data["imbalance_ratio"])
    ratio = int(ratio) if ratio.is_integer() else ratio  # 100, as the ratio columns of the paper's CSVs read
    named = re.fullmatch(rf"{re.escape(data['dataset'])}_(?:balanced|lt_r[\d.]+)_(\w+)", name)
    family = Family(data["dataset"], "", [ratio], None, {})
    return ConfigRun(family, named[1] if named else record["method"], ratio, name, [], record["config"]["seed"])


def tables(args) -> int:
    """One row per finished run in OUT/<dataset>_lt_full.csv, in the runs' order. The rows are kept in
    status.json and made once each (a later call, on the unpacked archive say, makes only the missing ones);
    the files are rewritten from them after each new row, so that a step stopped at its time limit keeps
    the rows it made."""
    deadline = time.monotonic() + args.seconds
    out = Path(args.out)
    status = read_json(out / "runs" / STATUS)
    if status is None:
        print(f"no runs: {out / 'runs' / STATUS} is missing (the runs step did not run)")
        return 0
    # wall_s: the process's wall time for a run trained in one go; csv_row sums the epochs' otherwise
    timings = {name: e["process_s"] for name, e in status.items() if "process_s" in e and not e.get("resumed")}
    failed = False
    for name, entry in status.items():
        if entry["state"] != "finished" or "row" in entry:
            pass
        elif time.monotonic() > deadline:
            entry["table"] = "not made: out of time"
        else:
            try:
                entry.update(_table_row(out, name, timings))
            except Exception as exc:  # a bad run (no final dump, an unreadable one) costs its row alone
                entry["table"], failed = f"failed ({one_line(exc)})", True
            else:
                entry["table"] = f"a row in {entry['csv']}"
                _write_tables(out, status)
                write_status(out / "runs", status)
        if "table" in entry:
            print(f"{name}: {entry['table']}")
    write_status(out / "runs", status)
    made = [e["csv"] for e in status.values() if "row" in e]
    for file in dict.fromkeys(made):
        print(f"{file}: {made.count(file)} row(s), their dumps in dumps/")
    return int(failed)


def _table_row(out: Path, name: str, timings: dict[str, float]) -> dict:
    """The run's row (csv_row's, its dumps named inside OUT), its CSV file and the dumps it copied."""
    record = read_record(out / "runs" / name) or {}
    run = config_run(name, record)
    row = csv_row(run, out, out / "dumps", timings)
    for key in ("dump", "test_dump"):
        row[key] = _in_pack(row[key], out)
    last = record["epochs"][-1]
    # the final dumps now travel under dumps/ alone (pack): the archive holds their bytes once
    return {"row": row, "csv": f"{run.family.name}_lt_full.csv",
            "kept": [last[key] for key in ("dump", "dump_test") if key in last]}


def _in_pack(shown: str, out: Path) -> str:
    """A dump path as csv_row shows it (relative to the repository when inside it, else absolute) as a
    name inside OUT, the archive's root."""
    if not shown:
        return shown
    return (REPO / shown).resolve().relative_to(out.resolve()).as_posix()


def _write_tables(out: Path, status: dict) -> None:
    files: dict[str, list[dict]] = {}
    for entry in status.values():
        if "row" in entry:
            files.setdefault(entry["csv"], []).append(entry["row"])
    for file, rows in files.items():
        with atomic_write_path(out / file) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------

def pack(args) -> int:
    out = Path(args.out)
    tmp = out / f".{ARCHIVE}.tmp"
    for old in out.glob(f"{ARCHIVE}*"):
        old.unlink()
    left_out = {p for run in out.glob("runs/*") for split in DUMP_FOLDERS for p in _dumps(run, split)[:-1]}
    status = read_json(out / "runs" / STATUS) or {}
    copied = {out / "runs" / name / d for name, entry in status.items() for d in entry.get("kept", [])}
    members = [p for p in sorted(out.rglob("*")) if p.is_file() and p != tmp and p not in left_out and p not in copied]
    part = int(args.part_mib * 2**20)
    members, dropped = _fit_checkpoints(members, list(status), room=(BACK - len(TOP_FILES)) * part)
    with tarfile.open(tmp, "w:gz") as tar:
        for path in members:
            tar.add(path, arcname=str(path.relative_to(out)))
    size = tmp.stat().st_size
    if size <= part:
        parts = [tmp.rename(out / ARCHIVE)]
    else:
        parts = []
        with open(tmp, "rb") as fh:
            while chunk := fh.read(part):
                parts.append(out / f"{ARCHIVE}.part-{len(parts):02d}")
                parts[-1].write_bytes(chunk)
        tmp.unlink()
    print(f"packed {len(members)} files ({len(left_out)} intermediate dumps left out, {len(copied)} final ones "
          f"packed once, under dumps/) into "
          f"{', '.join(p.name for p in parts)}: {size / 2**20:.1f} MiB; unpack with: cat {ARCHIVE}* | tar -xz")
    if dropped:
        names = ", ".join(str(p.relative_to(out)) for p in dropped)
        print(f"warning: {len(dropped)} checkpoint(s) left out, beyond the {BACK - len(TOP_FILES)} parts that come "
              f"back (those cut runs resume on this machine only): {names}")
    if args.prune:
        keep = {*TOP_FILES, *(p.name for p in parts)}
        for path in out.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        remaining = sorted(p.name for p in out.iterdir())
        print(f"pruned {out} to {len(remaining)} files: {', '.join(remaining)}")
        if len(remaining) > BACK:
            print(f"warning: more than {BACK} files: the lending tool brings back only {BACK} of them")
            return 1
    return 0


def _fit_checkpoints(members: list[Path], runs: list[str], room: int) -> tuple[list[Path], list[Path]]:
    """(what to pack, the checkpoints left out). A cut run's checkpoint only lets it resume elsewhere, and is the
    biggest file (15 MB for a width-2 CIFAR-100 run): the checkpoints go in last, in the runs' order, while the
    raw bytes (a bound on the compressed ones) still fit ``room``."""
    rank = {name: i for i, name in enumerate(runs)}
    checkpoints = sorted((p for p in members if p.parent.name == CHECKPOINTS),
                         key=lambda p: rank.get(p.parents[1].name, len(rank)))
    used = sum(p.stat().st_size for p in members if p.parent.name != CHECKPOINTS)
    dropped = []
    for path in checkpoints:
        if used + path.stat().st_size <= room:
            used += path.stat().st_size
        else:
            dropped.append(path)
    return [p for p in members if p not in dropped], dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="the datasets the configs train on, each once")
    p.add_argument("--configs", nargs="+", required=True)
    p = sub.add_parser("train", help="start the runs, cut them at the deadline")
    p.add_argument("--out", required=True, help="folder of the run directories (OUT/runs)")
    p.add_argument("--configs", nargs="+", required=True, help="bundled config names, in the order to run them")
    p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides for every run")
    p.add_argument("--for", dest="per_dataset", nargs="+", action="append", default=[],
                   metavar=("DATASET", "KEY=VALUE"), help="overrides for the runs on DATASET (their config's "
                   "data.dataset), after --set: e.g. --for cifar100 data.root=DIR; repeatable")
    p.add_argument("--no-images", nargs="*", default=[], metavar="DATASET",
                   help="datasets without images here: their runs are listed as skipped")
    p.add_argument("--only", nargs="+", default=None, metavar="CONFIG",
                   help="train only these of --configs (the rest: listed as skipped)")
    p.add_argument("--seconds", type=float, required=True, help="the deadline, from now")
    p.add_argument("--parallel", type=int, default=3)
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
    p = sub.add_parser("tables", help="a row of OUT/<dataset>_lt_full.csv per finished run, its final dumps in "
                                      "OUT/dumps/")
    p.add_argument("--out", required=True, help="the device check's folder (its runs in OUT/runs)")
    p.add_argument("--seconds", type=float, required=True, help="start no row after this many seconds")
    p = sub.add_parser("pack", help="everything under OUT into one archive (or 15 MiB parts)")
    p.add_argument("--out", required=True)
    p.add_argument("--part-mib", type=float, default=15.0)
    p.add_argument("--prune", action="store_true", help=f"then delete all of OUT but {', '.join(TOP_FILES)} "
                                                        "and the archive")
    args = parser.parse_args()
    if args.command == "train":
        args.configs = list(dict.fromkeys(args.configs))  # each run directory once
        unknown = [name for name in args.only or () if name not in args.configs]
        if unknown:
            parser.error(f"--only {' '.join(unknown)}: not among --configs.")
    commands = {"datasets": datasets, "train": train, "track": track, "results": results, "tables": tables,
                "pack": pack}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
