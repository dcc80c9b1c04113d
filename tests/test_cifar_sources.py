"""Where the real-data tests find CIFAR-10 (tests/helpers/cifar.py): each source, and the reasons given
when there is none."""
from __future__ import annotations

import pickle
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import cifar
from tests.helpers.cifar import CACHED_TARBALL, MISSING, ROOT_ENV, TARBALL_ENV, Source, find_source, image_folder
from tests.helpers.paths import REPO


def _image_folder(root, per_class=2):
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / split / name / f"{i:04d}.jpg")
    return root


def _torchvision_download(root):
    """torchvision's CIFAR-10 layout (cifar-10-batches-py: python pickles), with 3 classes and 6 images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"bird", b"cat"]}, f)
    rng = np.random.default_rng(0)
    for name, labels in (("data_batch_1", [0, 1, 2, 0]), ("data_batch_2", [2, 2]), ("test_batch", [1, 0, 2])):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"labels": labels}, f)
    return root


def test_the_tarball_comes_first_and_is_extracted(tmp_path):
    folder = _image_folder(tmp_path / "src" / "cifar10")
    tarball = tmp_path / "c.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")  # one top-level folder around the splits
    source = find_source({TARBALL_ENV: str(tarball), ROOT_ENV: str(folder)})
    assert source == Source("tarball", tarball)
    root = image_folder(source, tmp_path / "out")
    assert sorted(p.name for p in (root / "train").iterdir()) == ["cat", "dog"]
    assert len(list((root / "test" / "dog").glob("*.jpg"))) == 2


def test_xdist_workers_share_one_extraction_and_a_half_made_one_is_made_again(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")
    folder = _image_folder(tmp_path / "src" / "cifar10")
    tarball = tmp_path / "c.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
    shared = tmp_path / "shared"
    (shared / "cifar10" / "half").mkdir(parents=True)  # a worker that died while extracting, before the path
    calls = []

    def slow_extract(source, scratch):  # slow enough that the two workers overlap
        calls.append(scratch)
        time.sleep(0.3)
        return image_folder(source, scratch)

    monkeypatch.setattr(cifar, "image_folder", slow_extract)
    roots = []
    workers = [threading.Thread(target=lambda: roots.append(cifar.shared_image_folder(Source("tarball", tarball),
                                                                                       shared))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert calls == [shared / "cifar10"] and roots[0] == roots[1] == shared / "cifar10" / "cifar10"
    assert sorted(p.name for p in (roots[0] / "train").iterdir()) == ["cat", "dog"]
    assert not (shared / "cifar10" / "half").exists()


def test_an_image_folder_is_used_as_it_is(tmp_path):
    folder = _image_folder(tmp_path / "cifar10")
    source = find_source({ROOT_ENV: str(folder)})
    assert source == Source("folder", folder) and image_folder(source, tmp_path / "unused") == folder


def test_torchvisions_download_becomes_the_same_layout(tmp_path):
    source = find_source({ROOT_ENV: str(_torchvision_download(tmp_path / "tv"))})
    assert source.kind == "torchvision"
    root = image_folder(source, tmp_path / "out")
    counts = {f"{split}/{c.name}": sorted(p.name for p in c.iterdir()) for split in ("train", "test")
              for c in sorted((root / split).iterdir())}
    assert counts == {"train/airplane": ["0000.jpg", "0001.jpg"], "train/bird": ["0000.jpg"],
                      "train/cat": ["0000.jpg", "0001.jpg", "0002.jpg"], "test/airplane": ["0000.jpg"],
                      "test/bird": ["0000.jpg"], "test/cat": ["0000.jpg"]}
    with Image.open(root / "train" / "cat" / "0002.jpg") as image:  # the last image of data_batch_2
        assert image.size == (32, 32) and image.format == "JPEG"


@pytest.mark.parametrize("env, reason", [
    ({TARBALL_ENV: "/no/such.tar.gz"}, f"{TARBALL_ENV}=/no/such.tar.gz: no such file"),
    ({ROOT_ENV: "/no/such/folder"}, f"{ROOT_ENV}=/no/such/folder: holds neither train/ and test/ image folders"),
])
def test_a_named_source_that_is_not_there_says_so(env, reason):
    assert find_source(env).startswith(reason)


def test_without_any_source_the_reason_names_the_variable():
    if CACHED_TARBALL.is_file():
        pytest.skip(f"{CACHED_TARBALL} is there, so it is the source")
    assert find_source({}) == MISSING and TARBALL_ENV in MISSING and "\n" not in MISSING


def test_an_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown CIFAR-10 source kind 'zip'"):
        image_folder(Source("zip", tmp_path), tmp_path)


pytest_plugins = ["pytester"]


def test_without_the_data_realdata_tests_skip_and_under_ci_they_fail(pytester, monkeypatch):
    """What tests/conftest.py does with a test that needs the images: skipped with the reason on a fresh
    clone, an error under CI=true."""
    if CACHED_TARBALL.is_file():
        pytest.skip(f"{CACHED_TARBALL} is there, so the data is never missing here")
    for name in (TARBALL_ENV, ROOT_ENV, "CI"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_needs_images="def test_reads(cifar10_root):\n    assert cifar10_root.is_dir()\n")
    fresh = pytester.runpytest("-rs", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    fresh.assert_outcomes(skipped=1)
    fresh.stdout.fnmatch_lines([f"SKIPPED*{MISSING}*"])
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    ci.assert_outcomes(errors=1)
    ci.stdout.fnmatch_lines(["*CI=true: needs the CIFAR-10 copy*"])
