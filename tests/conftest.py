"""Shared pytest fixtures and markers: the real CIFAR-10 images (``realdata``), the GPU marker, one
torch thread."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.cifar import Source, find_source, image_folder, in_ci, shared_image_folder

# pytest-xdist's workers (the default run has one per core, setup.cfg's -n auto) share the cores: one torch
# thread each where there are no more cores than workers, as torch's threads spin-wait when oversubscribed.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if XDIST_WORKERS:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // XDIST_WORKERS))

# Where the real images come from (tests/helpers/cifar.py): NCTOOLS_CIFAR10_TARBALL, NCTOOLS_CIFAR10_ROOT or
# the checkout's .cache/cifar10-jpeg.tar.gz; otherwise the one-line reason why they are missing.
CIFAR10 = find_source()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    # Without the data a fresh clone still passes: its real-data tests are skipped, with the reason. Under CI
    # they stay in, and the cifar10_root fixture fails them.
    skip_data = None if isinstance(CIFAR10, Source) or in_ci() else pytest.mark.skip(reason=CIFAR10)
    for item in items:
        if "cifar10_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
            if skip_data is not None:
                item.add_marker(skip_data)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """CIFAR-10 as an image folder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), made once per run:
    under pytest-xdist once for all workers, in the folder above their own temporary folders."""
    if not isinstance(CIFAR10, Source):
        pytest.fail(f"CI=true: {CIFAR10}")
    if XDIST_WORKERS:
        return shared_image_folder(CIFAR10, tmp_path_factory.getbasetemp().parent)
    return image_folder(CIFAR10, tmp_path_factory.mktemp("cifar10"))


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the duration of a test: on a shared 2-core machine torch's worker
    threads spin-wait under load (measured: the trainer's tests 5x slower with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
