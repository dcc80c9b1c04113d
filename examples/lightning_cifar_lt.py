"""Watch neural collapse develop in a PyTorch Lightning run on CIFAR-10-LT.

A torchvision ResNet-18 trains on a long-tailed subset of CIFAR-10 (LDAM counts, default n_max 100
and imbalance ratio 10) with plain cross-entropy. ``NeuralCollapseCallback`` measures the training
set after every epoch, logs ``nc/*`` through Lightning's logger and writes one dump per epoch; at
the end ``nctools track`` draws the curves.

    python examples/lightning_cifar_lt.py --data data/cifar10 --out runs/lightning_c10lt
    python examples/lightning_cifar_lt.py --tarball cifar10-jpeg.tar.gz --epochs 5   # or $NCTOOLS_CIFAR10_TARBALL

``--data`` is an image folder with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``; ``--tarball``
is the same as a ``.tar.gz``, extracted into a temporary folder. Needs
``pip install 'neural-collapse-tools[lightning,vision]'`` (Lightning and torchvision).
"""
from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
from pathlib import Path

import lightning as L
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from allnc_train.data import lt_class_counts, lt_subset_indices
from nctools.cli import main as nctools_main
from nctools.integrations.lightning import NeuralCollapseCallback
from nctools.io.images import normalization


class LitResNet(L.LightningModule):
    def __init__(self, num_classes: int, lr: float):
        super().__init__()
        self.net, self.lr = torchvision.models.resnet18(num_classes=num_classes), lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)


def cifar_root(args, tmp: str) -> Path:
    if args.data:
        return Path(args.data)
    if not args.tarball:
        raise SystemExit("pass --data DIR or --tarball FILE (or set NCTOOLS_CIFAR10_TARBALL)")
    with tarfile.open(args.tarball) as tar:
        tar.extractall(tmp, filter="data")
    return next(p for p in [Path(tmp), *Path(tmp).iterdir()] if (p / "train").is_dir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="CIFAR-10 image folder (train/<class>/*.jpg)")
    p.add_argument("--tarball", default=os.environ.get("NCTOOLS_CIFAR10_TARBALL"), help="or the same as a .tar.gz")
    p.add_argument("--out", type=Path, default=Path("runs/lightning_c10lt"))
    p.add_argument("--n-max", type=int, default=100)
    p.add_argument("--ratio", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    L.seed_everything(0)
    mean, std = normalization("cifar10")
    plain = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    augmented = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), plain])
    with tempfile.TemporaryDirectory() as tmp:
        root = cifar_root(args, tmp)
        train = torchvision.datasets.ImageFolder(str(root / "train"), transform=augmented)
        counts = lt_class_counts(args.n_max, len(train.classes), args.ratio)
        keep = lt_subset_indices(train.targets, counts).tolist()
        # The callback measures the same images without augmentation: NC is about the data as it is.
        measure = Subset(torchvision.datasets.ImageFolder(str(root / "train"), transform=plain), keep)
        meta = {"dataset": "cifar10", "imbalance_ratio": args.ratio, "method": "ce"}
        callback = NeuralCollapseCallback(DataLoader(measure, batch_size=256), out=args.out, class_counts=counts,
                                          class_names=train.classes, metadata=meta)
        trainer = L.Trainer(max_epochs=args.epochs, callbacks=[callback], default_root_dir=str(args.out),
                            logger=L.pytorch.loggers.CSVLogger(str(args.out), name="logs"),
                            enable_checkpointing=False, log_every_n_steps=1)
        trainer.fit(LitResNet(len(train.classes), args.lr),
                    DataLoader(Subset(train, keep), batch_size=64, shuffle=True, num_workers=2))
    nctools_main(["track", str(args.out), "--out", str(args.out / "nctools-track")])


if __name__ == "__main__":
    main()
