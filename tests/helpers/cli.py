"""Synthetic inputs for the command-line tests (dumps, run folders, image folders) and ways to look at
what a command left behind."""
from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

import nctools
from nctools.cli import cli
from nctools.core.geometry import simplex_etf

COUNTS = (150, 60, 30, 15, 8, 4)  # many-, medium- and few-shot classes
NAMES = ["ant", "bee", "cat", "dog", "eel", "fox"]


def make_dump(path: Path, *, counts=COUNTS, noise: float = 0.3, epoch: int = 1, ratio=None, method="ce",
              classifier: bool = True, seed: int = 0, **meta) -> Path:
    """A small dump: noisy simplex-ETF class means, a classifier near the means, metadata."""
    g = torch.Generator().manual_seed(seed)
    c, d = len(counts), 8
    means = 3 * simplex_etf(c, d, dtype=torch.float32)
    labels = torch.arange(c).repeat_interleave(torch.tensor(counts))
    features = means[labels] + noise * torch.randn(len(labels), d, generator=g)
    weight = means + 0.1 * torch.randn(c, d, generator=g) if classifier else None
    bias = torch.zeros(c) if classifier else None
    metadata = {"epoch": epoch, "split": "train", "dataset": "synthetic", "method": method,
                "class_names": NAMES[:c], **meta}
    if ratio is not None:
        metadata["imbalance_ratio"] = ratio
    return nctools.save_dump(path, features, labels, weight=weight, bias=bias, metadata=metadata)


def make_run(run_dir: Path, epochs=(1, 2, 3), **kw) -> Path:
    """A run directory with one dump per epoch, collapsing as the epochs go on."""
    for e in epochs:
        make_dump(run_dir / "dumps" / f"epoch_{e:04d}.safetensors", epoch=e, noise=1.0 / e, seed=e, **kw)
    return run_dir


def invoke(*args, env=None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in args])


def pdf_pages(path: Path) -> int:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


def leftovers(folder: Path) -> list:
    """Staging folders or temporary files that a command failed to clean up."""
    return [p.name for p in folder.rglob("*") if ".nctools-" in p.name or p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- help and exit codes

def image_folder(root: Path, classes=("a", "b", "c"), per_class: int = 4, size: int = 32) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = (torch.rand(size, size, 3, generator=g) * 80 + 60 * c).to(torch.uint8)
            Image.fromarray(image.numpy()).save(root / name / f"{i}.png")
    return root
