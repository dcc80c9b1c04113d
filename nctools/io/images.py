"""Images for feature extraction: normalisation statistics and labelled image datasets.

Used by ``nctools analyze WEIGHTS --arch NAME --data DIR`` (and by trainers that share the same
statistics): a CIFAR root in torchvision's layout or an image folder of ``<class>/<image>`` files,
resized, centre-cropped and normalised. torchvision is needed only here, and imported on use.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

from ..errors import first_line

__all__ = ["CIFAR_STATS", "IMAGENET_STATS", "normalization", "image_dataset", "import_torchvision"]

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]

# Per-channel mean and std of the training images: LDAM-DRW's values (Cao et al. 2019) for CIFAR,
# torchvision's ImageNet values for everything else.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalization(dataset: str) -> Stats:
    """(mean, std) for a dataset name: CIFAR's own for ``cifar10`` / ``cifar100``, else ImageNet's.

    >>> normalization("cifar100")[0]
    (0.5071, 0.4865, 0.4409)
    """
    return CIFAR_STATS.get(dataset, IMAGENET_STATS)


def import_torchvision(error: Callable[[str], Exception]) -> ModuleType:
    """torchvision, or ``error(problem)`` raised when it is missing (it is an optional extra)."""
    try:
        import torchvision
    except ImportError as err:
        raise error(f"reading images and torchvision models needs torchvision ({err}); "
                    "pip install 'nctools[train]'") from err
    return torchvision


def image_dataset(root: Path, split: str, size: int, stats: Stats, error) -> tuple[object, Sequence[str]]:
    """(dataset, class names) from a CIFAR root (torchvision layout) or an image folder.

    ``root/<split>/`` is used when it exists, ``root`` itself otherwise. ``error(path, problem)``
    builds the exception raised for unreadable data.
    """
    torchvision = import_torchvision(lambda problem: error(root, problem))
    from torchvision.transforms import v2

    if not root.is_dir():
        raise error(root, "data root not found (expected an image folder or a CIFAR root)")
    transform = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(*stats)])
    train = split == "train"
    for folder, cls in (("cifar-10-batches-py", torchvision.datasets.CIFAR10),
                        ("cifar-100-python", torchvision.datasets.CIFAR100)):
        if (root / folder).is_dir():
            try:
                ds = cls(str(root), train=train, transform=transform, download=False)
            except RuntimeError as err:
                raise error(root / folder, f"is not a readable CIFAR copy ({err})") from None
            return ds, list(ds.classes)
    if (root / split).is_dir():
        root = root / split
    try:
        ds = torchvision.datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise error(root, f"is not an image folder of <class>/<image> files ({first_line(err)})") from None
    return ds, list(ds.classes)
