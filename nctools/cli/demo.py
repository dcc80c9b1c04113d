"""``nctools demo``: the whole report on the real dump shipped with the package."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from .options import device_option, format_option, out_option, png_option, quiet_option, status

DEMO_DUMP = "demo_cifar10_lt.safetensors"


def demo_dump_path() -> Path:
    """The bundled dump: ResNet-32 trained with CE to the terminal phase on CIFAR-10-LT
    (experiments/make_demo_dump.py)."""
    return Path(str(resources.files("nctools") / "data" / DEMO_DUMP))


SHORT_HELP = "The full report on a bundled real dump."


@click.command(short_help=SHORT_HELP)
@out_option("nctools-demo", "Folder for the demo report (created).")
@png_option
@format_option("demo")
@device_option
@quiet_option
def demo(out, png, fmt, device, quiet) -> None:
    """Analyse the bundled real dump and write the full report to --out.

    The dump holds the final train-set features of a ResNet-32 trained with cross-entropy to the
    terminal phase (120 epochs, training accuracy 99.9 %) on the CPU on a long-tailed CIFAR-10
    subset (imbalance ratio 100: 500 down to 5 images per class), with its classifier;
    experiments/make_demo_dump.py packaged it. The report is
    what `nctools analyze` writes: the metrics table, metrics.json, per_class.csv and the
    figure PDFs.
    """
    from ..io.dump import load_dump
    from .analyze import report_dump

    path = demo_dump_path()
    dump = load_dump(path)
    # quiet=True below: the closing line on stdout says where the report is, once.
    report_dump(dump, f"nctools/data/{DEMO_DUMP}", out=out, center="class", groups=(100, 20), device=device,
                png=png, fmt=fmt, quiet=True, extra_options={"demo": True}, command="demo")
    if fmt == "table":
        click.echo(f"\nThe full report is in {out}/ (metrics.json, per_class.csv, figure PDFs; every figure in "
                   f"{Path(out) / 'report.pdf'}).\nNext: nctools analyze YOUR_CHECKPOINT.pt --out report/")
    else:
        status(f"wrote {out}/", quiet)
