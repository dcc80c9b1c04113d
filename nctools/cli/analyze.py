"""``nctools analyze PATH``: the NC metrics of one dump, checkpoint or model, with figures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..extras import install_hint
from ..io.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .options import analysis_options, out_option, parse_rgb, show_progress, status, with_figures
from .output import json_object

if TYPE_CHECKING:  # for the annotations only: the command imports torch when it runs
    from ..io.dump_contents import Dump

_DESCRIBED = ("split", "epoch", "dataset", "imbalance_ratio", "method", "arch", "weights", "preprocessing")


def _preprocessing(meta: dict) -> dict | None:
    """The preprocessing recorded in a dump's metadata (an object; from a source that keeps its
    metadata as stored text, that object's JSON), or None."""
    record = meta.get("preprocessing")
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            return None
    return record if isinstance(record, dict) else None


def describe(dump) -> str:
    """One line of provenance from the dump's metadata (what was analysed)."""
    from ..io.images import describe_preprocessing

    meta = dict(dump.metadata)
    if _preprocessing(meta) is not None:
        meta["preprocessing"] = describe_preprocessing(_preprocessing(meta))
    parts = [f"{key.replace('_', ' ')} {meta[key]}" for key in _DESCRIBED if key in meta]
    return ", ".join(parts) if parts else "no metadata"


def report_dump(dump, label: str, *, out: Path, center: str, groups, device: str, png: bool, fmt: str,
                quiet: bool, extra_options: dict | None = None, command: str = "analyze",
                squeeze_deg: float = 5.0, figures: bool = True) -> None:
    """Analyse ``dump``, write the report into ``out`` and print the summary (the shared core of
    ``analyze`` and ``demo``)."""
    from .. import report
    from ..core.device import resolve_device
    from ..io.sources import analyze_source

    dev = resolve_device(device)
    split = (extra_options or {}).get("split") or dump.split
    result = analyze_source(label, dump, center=center, device=dev, groups=groups, squeeze_deg=squeeze_deg,
                            split=split, progress=None if show_progress(quiet) else False)  # None: by size
    options = {"input": label, "device": str(dev), **(extra_options or {})}
    source = {"path": label, "metadata": dict(dump.metadata)}
    header = [f"nctools {command}: {label}", describe(dump)]
    written = report.write_analysis(out, result, dump.class_names, options, source, png=png, label=Path(label).name,
                                    header=header, figures=figures)
    if fmt == "json":  # metrics.json as written, under the keys every command's JSON opens with
        metrics = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
        click.echo(json_object(command, out, metrics))
    else:
        click.echo(report.format_summary(result, header))
    status(f"wrote {out}/ ({', '.join(written)})", quiet)


SHORT_HELP = "Metrics and figures of one dump, checkpoint or model."


@click.command(short_help=SHORT_HELP)
@click.argument("path", type=click.Path(path_type=Path))
@out_option("nctools-report", "Folder for metrics.json, per_class.csv and the figure PDFs (created).")
@analysis_options("analyze")
@click.option("--arch", metavar="NAME",
              help="Architecture of a plain state dict: one registered by an installed package (allnc_train "
                   "registers 'resnet32'), timm:NAME for any timm model, or a torchvision model name (resnet18, "
                   f"resnet50, ...); torchvision and timm come with {install_hint('vision')}.")
@click.option("--data", type=click.Path(path_type=Path), metavar="DIR",
              help="Images to extract features on: an image folder (DIR/<class>/*.jpg, or DIR/train and "
                   "DIR/test of those) or a CIFAR root; for a checkpoint, overrides the dataset it names.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per forward pass when extracting features.")
@click.option("--image-size", type=click.IntRange(min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE), default=None, metavar="N",
              help="Side of the square images the model was trained on: each image is resized to N and "
                   "centre-cropped to N x N [default: the architecture's own: 32 for resnet32; torchvision's "
                   "documented resize and crop of the model's weights (224 of 256 for resnet18); timm's "
                   "eval transform].")
@click.option("--mean", callback=parse_rgb, metavar="R,G,B",
              help="Per-channel mean the images are normalised by, e.g. 0.4914,0.4822,0.4465 for CIFAR-10 "
                   "[default: the architecture's own: CIFAR-10's for resnet32, ImageNet's for torchvision "
                   "models, the model's config for timm].")
@click.option("--std", callback=parse_rgb, metavar="R,G,B",
              help="Per-channel standard deviation, e.g. 0.2470,0.2435,0.2616 for CIFAR-10 [default: as --mean].")
@click.option("--transform", "transform", metavar="MODULE:FUNCTION",
              help="Your own preprocessing instead of --image-size/--mean/--std: FUNCTION() returns a transform "
                   "from a PIL image to a normalised float tensor. MODULE is imported like any Python import, "
                   "so it runs that code: use only your own.")
@click.option("--state-key", metavar="KEY",
              help="The entry of the file that holds the weights (e.g. state_dict, model, ema) when several "
                   "could [default: the one that fits --arch].")
@click.option("--strip-prefix", metavar="P",
              help="Remove P (e.g. 'model.') from the weights' keys, leaving out keys without it [default: "
                   "module., _orig_mod., model. and net. are tried and the one that fits --arch is used].")
@click.option("--class-counts", "class_counts", metavar="COUNTS",
              help="The training counts per class that define the many / medium / few groups, for auditing a test "
                   "or validation split: a comma list (5000,2997,...,50), a report's per_class.csv, a run's "
                   "run.json or a JSON list [default: the counts the input carries, else the split's own].")
@click.option("--squeeze-deg", type=click.FloatRange(min=0, max=180, max_open=True), default=5.0,
              show_default=True, metavar="DEG",
              help="A group whose mean pairwise angle lies more than DEG below the simplex-ETF optimum is squeezed.")
def analyze(path, out, center, split, groups, device, png, no_figures, fmt, quiet, arch, data, batch_size, image_size,
            mean, std, transform, state_key, strip_prefix, class_counts, squeeze_deg) -> None:
    """Analyse PATH: a feature dump, a trainer checkpoint, or a state dict with --arch.

    \b
    PATH is one of
      a feature dump (.safetensors, .pt, .npz) with features, labels and the classifier;
      a checkpoint that an installed reader understands, e.g. allnc_train's
        (checkpoints/epoch_*.pt): the model is rebuilt from its stored config and features are
        extracted on the dataset it names (or --data);
      a plain state dict (.pt, .pth, .ckpt, .safetensors) with --arch and --data, also as
        Lightning, DDP (module.) or torch.compile (_orig_mod.) save it.

    A state dict does not say how its model's images were preprocessed: give --image-size, --mean
    and --std (or --transform), or a warning names the defaults assumed. The preprocessing used is
    in the header line and in metrics.json (options.preprocessing).

    Prints the metrics table (NC1, NC2 for means and classifier, ICPA with the ETF optimum, NC3,
    NC4 and accuracy, the few-shot classes) and writes into --out: metrics.json, per_class.csv,
    icpa.pdf, per_class.pdf, cosines.pdf and report.pdf (all figures), with --png also PNGs,
    with --no-figures the two tables only.

    \b
    Examples:
      nctools analyze runs/c10_lt/dumps/epoch_0200.safetensors -o report/
      nctools analyze runs/c10_lt/checkpoints/epoch_0200.pt --data data/cifar10 --split test
      nctools analyze resnet18.pth --arch resnet18 --data images/ --format json
      nctools analyze cifar_resnet18.ckpt --arch resnet18 --data data/cifar10 --image-size 32
        --mean 0.4914,0.4822,0.4465 --std 0.2470,0.2435,0.2616
    """
    from ..io.sources import SourceOptions, load_source

    figures = with_figures(png, no_figures)
    if transform is not None and (image_size, mean, std) != (None, None, None):
        raise click.UsageError("--transform replaces --image-size, --mean and --std; give one or the other")
    source = SourceOptions(arch=arch, data=data, split=split, device=device, batch_size=batch_size,
                           image_size=image_size, progress=show_progress(quiet), mean=mean, std=std,
                           transform=transform, state_key=state_key, strip_prefix=strip_prefix)
    dump = load_source(path, source)
    extra = {"split": split or dump.split, "arch": arch, "data": None if data is None else str(data)}
    if _preprocessing(dump.metadata) is not None:
        extra["preprocessing"] = _preprocessing(dump.metadata)
    extra.update({k: v for k, v in (("state_key", state_key), ("strip_prefix", strip_prefix)) if v is not None})
    if class_counts is not None:
        from ..io.class_counts import read_class_counts

        dump = with_class_counts(dump, read_class_counts(class_counts), str(path))
        extra["class_counts"] = class_counts
    report_dump(dump, str(path), out=out, center=center, groups=groups, device=device, png=png, fmt=fmt,
                quiet=quiet, extra_options=extra, squeeze_deg=squeeze_deg, figures=figures)


def with_class_counts(dump: Dump, counts: list[int], label: str) -> Dump:
    """``dump`` with the training counts ``counts``: one per classifier row, or covering every label."""
    import torch

    from ..errors import InputError

    if dump.weight is not None and len(counts) != dump.weight.shape[0]:
        raise InputError(f"--class-counts gives {len(counts)} counts, but {label} has a classifier of "
                         f"{dump.weight.shape[0]} classes.")
    if dump.weight is None and len(counts) <= int(dump.labels.max()):
        raise InputError(f"--class-counts gives {len(counts)} counts, but {label} has labels up to "
                         f"{int(dump.labels.max())}.")
    dump.class_counts = torch.tensor(counts, dtype=torch.int64)
    return dump
