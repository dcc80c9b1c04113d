"""Reading images and their labels: image folders, ``path label`` split files, image files."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_SUFFIXES", "decode_images", "read_image", "read_image_folder", "read_split_file"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


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
