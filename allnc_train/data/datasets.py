"""Datasets: CIFAR-10/100 (image folder or torchvision), LT split files, and labels-only data,
bundled as the training loop needs them (:func:`build_data`).

CIFAR's training set is reduced to the long-tailed subset of ``data.n_max`` and
``data.imbalance_ratio`` (:mod:`allnc_train.data.longtail`, after LDAM-DRW). With
``data.val_fraction`` > 0 the evaluation set is a held-out share of the training samples and the
test set is never read (not even its files listed); a class left without a training sample is an
error. Labels-only data (``synthetic``) has no unseen samples to hold out (its free features exist
only for training samples), so f > 0 is refused there.

Training views (``views`` V > 1, HyCon): view 0 gets the standard transform, views 1..V-1 the
SimCLR transform of :func:`simclr_transform` when ``data.view_augment`` is ``simclr`` (else the
standard one too); ``data.augment: none`` leaves every view plain. The batched pipeline
(:mod:`allnc_train.data.pipeline`) follows the same rule on the device.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nctools.io.images import CIFAR_STATS, normalization

from ..schema import ConfigError, DataConfig
from .augment import SIMCLR_CIFAR, SIMCLR_IMAGENET, SimCLRParams
from .longtail import first_per_class, holdout_split, lt_class_counts, lt_subset_indices
from .readers import decode_images, read_image, read_image_folder, read_split_file

# ---------------------------------------------------------------------------------------------
# Datasets and transforms
# ---------------------------------------------------------------------------------------------

class ViewDataset(Dataset):
    """Base: ``views`` None gives (x, y); an integer V gives (x stacked as (V, ...), y): view 0 by
    ``transform``, views 1..V-1 by ``view_transform`` (``transform`` when None)."""

    views: int | None = None
    transform: Callable | None = None
    view_transform: Callable | None = None

    def _views(self, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        t = self.transform or (lambda x: x)
        if self.views is None:
            return t(load())
        img = load()
        other = self.view_transform or t
        return torch.stack([t(img)] + [other(img) for _ in range(self.views - 1)])


class TensorImages(ViewDataset):
    """Images held in memory as uint8 (N, 3, H, W): CIFAR-sized data."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform=None, views: int | None = None,
                 view_transform=None):
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.views, self.view_transform = transform, views, view_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self._views(lambda: self.images[i]), self.labels[i]


class FileImages(ViewDataset):
    """Images decoded from disk on access: ImageNet-sized data."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, transform=None, views: int | None = None,
                 view_transform=None):
        self.paths, self.labels = list(paths), torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.views, self.view_transform = transform, views, view_transform

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


def simclr_params(dataset: str) -> SimCLRParams:
    """SimCLR's CIFAR settings for cifar10 / cifar100, its ImageNet settings otherwise (augment.py)."""
    return SIMCLR_CIFAR if dataset in CIFAR_STATS else SIMCLR_IMAGENET


def simclr_transform(dataset: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchvision v2 SimCLR view (Chen et al. 2020) of a uint8 (3, H, W) tensor, normalised float:
    RandomResizedCrop (scale, ratio), flip, ColorJitter with probability ``jitter_p``, RandomGrayscale,
    and (ImageNet settings only) Gaussian blur; the settings are :func:`simclr_params`'s."""
    from torchvision.transforms import v2

    p = simclr_params(dataset)
    mean, std = normalization(dataset)
    steps = [v2.RandomResizedCrop(size, scale=p.scale, ratio=p.ratio, antialias=True),
             v2.RandomHorizontalFlip(p.flip_p),
             v2.RandomApply([v2.ColorJitter(p.brightness, p.contrast, p.saturation, p.hue)], p=p.jitter_p),
             v2.RandomGrayscale(p.grayscale_p)]
    if p.blur_p > 0:  # kernel 10% of the side, odd (SimCLR, Appendix A)
        steps.append(v2.RandomApply([v2.GaussianBlur(2 * int(0.05 * size) + 1, sigma=(0.1, 2.0))], p=p.blur_p))
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


# ---------------------------------------------------------------------------------------------
# The bundle the training loop uses
# ---------------------------------------------------------------------------------------------

@dataclass
class DataBundle:
    train: Dataset  # augmented, ``views`` views per sample: (V, ...) inputs
    train_eval: Dataset  # the same training samples, plain transform, no view axis (for dumps)
    test: Dataset | None  # evaluation set (test split, or held-out training samples), plain; None: labels-only
    train_labels: np.ndarray  # (N,) int64
    class_counts: list[int]  # training samples per class
    class_names: list[str]
    imbalance_ratio: float  # the nominal beta of an LDAM subset, else the measured n_max / n_min
    eval_split: str = "test"  # what ``test`` holds: "test", or "val" (data.val_fraction's held-out samples)

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
            imbalance_ratio: float | None = None, eval_split: str = "test") -> DataBundle:
    counts = np.bincount(labels, minlength=len(names)).tolist()
    empty = [names[c] for c, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(f"the training set has no samples of class(es) {', '.join(empty[:5])}.")
    beta = imbalance_ratio if imbalance_ratio is not None else max(counts) / min(counts)
    return DataBundle(train, train_eval, test, labels, counts, names, beta, eval_split)


def _view_transform(cfg: DataConfig, views: int) -> Callable | None:
    """The transform of views 1..V-1: SimCLR's when asked for (and augmenting at all), else None."""
    if views > 1 and cfg.augment == "standard" and cfg.view_augment == "simclr":
        return simclr_transform(cfg.dataset, cfg.image_size)
    return None


def build_data(cfg: DataConfig, views: int) -> DataBundle:
    """Everything the loop needs from ``cfg``; training inputs carry ``views`` augmented views.

    With ``cfg.val_fraction`` > 0 the evaluation set (``test``) is the held-out share of the training
    samples (:func:`holdout_split`) and the test split is not read.
    """
    transform = lambda train: image_transform(cfg.dataset, train, cfg.augment, cfg.image_size)  # noqa: E731
    holdout = cfg.val_fraction > 0
    if cfg.dataset == "synthetic":
        if holdout:
            raise ConfigError("data.val_fraction must be 0 for data.dataset 'synthetic': the unconstrained-features "
                              "model has a free feature only for each training sample, so there is nothing to "
                              "evaluate a held-out sample on.")
        labels = np.repeat(np.arange(cfg.num_classes), lt_class_counts(cfg.n_max or 500, cfg.num_classes,
                                                                       cfg.imbalance_ratio))
        names = [f"class_{c}" for c in range(cfg.num_classes)]
        return _bundle(IndexSamples(labels, views), IndexSamples(labels), None, labels, names, cfg.imbalance_ratio)
    views_t = _view_transform(cfg, views)
    if cfg.dataset in ("cifar10", "cifar100"):
        images, labels, names = _load_cifar(cfg, True, lambda y: _lt_subset(cfg, y))
        if holdout:
            kept, held = holdout_split(labels, cfg.val_fraction, cfg.subset_seed)
            test_images, test_labels = images[held], labels[held]
            images, labels = images[kept], labels[kept]
        else:
            test_images, test_labels, _ = _load_cifar(cfg, False, lambda y: _test_subset(cfg, y))
        # An LDAM subset is named by its nominal beta (int() truncation moves the measured ratio on small n_max).
        return _bundle(TensorImages(images, labels, transform(True), views, views_t),
                       TensorImages(images, labels, transform(False)),
                       TensorImages(test_images, test_labels, transform(False)), labels, names, cfg.imbalance_ratio,
                       "val" if holdout else "test")
    paths, labels = read_split_file(cfg.train_split, cfg.root)
    if holdout:
        kept, held = holdout_split(labels, cfg.val_fraction, cfg.subset_seed)
        test_paths, test_labels = [paths[i] for i in held], labels[held]
        paths, labels = [paths[i] for i in kept], labels[kept]
        names = [str(c) for c in range(int(labels.max()) + 1)]
        keep = np.arange(len(test_labels))
    else:
        test_paths, test_labels = read_split_file(cfg.test_split, cfg.root)
        names = [str(c) for c in range(int(max(labels.max(), test_labels.max())) + 1)]
        keep = _test_subset(cfg, test_labels)
    test = FileImages([test_paths[i] for i in keep], test_labels[keep], transform(False))
    return _bundle(FileImages(paths, labels, transform(True), views, views_t),
                   FileImages(paths, labels, transform(False)), test, labels, names,
                   eval_split="val" if holdout else "test")
