"""Datasets: CIFAR-10/100 (image folder or torchvision), LT split files, and labels-only data.

The long-tailed CIFAR subsets follow LDAM-DRW (Cao et al. 2019, ``imbalance_cifar.py``), which
every long-tailed paper reuses: n_c = int(n_max * (1/beta)^(c/(C-1))); numpy's legacy generator
seeded with 0; for each class in label order the class's indices are shuffled and the first n_c
kept; the test set is untouched. Because each class's shuffle does not depend on beta, the subsets
for different beta are nested. (On the JPEG image-folder copy the indices enumerate the files in
sorted order, so the counts match the literature exactly and the chosen images differ from a
torchvision-ordered run.)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nctools.core.audit import DEFAULT_GROUPS, assign_groups
from nctools.io.images import CIFAR_STATS, normalization

from .config import ConfigError, DataConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
MANY_ABOVE, FEW_BELOW = DEFAULT_GROUPS


# ---------------------------------------------------------------------------------------------
# Pure functions: long-tailed counts, subsets, shot groups
# ---------------------------------------------------------------------------------------------

def lt_class_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """LDAM's per-class sizes n_c = int(n_max * (1/beta)^(c/(C-1))).

    >>> sum(lt_class_counts(5000, 10, 100))
    12406
    """
    if num_classes == 1:
        return [int(n_max)]
    factor = 1.0 / imbalance_ratio
    return [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def lt_subset_indices(labels: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset: per class (in label order) shuffle, keep the first n_c.

    Uses numpy's legacy ``RandomState(seed)``, the generator behind LDAM's ``np.random.seed(0)``.
    """
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    keep = []
    for c, n_c in enumerate(counts):
        idx = np.where(y == c)[0]
        if n_c > len(idx):
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than the {n_c} the subset asks for.")
        rng.shuffle(idx)
        keep.append(idx[:n_c])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def shot_groups(counts: Sequence[int], many_above: int = MANY_ABOVE, few_below: int = FEW_BELOW) -> list[str]:
    """'many' / 'medium' / 'few' for each class from its training count (nctools' class groups).

    >>> shot_groups([500, 100, 20, 19])
    ['many', 'medium', 'medium', 'few']
    """
    return assign_groups(torch.as_tensor(list(counts)), (many_above, few_below)).tolist()


def first_per_class(labels: Sequence[int], k: int) -> np.ndarray:
    """Indices of the first ``k`` samples of each class, in their original order."""
    y = np.asarray(labels, dtype=np.int64)
    seen: dict[int, int] = {}
    keep = []
    for i, c in enumerate(y.tolist()):
        if seen.get(c, 0) < k:
            seen[c] = seen.get(c, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Readers: image folders and 'path label' split files
# ---------------------------------------------------------------------------------------------

def read_image_folder(split_dir: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files of ``split_dir/<class>/*`` sorted by class name then file name: (paths, labels, classes)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"image folder {split_dir} does not exist.")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"image folder {split_dir} has no class sub-folders.")
    paths, labels = [], []
    for c, name in enumerate(classes):
        with os.scandir(split_dir / name) as entries:  # scandir + string sort: fast on 50,000 files
            files = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        paths += [split_dir / name / f for f in files]
        labels += [c] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_split_file(split_file: str | Path, image_root: str | Path) -> tuple[list[Path], np.ndarray]:
    """Parse an ImageNet-LT / Places-LT / iNaturalist split file of ``relative/path label`` lines."""
    split_file, image_root = Path(split_file), Path(image_root)
    if not split_file.is_file():
        raise FileNotFoundError(f"split file {split_file} does not exist.")
    paths, labels = [], []
    for lineno, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(f"{split_file}, line {lineno}: expected 'path label' with a non-negative integer label, "
                             f"got {line.strip()!r}.")
        paths.append(image_root / parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise ValueError(f"split file {split_file} lists no images.")
    return paths, np.asarray(labels, dtype=np.int64)


def read_image(path: str | Path) -> torch.Tensor:
    """One image file as a uint8 RGB tensor (3, H, W), decoded by Pillow (torchvision.io's decoders
    are deprecated since torchvision 0.29)."""
    from PIL import Image

    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def decode_images(paths: Sequence[Path], size: int | None = None) -> torch.Tensor:
    """Decode image files into one uint8 tensor (N, 3, H, W); all images must share one size."""
    images = [read_image(p) for p in paths]
    if not images:
        return torch.zeros(0, 3, size or 32, size or 32, dtype=torch.uint8)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images to preload must share one size, found {sorted(shapes)[:3]}.")
    return torch.stack(images)


# ---------------------------------------------------------------------------------------------
# Datasets and transforms
# ---------------------------------------------------------------------------------------------

class ViewDataset(Dataset):
    """Base: ``views`` None gives (x, y); an integer V gives (x stacked as (V, ...), y)."""

    views: int | None = None
    transform: Callable | None = None

    def _views(self, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        t = self.transform or (lambda x: x)
        if self.views is None:
            return t(load())
        img = load()
        return torch.stack([t(img) for _ in range(self.views)])


class TensorImages(ViewDataset):
    """Images held in memory as uint8 (N, 3, H, W): CIFAR-sized data."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform=None, views: int | None = None):
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.views = transform, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self._views(lambda: self.images[i]), self.labels[i]


class FileImages(ViewDataset):
    """Images decoded from disk on access: ImageNet-sized data."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, transform=None, views: int | None = None):
        self.paths, self.labels = list(paths), torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.views = transform, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self._views(lambda: read_image(self.paths[i])), self.labels[i]


class IndexSamples(ViewDataset):
    """Labels only: the input of sample i is the index i (for the unconstrained-features model)."""

    def __init__(self, labels: np.ndarray, views: int | None = None):
        self.labels, self.views = torch.as_tensor(labels, dtype=torch.int64), views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self._views(lambda: torch.tensor(i, dtype=torch.int64)), self.labels[i]


def image_transform(dataset: str, train: bool, augment: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchvision v2 transform from a uint8 (3, H, W) tensor to a normalised float tensor."""
    from torchvision.transforms import v2

    mean, std = normalization(dataset)
    if dataset in CIFAR_STATS:
        augment_now = train and augment == "standard"
        geometric = [v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()] if augment_now else []
        if size != 32:
            geometric = [v2.Resize(size, antialias=True)] + geometric
    elif train and augment == "standard":
        geometric = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometric = [v2.Resize(int(round(size * 256 / 224)), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*geometric, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


# ---------------------------------------------------------------------------------------------
# The bundle the training loop uses
# ---------------------------------------------------------------------------------------------

@dataclass
class DataBundle:
    train: Dataset  # augmented, ``views`` views per sample: (V, ...) inputs
    train_eval: Dataset  # the same training samples, plain transform, no view axis (for dumps)
    test: Dataset | None  # evaluation set, plain transform; None for labels-only data
    train_labels: np.ndarray  # (N,) int64
    class_counts: list[int]  # training samples per class
    class_names: list[str]
    imbalance_ratio: float  # the nominal beta of an LDAM subset, else the measured n_max / n_min

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)


def _lt_subset(cfg: DataConfig, labels: np.ndarray) -> np.ndarray:
    """Indices of the LDAM long-tailed subset of a balanced training set."""
    full = np.bincount(labels)
    n_max = cfg.n_max if cfg.n_max is not None else int(full.max())
    if n_max > full.min():
        raise ConfigError(f"data.n_max {n_max} exceeds the smallest class of the full training set "
                          f"({int(full.min())}).")
    return lt_subset_indices(labels, lt_class_counts(n_max, len(full), cfg.imbalance_ratio), cfg.subset_seed)


def _test_subset(cfg: DataConfig, labels: np.ndarray) -> np.ndarray:
    return first_per_class(labels, cfg.test_per_class) if cfg.test_per_class else np.arange(len(labels))


def _load_cifar(cfg: DataConfig, train: bool, select: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """uint8 images (n, 3, 32, 32), labels and class names of the samples ``select(labels)`` keeps.

    From an image folder only the kept files are decoded, so a small subset loads in a moment.
    """
    root = Path(cfg.root)
    if cfg.source == "torchvision":
        import torchvision

        cls = torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
        try:
            ds = cls(str(root), train=train, download=cfg.download)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(f"{cfg.dataset} is not under {root} ({exc}); set data.download to true.") from None
        labels = np.asarray(ds.targets, dtype=np.int64)
        keep = select(labels)
        images = torch.from_numpy(np.asarray(ds.data)[keep]).permute(0, 3, 1, 2).contiguous()  # (n, 3, 32, 32)
        return images, labels[keep], list(ds.classes)
    paths, labels, names = read_image_folder(root / ("train" if train else "test"))
    keep = select(labels)
    return decode_images([paths[i] for i in keep]), labels[keep], names


def _bundle(train: ViewDataset, train_eval: Dataset, test: Dataset | None, labels: np.ndarray, names: list[str],
            imbalance_ratio: float | None = None) -> DataBundle:
    counts = np.bincount(labels, minlength=len(names)).tolist()
    empty = [names[c] for c, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(f"the training set has no samples of class(es) {', '.join(empty[:5])}.")
    beta = imbalance_ratio if imbalance_ratio is not None else max(counts) / min(counts)
    return DataBundle(train, train_eval, test, labels, counts, names, beta)


def build_data(cfg: DataConfig, views: int) -> DataBundle:
    """Everything the loop needs from ``cfg``; training inputs carry ``views`` augmented views."""
    transform = lambda train: image_transform(cfg.dataset, train, cfg.augment, cfg.image_size)  # noqa: E731
    if cfg.dataset == "synthetic":
        labels = np.repeat(np.arange(cfg.num_classes), lt_class_counts(cfg.n_max or 500, cfg.num_classes,
                                                                       cfg.imbalance_ratio))
        names = [f"class_{c}" for c in range(cfg.num_classes)]
        return _bundle(IndexSamples(labels, views), IndexSamples(labels), None, labels, names, cfg.imbalance_ratio)
    if cfg.dataset in ("cifar10", "cifar100"):
        images, labels, names = _load_cifar(cfg, True, lambda y: _lt_subset(cfg, y))
        test_images, test_labels, _ = _load_cifar(cfg, False, lambda y: _test_subset(cfg, y))
        # An LDAM subset is named by its nominal beta (int() truncation moves the measured ratio on small n_max).
        return _bundle(TensorImages(images, labels, transform(True), views),
                       TensorImages(images, labels, transform(False)),
                       TensorImages(test_images, test_labels, transform(False)), labels, names, cfg.imbalance_ratio)
    paths, labels = read_split_file(cfg.train_split, cfg.root)
    test_paths, test_labels = read_split_file(cfg.test_split, cfg.root)
    names = [str(c) for c in range(int(max(labels.max(), test_labels.max())) + 1)]
    keep = _test_subset(cfg, test_labels)
    test = FileImages([test_paths[i] for i in keep], test_labels[keep], transform(False))
    return _bundle(FileImages(paths, labels, transform(True), views), FileImages(paths, labels, transform(False)),
                   test, labels, names)
