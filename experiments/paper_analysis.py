"""The analysis of the AllNC paper reproduction: ``nctools track`` and ``nctools compare`` on the runs,
then the paper's Figs. 2, 3, 4 and 5b drawn from their output.

- :func:`analysis_commands`: the ``nctools`` command lines (``OUT/track/<run>/``, ``OUT/compare/<group>/``);
  :func:`nctools_cli` runs one in this process;
- :func:`light_track`: track.csv without figures, for the smoke profile;
- :func:`write_figures`: ``fig2_icpa``, ``fig3_cos_std``, ``fig4_self_duality`` and ``fig5b_eta``
  (PDF and PNG) into ``OUT``, through :mod:`experiments.paper_figures`.
"""
from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
from pathlib import Path

from experiments.paper_runs import ABLATIONS, COMPARED, Family, Run
from nctools.core import keys as K
from nctools.errors import one_line
from nctools.io.layout import record_path


def nctools_cli(args: list[str]) -> str:
    """Run ``nctools ARGS`` in this process (the click command itself); returns its stdout."""
    import click

    from nctools.cli import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            cli.main(args=args, prog_name="nctools", standalone_mode=False)
        except click.ClickException as exc:  # bad input: one line, as the console script prints it
            raise RuntimeError(f"nctools {shlex.join(args)}: {one_line(exc)}") from None
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
        if fam.ablated_at is not None:
            r = fam.ablated_at
            group = [by[(k, r)] for k in ("ce_lt", "allnc_lt", *ABLATIONS)]
            cmds.append(_compare(group, out, f"{fam.name}_ablation"))
    return cmds


def light_track(runs: list[Run], out: Path) -> None:
    """track.csv (no figures) for every run that ``nctools track`` did not analyse, through
    :func:`nctools.report.tracking.track_run`, the function behind ``nctools track``."""
    from nctools.report.tracking import track_run

    for run in runs:
        target = out / "track" / run.name / "track.csv"
        if not target.exists() or target.stat().st_mtime < record_path(out / "runs" / run.name).stat().st_mtime:
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


def write_figures(runs: list[Run], out: Path, primary2: Family, primary: Family) -> list[str]:
    """fig2 .. fig5b (PDF + PNG) into ``out``, one set per family (suffix ``_<family>``) and the
    un-suffixed names for the primary families (``primary2`` for Fig. 2, ``primary`` for the
    rest); returns the file names written."""
    from experiments.paper_figures import eta_curves, methods_by_ratio

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
        record = json.loads(record_path(out / "runs" / allnc.name).read_text())
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

