"""Shared pytest fixtures: the offline CIFAR-10 copy and the GPU marker."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The offline JPEG copy of CIFAR-10 (a .tar.gz of train/<class>/*.jpg, test/<class>/*.jpg): by default the
# team's copy beside the checkout, which CI lays out too; NCTOOLS_CIFAR10_TARBALL points elsewhere.
CIFAR10_TARBALL = Path(
    os.environ.get("NCTOOLS_CIFAR10_TARBALL", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """CIFAR-10 as an image folder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), extracted once per run."""
    if not CIFAR10_TARBALL.is_file():
        pytest.fail(f"the offline CIFAR-10 copy is missing: {CIFAR10_TARBALL} (set NCTOOLS_CIFAR10_TARBALL)")
    out = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(CIFAR10_TARBALL) as tar:
        tar.extractall(out, filter="data")
    # The archive may wrap the two splits in one top-level folder.
    candidates = [p for p in [out, *out.iterdir()] if (p / "train").is_dir()]
    if not candidates:
        pytest.fail(f"{CIFAR10_TARBALL} holds no train/ folder")
    return candidates[0]


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the duration of a test: on a shared 2-core machine torch's worker
    threads spin-wait under load (measured: the trainer's tests 5x slower with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
