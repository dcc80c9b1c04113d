"""Where the real-data tests find CIFAR-10, and how it becomes the image folder they read
(``root/train/<class>/NNNN.jpg``, ``root/test/<class>/NNNN.jpg``).

The first source that is set wins:

- ``NCTOOLS_CIFAR10_TARBALL``: the JPEG copy of CIFAR-10 as a ``.tar.gz`` of that image folder
  (extracted once per test session, once for all of pytest-xdist's workers);
- ``NCTOOLS_CIFAR10_ROOT``: a folder holding either that image folder (``train/`` and ``test/``, used
  as it is) or torchvision's CIFAR-10 download (``cifar-10-batches-py/``, written once per session as
  JPEG files of the same quality, 75, as the copy's: a test's numbers may still differ slightly, as
  they were measured on the copy);
- neither: ``.cache/cifar10-jpeg.tar.gz`` in the checkout (git-ignored; ``tools/device_check.sh``
  reads the same file), if it is there.

Without any, the tests that need the data are skipped with :data:`MISSING` as the reason, except
under CI (``CI=true``), where they fail: CI must run them. Nothing here downloads.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.paths import REPO

TARBALL_ENV = "NCTOOLS_CIFAR10_TARBALL"
ROOT_ENV = "NCTOOLS_CIFAR10_ROOT"
CACHED_TARBALL = REPO / ".cache" / "cifar10-jpeg.tar.gz"
TORCHVISION_FOLDER = "cifar-10-batches-py"  # the folder of python batches a torchvision CIFAR-10 root holds
MISSING = (f"needs the CIFAR-10 copy: set {TARBALL_ENV} to cifar10-jpeg.tar.gz, or {ROOT_ENV} to an image folder "
           "or torchvision's CIFAR-10 download (README, 'Tests')")


@dataclass(frozen=True)
class Source:
    kind: str  # "tarball", "folder" or "torchvision"
    path: Path


def in_ci() -> bool:
    """Whether the tests run under CI, which sets ``CI=true`` (GitHub Actions, GitLab, .ci/run)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def find_source(env=os.environ) -> Source | str:
    """The CIFAR-10 source the environment names, or the one-line reason why there is none.

    >>> find_source({"NCTOOLS_CIFAR10_TARBALL": "/no/such.tar.gz"})
    'NCTOOLS_CIFAR10_TARBALL=/no/such.tar.gz: no such file'
    """
    if env.get(TARBALL_ENV):
        path = Path(env[TARBALL_ENV])
        return Source("tarball", path) if path.is_file() else f"{TARBALL_ENV}={path}: no such file"
    if env.get(ROOT_ENV):
        path = Path(env[ROOT_ENV])
        if (path / "train").is_dir() and (path / "test").is_dir():
            return Source("folder", path)
        if (path / TORCHVISION_FOLDER).is_dir():
            return Source("torchvision", path)
        return f"{ROOT_ENV}={path}: holds neither train/ and test/ image folders nor {TORCHVISION_FOLDER}/"
    if CACHED_TARBALL.is_file():
        return Source("tarball", CACHED_TARBALL)
    return MISSING


def image_folder(source: Source, scratch: Path) -> Path:
    """The image folder of ``source``: the folder itself, or one made under ``scratch`` (an empty folder)."""
    if source.kind not in ("tarball", "folder", "torchvision"):
        raise ValueError(f"unknown CIFAR-10 source kind {source.kind!r}")
    if source.kind == "folder":
        return source.path
    if source.kind == "torchvision":
        return _from_torchvision(source.path, scratch)
    with tarfile.open(source.path) as tar:
        tar.extractall(scratch, filter="data")
    # The archive may wrap the two splits in one top-level folder.
    found = [p for p in [scratch, *scratch.iterdir()] if (p / "train").is_dir()]
    if not found:
        raise ValueError(f"{source.path} holds no train/ folder")
    return found[0]


def shared_image_folder(source: Source, shared: Path) -> Path:
    """:func:`image_folder` made once for several processes (pytest-xdist's workers) under ``shared``, a
    folder they all see: the first to hold the lock makes it, the others wait for it and read where it is.
    Without ``fcntl`` (Windows) each process makes its own."""
    try:
        import fcntl
    except ImportError:
        return image_folder(source, _fresh(shared / f"cifar10-{os.getpid()}"))
    with open(shared / "cifar10.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        made = shared / "cifar10.path"
        if not made.is_file():  # a process that failed half-way left no path: make it again, from empty
            made.write_text(str(image_folder(source, _fresh(shared / "cifar10"))))
        return Path(made.read_text())


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def _from_torchvision(root: Path, scratch: Path) -> Path:
    """torchvision's CIFAR-10 download (its python batches) as JPEG files, numbered per class in
    batch order as the JPEG copy is laid out."""
    import pickle

    import numpy as np
    from PIL import Image

    folder = root / TORCHVISION_FOLDER
    # The batches are pickles (CIFAR's own format, which torchvision reads the same way): the user's own
    # download, read by a test, never a file from elsewhere.
    with open(folder / "batches.meta", "rb") as f:
        classes = [name.decode() for name in pickle.load(f, encoding="bytes")[b"label_names"]]
    for split, pattern in (("train", "data_batch_*"), ("test", "test_batch")):
        seen = [0] * len(classes)
        for batch in sorted(folder.glob(pattern)):
            with open(batch, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for pixels, label in zip(images, entry[b"labels"]):
                out = scratch / split / classes[label] / f"{seen[label]:04d}.jpg"
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(out, quality=75)
                seen[label] += 1
    return scratch
