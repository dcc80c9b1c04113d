"""The paper's Fig. 2 for the evidence study: the inter-class pairwise angles (ICPA) of the class means and of
the classifier rows, one column per method, drawn by ``nctools compare`` from the committed final dumps.

    python -m experiments.evidence_icpa --csv docs/results/cifar10_lt.csv --seed 0 \\
        --out docs/figures/icpa_cifar10_lt

writes ``<out>_train.pdf`` / ``.png`` (the final training features) and ``<out>_test.pdf`` / ``.png`` (the
final test features). The committed dumps are copied, one per method, into a temporary folder laid out as
run folders (``dumps/`` and ``dumps-test/``), which is what ``nctools compare`` reads; the figures are its
own ``icpa_grid`` (one colour scale centred on the simplex angle). It also prints, per method and split,
how far the class means' pairwise angles lie from the simplex angle (the mean over pairs of
|angle - arccos(-1/(C-1))|) and the closest pair: the figure's content as numbers.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from experiments.cifar10_lt_summary import LABELS
from experiments.evidence_curves import DEFAULT_METHODS, parse_method
from experiments.paper_analysis import nctools_cli
from experiments.paper_tables import read_rows
from nctools.io.atomic import atomic_write

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": ("dump", "dumps"), "test": ("test_dump", "dumps-test")}


def dumps_of(csv_path: Path, methods: list[tuple[str, int]], seed: int) -> dict[tuple[str, int], dict]:
    """{(method, beta): the CSV row of ``seed``} for each of ``methods`` the CSV has, in ``methods`` order."""
    rows = {(r["method"], int(float(r["beta"])), int(r["seed"])): r for r in read_rows(csv_path)}
    return {m: rows[(*m, seed)] for m in methods if (*m, seed) in rows}


def icpa_figures(rows: dict[tuple[str, int], dict], out: Path) -> list[Path]:
    """``nctools compare``'s ICPA grid of ``rows``' dumps, per split, as ``<out>_<split>.pdf`` and ``.png``."""
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i, ((method, beta), row) in enumerate(rows.items()):
            run = Path(tmp) / f"{i}_{method}_b{beta}"
            for split, (column, folder) in SPLITS.items():
                if row.get(column):
                    source = REPO / row[column]
                    (run / folder).mkdir(parents=True)
                    shutil.copyfile(source, run / folder / f"epoch_{int(row['epochs']):04d}{source.suffix}")
            runs.append(str(run))
        labels = ",".join(LABELS.get(m, f"{m[0]}@{m[1]}").split(" (")[0].replace(",", "") for m in rows)
        for split, (column, _) in SPLITS.items():
            if not all(row.get(column) for row in rows.values()):
                continue  # a row without this split's dump (the first study has no test dumps)
            target = Path(tmp) / f"compare_{split}"
            nctools_cli(["compare", *runs, "--labels", labels, "--split", split, "--out", str(target), "--png",
                         "--device", "cpu", "--quiet"])
            for ext in (".pdf", ".png"):
                dest = out.with_name(f"{out.name}_{split}{ext}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                written.append(atomic_write(dest, lambda t, s=target / f"icpa_grid{ext}": shutil.copyfile(s, t)))
    return written


def pair_table(rows: dict[tuple[str, int], dict]) -> str:
    """A markdown table: per method and split, the class means' mean |angle - simplex angle| over pairs
    and their closest pair, from ``nctools.analyze`` on the committed dump."""
    import numpy as np

    import nctools
    from experiments.evidence import optimum_deg

    lines = ["| method | features | mean over pairs of abs(angle - simplex), degrees | closest pair, degrees |",
             "|---|---|---|---|"]
    for key, row in rows.items():
        for split, (column, _) in SPLITS.items():
            if not row.get(column):
                continue
            dump = nctools.load_dump(REPO / row[column])
            result = nctools.analyze(dump.features, dump.labels, weight=dump.weight, class_counts=dump.class_counts,
                                     device="cpu", progress=False)
            angles = np.asarray(result.icpa_means, dtype=float)
            upper = np.triu_indices(len(angles), 1)
            pairs = angles[upper]
            present = ~np.isnan(pairs)
            i = int(np.nanargmin(pairs))
            names = dump.class_names or [str(c) for c in range(len(angles))]
            closest = f"{pairs[i]:.1f} ({names[upper[0][i]]}-{names[upper[1][i]]})"
            off = np.abs(pairs[present] - optimum_deg(len(angles))).mean()
            lines.append(f"| {LABELS.get(key, key[0]).split(' (')[0]} | {split} | {off:.1f} | {closest} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("docs/results/cifar10_lt.csv"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated NAME[@BETA] of the CSV, one column each [{','.join(DEFAULT_METHODS)}]")
    p.add_argument("--out", type=Path, required=True, help="path stem: writes STEM_train.pdf/.png, STEM_test.pdf/.png")
    args = p.parse_args(argv)
    try:
        rows = dumps_of(args.csv, [parse_method(m) for m in args.methods.split(",") if m], args.seed)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {args.csv}: {err}", file=sys.stderr)
        return 1
    if len(rows) < 2:
        print(f"error: {args.csv}: fewer than two of {args.methods} have a seed-{args.seed} row", file=sys.stderr)
        return 1
    for path in icpa_figures(rows, args.out):
        print(f"wrote {path}")
    print(pair_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
