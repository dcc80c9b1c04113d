"""Long-tailed subsets, shot groups and the dataset readers of allnc_train.data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from allnc_train.data import (
    build_data,
    first_per_class,
    holdout_split,
    lt_class_counts,
    lt_subset_indices,
    read_split_file,
    shot_groups,
)
from allnc_train.schema import ConfigError, DataConfig


@pytest.mark.parametrize("num_classes, n_max, totals", [
    (10, 5000, {100: 12406, 50: 13996, 10: 20431, 1: 50000}),
    (100, 500, {100: 10847, 50: 12608, 10: 19573, 1: 50000}),
])
def test_lt_counts_match_the_literature(num_classes, n_max, totals):
    for beta, total in totals.items():
        counts = lt_class_counts(n_max, num_classes, beta)
        assert sum(counts) == total
        assert counts[0] == n_max and counts == sorted(counts, reverse=True)
    assert lt_class_counts(5000, 10, 100)[-1] == 50


def _ldam_reference(labels, counts):
    """LDAM-DRW's imbalance_cifar.py, verbatim in spirit: global seed 0, shuffle, keep the first n_c."""
    np.random.seed(0)
    keep = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep)


def test_subset_is_ldam_and_nested_across_beta():
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(10), 5000))  # CIFAR-like interleaved order
    subsets = {}
    for beta in (100, 50, 10, 1):
        counts = lt_class_counts(5000, 10, beta)
        idx = lt_subset_indices(labels, counts, seed=0)
        assert np.array_equal(idx, _ldam_reference(labels, counts))
        assert np.bincount(labels[idx], minlength=10).tolist() == counts
        assert len(set(idx.tolist())) == len(idx)
        subsets[beta] = set(idx.tolist())
    assert subsets[100] <= subsets[50] <= subsets[10] <= subsets[1]
    other = lt_subset_indices(labels, lt_class_counts(5000, 10, 100), seed=1)
    assert set(other.tolist()) != subsets[100]  # the subset seed matters


def test_subset_rejects_too_large_counts():
    with pytest.raises(ValueError, match="fewer than"):
        lt_subset_indices(np.array([0, 0, 1]), [2, 2])


def test_shot_groups_and_first_per_class():
    assert shot_groups([5000, 101, 100, 20, 19, 1]) == ["many", "many", "medium", "medium", "few", "few"]
    assert first_per_class([1, 0, 1, 1, 0, 2], 2).tolist() == [0, 1, 2, 4, 5]


def test_cifar10_folder_long_tailed(cifar10_root):
    cfg = DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=40, imbalance_ratio=10, test_per_class=5)
    data = build_data(cfg, views=2)
    assert data.class_counts == lt_class_counts(40, 10, 10)
    assert data.class_names[:3] == ["airplane", "automobile", "bird"] and data.num_classes == 10
    assert len(data.train) == sum(data.class_counts) == len(data.train_eval)
    x, y = data.train[0]
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, _ = data.train_eval[0]
    assert x.shape == (3, 32, 32)
    assert len(data.test) == 50 and data.test.labels.bincount().tolist() == [5] * 10
    # The subset is the LDAM subset of the sorted file list, nested inside the next beta's subset.
    bigger = build_data(DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=40, imbalance_ratio=2,
                                   test_per_class=1), views=1)
    small = {tuple(data.train_eval.images[i].flatten()[:64].tolist()) for i in range(len(data.train_eval))}
    large = {tuple(bigger.train_eval.images[i].flatten()[:64].tolist()) for i in range(len(bigger.train_eval))}
    assert small <= large


def test_full_cifar10_lt_r100_from_the_image_folder(cifar10_root):
    """The literature's subset, full size: 12,406 images, 5000 ... 50 per class."""
    data = build_data(DataConfig(dataset="cifar10", root=str(cifar10_root), imbalance_ratio=100, test_per_class=1),
                      views=1)
    assert len(data.train_eval) == 12_406 and data.class_counts[0] == 5000 and data.class_counts[-1] == 50
    assert data.train_eval.images.shape == (12_406, 3, 32, 32) and data.imbalance_ratio == 100
    assert shot_groups(data.class_counts).count("many") == 8


def test_n_max_larger_than_the_classes_is_a_config_error(cifar10_root):
    with pytest.raises(ConfigError, match="n_max 6000 exceeds"):
        build_data(DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=6000), views=1)


def test_torchvision_source_uses_its_arrays(monkeypatch, tmp_path):
    """The torchvision path (a download on a user's machine) on a stand-in dataset object."""
    import torchvision

    class FakeCIFAR10:
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, train, download):
            n = 30 if train else 4
            self.data = np.random.default_rng(0).integers(0, 255, (10 * n, 32, 32, 3), dtype=np.uint8)
            self.targets = list(np.repeat(np.arange(10), n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = build_data(DataConfig(dataset="cifar10", source="torchvision", root=str(tmp_path), imbalance_ratio=10),
                      views=1)
    assert data.class_counts == lt_class_counts(30, 10, 10) and data.class_names[0] == "c0"
    assert data.train_eval.images.shape[1:] == (3, 32, 32) and len(data.test) == 40


def _fake_split(tmp_path, counts, size=40):
    """A tiny ImageNet-LT-style split: JPEGs under root/ and a 'path label' file."""
    from PIL import Image

    root = tmp_path / "images"
    lines = []
    for c, n in enumerate(counts):
        (root / f"n{c:03d}").mkdir(parents=True)
        for i in range(n):
            img = np.random.default_rng(i).integers(0, 255, (size, size + 7, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / f"n{c:03d}" / f"{i}.JPEG", format="JPEG")
            lines.append(f"n{c:03d}/{i}.JPEG {c}")
    return root, lines


def test_split_files_read_and_decode(tmp_path):
    root, lines = _fake_split(tmp_path, [5, 3, 1])
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(lines[::2]) + "\n")
    paths, labels = read_split_file(tmp_path / "train.txt", root)
    assert len(paths) == 9 and labels.tolist() == [0] * 5 + [1] * 3 + [2]
    cfg = DataConfig(dataset="imagenet_lt", source="splits", root=str(root), train_split=str(tmp_path / "train.txt"),
                     test_split=str(tmp_path / "test.txt"), image_size=24)
    data = build_data(cfg, views=2)
    assert data.class_counts == [5, 3, 1] and data.imbalance_ratio == 5
    x, y = data.train[8]
    assert x.shape == (2, 3, 24, 24) and int(y) == 2
    assert data.test[0][0].shape == (3, 24, 24) and len(data.test) == 5


@pytest.mark.parametrize("text, message", [("a.jpg\n", "line 1"), ("a.jpg x\n", "line 1"), ("\n", "lists no images")])
def test_split_file_errors(tmp_path, text, message):
    (tmp_path / "s.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_split_file(tmp_path / "s.txt", tmp_path)


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_split_file(tmp_path / "none.txt", tmp_path)


# ---------------------------------------------------------------------------------------------
# Held-out evaluation (data.val_fraction) and view transforms
# ---------------------------------------------------------------------------------------------

def test_holdout_split_is_disjoint_per_class_and_seeded():
    labels = np.repeat(np.arange(5), [200, 60, 11, 3, 2])
    kept, held = holdout_split(labels, 0.1, seed=0)
    assert not set(kept.tolist()) & set(held.tolist()) and len(kept) + len(held) == len(labels)
    assert np.bincount(labels[held], minlength=5).tolist() == [20, 6, 1, 1, 1]  # round(0.1 n), at least one
    assert np.array_equal(held, np.sort(held)) and np.array_equal(kept, np.sort(kept))
    again, other = holdout_split(labels, 0.1, seed=0)[1], holdout_split(labels, 0.1, seed=1)[1]
    assert np.array_equal(again, held) and not np.array_equal(other, held)
    with pytest.raises(ConfigError, match="holds out all 1 training sample"):
        holdout_split(np.array([0, 0, 0, 1]), 0.5)


def test_val_fraction_holds_out_training_images_and_never_reads_the_test_set(cifar10_root, tmp_path):
    root = tmp_path / "cifar_train_only"  # the train split only: reading test/ would fail
    root.mkdir()
    (root / "train").symlink_to(cifar10_root / "train", target_is_directory=True)
    cfg = DataConfig(dataset="cifar10", root=str(root), n_max=20, imbalance_ratio=10, val_fraction=0.2)
    data = build_data(cfg, views=1)
    full = build_data(DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=20, imbalance_ratio=10,
                                 test_per_class=1), views=1)
    assert data.eval_split == "val" and full.eval_split == "test"
    held_counts = np.bincount(data.test.labels.numpy(), minlength=10)
    assert (held_counts >= 1).all()
    assert (np.asarray(data.class_counts) + held_counts).tolist() == full.class_counts
    rows = lambda images: {bytes(im.numpy().tobytes()) for im in images}  # noqa: E731
    train_rows, held_rows = rows(data.train_eval.images), rows(data.test.images)
    assert not train_rows & held_rows and train_rows | held_rows == rows(full.train_eval.images)
    again = build_data(cfg, views=1)
    assert torch.equal(again.test.images, data.test.images)  # deterministic from data.subset_seed


def test_val_fraction_on_split_files_and_synthetic(tmp_path):
    root, lines = _fake_split(tmp_path, [6, 4, 2], size=16)
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(dataset="imagenet_lt", source="splits", root=str(root), train_split=str(tmp_path / "train.txt"),
                     test_split=str(tmp_path / "missing.txt"), image_size=16, val_fraction=0.25)
    data = build_data(cfg, views=1)  # the test split file does not exist: it is not read
    assert data.class_counts == [4, 3, 1] and data.eval_split == "val"
    assert data.test.labels.tolist() == [0, 0, 1, 2]
    assert not {str(p) for p in data.test.paths} & {str(p) for p in data.train.paths}
    with pytest.raises(ConfigError, match="synthetic"):
        build_data(DataConfig(dataset="synthetic", val_fraction=0.1), views=1)


def test_hycon_views_of_the_loader_path_are_standard_then_simclr(cifar10_root):
    from torchvision.transforms import v2

    cfg = DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=10, imbalance_ratio=2, test_per_class=1)
    data = build_data(cfg, views=3)
    steps = [type(t) for t in data.train.view_transform.transforms]
    assert v2.RandomResizedCrop in steps and v2.RandomGrayscale in steps and v2.GaussianBlur not in steps
    assert v2.RandomCrop in [type(t) for t in data.train.transform.transforms]
    x, _ = data.train[0]
    assert x.shape == (3, 3, 32, 32)
    same = build_data(DataConfig(dataset="cifar10", root=str(cifar10_root), n_max=10, imbalance_ratio=2,
                                 test_per_class=1, view_augment="standard"), views=3)
    assert same.train.view_transform is None
