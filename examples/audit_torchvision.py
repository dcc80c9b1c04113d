"""Audit a torchvision classifier for neural collapse on an image folder, from Python.

    python examples/audit_torchvision.py IMAGES/ --arch resnet18 --weights finetuned.pth --out audit/

IMAGES/ holds one sub-folder of images per class (``IMAGES/<class>/*.jpg``), in the order of the
model's outputs (sorted class names, as ``torchvision.datasets.ImageFolder`` reads them). The
weights are a state dict whose classifier has one row per class; without ``--weights`` the model
is randomly initialised (useful only to try the script). ``nctools.extract`` hooks the input of
the model's last ``nn.Linear`` (``fc`` for ResNets), so the same lines audit any ``nn.Module``.

The command line does the same in one line:

    nctools analyze finetuned.pth --arch resnet18 --data IMAGES/ --out audit/
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

import nctools
from nctools import extract, report


def image_folder(root: Path, size: int, max_per_class: int | None):
    """ImageFolder with ImageNet preprocessing; at most ``max_per_class`` images per class."""
    transform = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    if max_per_class is None:
        return dataset
    taken: dict[int, int] = {}
    keep = []
    for i, (_, label) in enumerate(dataset.samples):
        if taken.get(label, 0) < max_per_class:
            keep.append(i)
            taken[label] = taken.get(label, 0) + 1
    subset = Subset(dataset, keep)
    subset.classes = dataset.classes
    return subset


def main(argv=None) -> nctools.NCResult:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, help="image folder: IMAGES/<class>/*.jpg")
    p.add_argument("--arch", default="resnet18", help="torchvision model name")
    p.add_argument("--weights", type=Path, help="state dict (.pth) of the model, classifier included")
    p.add_argument("--out", type=Path, default=Path("audit"), help="report folder")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-per-class", type=int, default=None, help="subsample for a quick look")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    data = image_folder(args.images, args.image_size, args.max_per_class)
    model = torchvision.models.get_model(args.arch, num_classes=len(data.classes))
    if args.weights is not None:  # weights_only: a state dict from elsewhere must not run code
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    else:
        print("no --weights: auditing a randomly initialised model")

    dump = extract(model, DataLoader(data, batch_size=64), device=args.device,
                   metadata={"split": "train", "arch": args.arch, "class_names": data.classes})
    result = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, device=args.device)
    print(report.format_summary(result, [f"{args.arch} on {args.images}"]))
    report.write_analysis(args.out, result, data.classes, options={"arch": args.arch},
                          source={"path": str(args.images), "metadata": dump.metadata})
    print(f"figures and metrics in {args.out}/")
    return result


if __name__ == "__main__":
    main()
