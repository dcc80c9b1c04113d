"""The tables of the AllNC paper reproduction: ``results.md`` (a last-epoch table per family, the
ablation table, every command and wall time) and the results CSV (one row per real-image run, each
backed by its final dump, copied beside it).
"""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from experiments.csv_rows import write_rows
from experiments.launcher import run_state
from experiments.launcher import train_command as allnc_train_command
from experiments.paper_analysis import nctools_cli, read_track
from experiments.paper_runs import ABLATIONS, LABELS, METHOD, Run
from nctools.core import keys as K
from nctools.io.atomic import atomic_write
from nctools.io.layout import record_path

REPO = Path(__file__).resolve().parents[1]


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
    rec = json.loads(record_path(out / "runs" / run.name).read_text())
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
        if fam.ablated_at is not None:
            order = ["ce_lt", "allnc_lt", *ABLATIONS]
            abl = sorted([r for r in runs if r.family is fam and r.ratio == fam.ablated_at and r.kind in order],
                         key=lambda r: order.index(r.kind))
            parts += [f"### Ablation, {fam.name}, beta = {fam.ablated_at:g}", "", _table(header, [
                _row(out, r, timings) for r in abl]), ""]
    parts += ["## Figures", "", *[f"- `{f}`" for f in figures], "",
              "## Commands run by this invocation", "", "```", *commands, "```", ""]
    path = out / "results.md"
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------------
# The results CSV: one row per real-image run, each backed by its final dump
# ---------------------------------------------------------------------------------------------

# nctools' summary of the final training-set dump: the class-mean centring, then the sample-mean one (Papyan's
# mu_G; P2P optimises the first only). The classifier's tail angle has no centring: it has one column.
CSV_METRICS = ("nc1", "nc1_tail", "nc2_cos_std_means", "nc2_cos_std_classifier", "nc3_self_duality",
               "tail_icpa_mean_deg_means", "tail_icpa_mean_deg_classifier", "nc3_self_duality_sample_center",
               "tail_icpa_mean_deg_means_sample_center")
# The same summary of the final test-set dump (features no loss saw), prefixed ``test_``.
TEST_METRICS = ("nc1", "nc1_tail", "nc2_cos_std_means", "nc3_self_duality", "tail_icpa_mean_deg_means",
                "tail_icpa_mean_deg_classifier", "nc4_ncc_mismatch")
SUMMARY_KEY = {"nc1_tail": K.TAIL_NC1}  # CSV column -> nctools summary key, where the names differ
CSV_COLUMNS = ("method", "beta", "seed", "epochs", "n_train", "n_test", "train_acc", "test_acc", "many_acc",
               "medium_acc", "few_acc", *CSV_METRICS, *(f"test_{k}" for k in TEST_METRICS), "wall_s", "device",
               "dump", "test_dump", "track", "test_track", "recipe")


def _fraction(percent) -> float | None:
    return None if percent is None else round(percent / 100.0, 6)


def csv_row(run: Run, out: Path, dumps: Path, timings: dict[str, float]) -> dict:
    """One CSV row: the run's final accuracies from run.json, and ``nctools analyze`` on its final
    training-set dump, copied into ``dumps`` (the copy is what the row's metrics describe); the same
    for the final test-set dump; and the run's per-epoch curves (:func:`_kept_tracks`) in ``tracks``,
    the folder beside ``dumps``.
    ``wall_s``: the ``allnc-train`` process's wall time when the run was trained in one go, else
    (resumed, or trained by an invocation that kept no time) the sum of its epochs' training times."""
    record = json.loads(record_path(out / "runs" / run.name).read_text())
    last = record["epochs"][-1]
    if record.get("status") != "finished" or "dump" not in last:
        raise RuntimeError(f"{run.name} has not finished with a final dump")
    method, beta, _ = row_key(run)
    stem = f"{run.family.name}_{method}_b{beta:g}_s{run.seed}"
    dump, summary = _kept_dump(out, run, last["dump"], dumps / f"{stem}{Path(last['dump']).suffix}")
    test = {f"test_{k}": "" for k in TEST_METRICS} | {"test_dump": ""}
    if "dump_test" in last:
        test_dump, test_summary = _kept_dump(out, run, last["dump_test"],
                                             dumps / f"{stem}_test{Path(last['dump_test']).suffix}")
        test = {f"test_{k}": test_summary[SUMMARY_KEY.get(k, k)] for k in TEST_METRICS} | {"test_dump": test_dump}
    tracks = _kept_tracks(out / "runs" / run.name, dumps.parent / "tracks" / stem, "dump_test" in last)
    epochs = record["epochs"]
    beta = int(beta) if beta.is_integer() else beta  # 100, as the CSV has always written it
    return {"method": method, "beta": beta, "seed": run.seed, "epochs": last["epoch"],
            "n_train": record["data"]["num_train"], "n_test": record["data"].get("num_eval"),
            "train_acc": _fraction(last.get("train_top1")), "test_acc": _fraction(last.get("eval_top1")),
            "many_acc": _fraction(last.get("eval_many")), "medium_acc": _fraction(last.get("eval_medium")),
            "few_acc": _fraction(last.get("eval_few")), **{k: summary[SUMMARY_KEY.get(k, k)] for k in CSV_METRICS},
            "wall_s": timings.get(run.name, round(sum(e.get("train_time_s", 0.0) for e in epochs), 1)),
            "device": record["environment"]["device"], "dump": dump, **test, **tracks, "recipe": recipe(run)}


def _kept_dump(out: Path, run: Run, name: str, kept: Path) -> tuple[str, dict]:
    """Copy the run's dump ``name`` to ``kept``; (its path as the CSV shows it, ``nctools analyze``'s summary
    of the copy). The row reads the summary only, so analyze draws no figure (drawing took most of a row's time)."""
    atomic_write(kept, lambda tmp: shutil.copyfile(out / "runs" / run.name / name, tmp))  # a kill never leaves half
    report = json.loads(nctools_cli(["analyze", str(kept), "--out", str(out / "analyze" / kept.stem),
                                     "--format", "json", "--device", "cpu", "--no-figures", "--quiet"]))
    return _shown(kept), report["summary"]


def _kept_tracks(run_dir: Path, stem: Path, with_test: bool) -> dict[str, str]:
    """``nctools track``'s table of every epoch dump of the run (training set; test set too when
    ``with_test``) as ``<stem>.csv`` and ``<stem>_test.csv``: the curves over epochs, which outlast the
    run folder and its epoch dumps (scratch, not committed). Returns the CSV's ``track`` and
    ``test_track`` cells."""
    from nctools.report.tracking import track_run

    kept = {"track": "", "test_track": ""}
    for split, column, suffix in (("train", "track", ""), ("test", "test_track", "_test")):
        if split == "test" and not with_test:
            continue
        table = track_run(run_dir, split=split, device="cpu").table
        path = stem.with_name(f"{stem.name}{suffix}.csv")
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
        kept[column] = _shown(path)
    return kept


def _shown(path: Path) -> str:
    """``path`` as the CSV shows it: repository-relative inside the repository, else absolute."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def row_key(run: Run) -> tuple[str, float, int]:
    """(method, beta, seed): what names a run's row in the results CSV (one CSV per dataset)."""
    return METHOD.get(run.kind, run.kind), 1.0 if run.kind == "ce_bal" else float(run.ratio), run.seed


def recipe(run: Run) -> str:
    """The run's recipe as its CSV row records it: the bundled config and the overrides, less the data
    folder (which differs from machine to machine)."""
    return shlex.join([run.config, *(o for o in run.overrides if not o.startswith("data.root="))])


def read_rows(path: Path) -> list[dict]:
    """The rows of the results CSV at ``path`` ([] when there is none)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _key_of(row: dict) -> tuple[str, float, int]:
    return row["method"], float(row["beta"]), int(row["seed"])


def _on_disk(cell: str) -> bool:
    return bool(cell) and ((REPO / cell).is_file() or Path(cell).is_file())


def recorded_rows(path: Path, runs: list[Run]) -> dict[str, dict]:
    """{run name: its row} for each of ``runs`` that the results CSV at ``path`` records: a row of its
    :func:`row_key` and :func:`recipe` (a row from before recipes were recorded is taken as it is) whose
    dumps are on disk. Such a run is done: the CSV and its dumps are the study's lasting record, which
    the run folders (scratch, often lost) are not."""
    return _recorded_in(read_rows(path), runs)


def _recorded_in(rows: list[dict], runs: list[Run]) -> dict[str, dict]:
    by_key = {_key_of(row): row for row in rows}
    done = {}
    for run in runs:
        row = by_key.get(row_key(run))
        if (row is not None and row.get("recipe", "") in ("", recipe(run)) and _on_disk(row.get("dump", ""))
                and (not row.get("test_dump") or _on_disk(row["test_dump"]))):
            done[run.name] = row
    return done


def write_results_csv(runs: list[Run], out: Path, path: Path, dumps: Path, timings: dict[str, float],
                      renew: set[str] | None = None, count_missing: bool = True) -> Path | None:
    """Rewrite the CSV at ``path`` (atomically) for ``runs``, in their order. A run finished in ``out``
    gets a new row when ``renew`` names it (None: every such run) or when the CSV records none for it;
    otherwise the row the CSV records is kept as it is. The CSV's other rows (other runs, or a row whose
    dumps are gone) follow unchanged: nothing recorded is dropped. A run finished in ``out`` with another
    recipe than planned (``out/plan.json``) gets no row. With ``count_missing``, the runs with no row at all are
    counted on stderr (once a sitting is enough: the rows written as each run finishes leave it out). Returns
    the path, or None when there is no row to write and no CSV yet (nothing is written)."""
    before = read_rows(path)
    recorded = _recorded_in(before, runs)
    trained_with = json.loads((out / "plan.json").read_text()) if (out / "plan.json").is_file() else {}
    rows, made, missing = [], set(), []
    for run in runs:
        if not run.family.real_data:
            continue
        finished = run_state(out / "runs" / run.name) == "finished"
        planned = shlex.join(allnc_train_command(run.config, out / "runs" / run.name, run.overrides))
        stale = trained_with.get(run.name) not in (None, planned)
        if finished and stale:
            print(f"reproduce_paper: {run.name} in {out}/runs was trained with another recipe than planned; "
                  "no row is made from it", file=sys.stderr)
        if finished and not stale and (run.name not in recorded or renew is None or run.name in renew):
            rows.append(csv_row(run, out, dumps, timings))
        elif run.name in recorded:
            rows.append(recorded[run.name])
        else:
            missing.append(run.name)
            continue
        made.add(_key_of(rows[-1]))
    if missing and count_missing:
        print(f"reproduce_paper: {len(missing)} planned run(s) have no row yet: {', '.join(missing[:3])}"
              f"{', ...' if len(missing) > 3 else ''}", file=sys.stderr)
    kept = [*rows, *(row for row in before if _key_of(row) not in made)]
    if not kept and not path.exists():
        return None  # a study with no finished run yet gets no CSV: an empty one would read as a study with no rows
    return write_rows(path, CSV_COLUMNS, kept)
