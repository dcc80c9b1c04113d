"""Images for feature extraction: normalisation statistics, the preprocessing that turns an image
into a model's input, and labelled image datasets.

Used by ``nctools analyze WEIGHTS --arch NAME --data DIR`` (and by trainers that share the same
statistics): a CIFAR root in torchvision's layout or an image folder of ``<class>/<image>`` files,
resized, centre-cropped and normalised as a :class:`Preprocessing` says. torchvision is needed only
here, and imported on use.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from ..errors import first_line
from ..extras import install_hint

__all__ = ["CIFAR_STATS", "IMAGENET_STATS", "Preprocessing", "describe_preprocessing", "normalization",
           "image_dataset", "import_torchvision"]

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


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model's input: resize the shorter side to ``resize`` (default: ``size``,
    the whole image) with ``interpolation``, centre-crop ``size`` x ``size``, scale to [0, 1] and
    normalise by ``mean`` and ``std`` per channel.

    ``transform``, when set, is used as it is (a callable from a PIL image to a normalised float
    tensor, e.g. the user's own); ``make`` builds the transform from the fields instead of
    torchvision's v2 pipeline (timm's ``create_transform``), and may crop otherwise (``crop``: timm's
    ``squash`` or ``border``, recorded as such). ``name`` says where either came from.

    >>> Preprocessing(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).describe()
    '32 px (resize 32, centre crop, bilinear), mean 0.5,0.5,0.5, std 0.25,0.25,0.25'
    """

    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None
    interpolation: str = "bilinear"
    crop: str = "center"  # center; or timm's squash / border, which its transform (make) carries out
    transform: Callable | None = field(default=None, compare=False, repr=False)
    make: Callable[[Preprocessing], Callable] | None = field(default=None, compare=False, repr=False)
    name: str | None = None
    assumed: bool = False  # a guess (not read from the weights, not given by the user)

    def __post_init__(self):
        if self.crop != "center" and self.make is None and self.transform is None:
            raise ValueError(f"crop {self.crop!r} needs a make that carries it out; the built-in pipeline "
                             "centre-crops only")

    def build(self) -> Callable:
        """The transform: image -> normalised float tensor (C, H, W)."""
        if self.transform is not None:
            return self.transform
        if self.make is not None:
            return self.make(self)
        import_torchvision(ValueError)
        from torchvision.transforms import InterpolationMode, v2

        return v2.Compose([v2.ToImage(), v2.Resize(self.resize or self.size, InterpolationMode(self.interpolation),
                                                   antialias=True),
                           v2.CenterCrop(self.size), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])

    def record(self) -> dict:
        """What was used, as plain JSON values (for dump metadata and ``metrics.json``)."""
        if self.transform is not None:
            return {"transform": self.name}
        out = {"size": self.size, "resize": self.resize or self.size, "crop": self.crop,
               "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}
        if self.name:
            out["transform"] = self.name
        if self.assumed:
            out["assumed"] = True
        return out

    def describe(self) -> str:
        """One line: size, resize, crop, interpolation, mean and std (or the transform's name)."""
        return describe_preprocessing(self.record())


# How the crop modes read in a report header (timm's names: a squash resize ignores the aspect ratio).
CROP_WORDS = {"center": "centre crop", "squash": "squashed to a square, centre crop",
              "border": "longest side resized, padded, centre crop"}


def describe_preprocessing(record: dict) -> str:
    """The one-line form of :meth:`Preprocessing.record` (what a report header shows).

    >>> describe_preprocessing({"transform": "mine:make"})
    'transform mine:make'
    """
    if "size" not in record:
        return f"transform {record.get('transform')}"

    def numbers(values) -> str:
        return ",".join(f"{v:g}" for v in values)

    crop = CROP_WORDS.get(record.get("crop", "center"), f"{record.get('crop')} crop")
    text = (f"{record['size']} px (resize {record.get('resize', record['size'])}, {crop}, "
            f"{record.get('interpolation', 'bilinear')}), mean {numbers(record['mean'])}, std {numbers(record['std'])}")
    if record.get("transform"):
        text += f", {record['transform']}"
    return text + (", assumed" if record.get("assumed") else "")


def import_torchvision(error: Callable[[str], Exception]) -> ModuleType:
    """torchvision, or ``error(problem)`` raised when it is missing (it is an optional extra)."""
    try:
        import torchvision
    except ImportError as err:
        raise error(f"reading images and torchvision models needs torchvision ({err}); "
                    f"{install_hint('vision')}") from err
    return torchvision


# The side of the square images a model is fed: no classifier in use takes more than a few hundred pixels, and
# a batch of 128 images of 4096 x 4096 is already 25 GB of floats.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096


def image_dataset(root: Path, split: str, preprocessing: Preprocessing, error) -> tuple[object, Sequence[str]]:
    """(dataset, class names) from a CIFAR root (torchvision layout) or an image folder, each image
    passed through ``preprocessing``.

    ``root/<split>/`` is used when it exists, ``root`` itself otherwise. ``error(path, problem)``
    builds the exception raised for unreadable data.
    """
    torchvision = import_torchvision(lambda problem: error(root, problem))
    if not root.is_dir():
        raise error(root, "data root not found (expected an image folder or a CIFAR root)")
    transform = preprocessing.build()
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
        ds = torchvision.datasets.ImageFolder(str(root), transform=transform, loader=_image_loader(error))
    except (FileNotFoundError, OSError) as err:
        raise error(root, f"is not an image folder of <class>/<image> files ({first_line(err)})") from None
    return ds, list(ds.classes)


def _image_loader(error) -> Callable[[str], object]:
    """ImageFolder's loader (the file as an RGB PIL image), with a problem in one file (truncated, not an
    image, a decompression bomb: PIL's guard against images of absurd size) raised as ``error(file, ...)``."""
    from PIL import Image
    from torchvision.datasets.folder import default_loader

    def load(path: str):
        try:
            return default_loader(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise error(Path(path), f"is not a readable image ({type(err).__name__}: {first_line(err)})") from None
    return load
