"""Dumps read from disk chunk by chunk (lazy=True) and sharded dumps (part-*.safetensors)."""
from __future__ import annotations

import pytest
import torch

import nctools
from nctools.io.rows import ConcatRows, SafetensorsRows
from tests.helpers.datagen import make_features

FEATS, LABELS, W, B = make_features([40, 25, 12, 6], 9, dtype=torch.float32, seed=2)
SPLITS = [(0, 30), (30, 31), (31, 83)]


def write_shards(folder, features=FEATS, epochs=(3, 3, 3), weights=(W, W, W)):
    folder.mkdir()
    for i, ((a, b), epoch, w) in enumerate(zip(SPLITS, epochs, weights)):
        nctools.save_dump(folder / f"part-{i:04d}.safetensors", features[a:b], LABELS[a:b], w, B,
                          metadata={"epoch": epoch})
    return folder


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lazy_safetensors_reads_rows_on_demand(tmp_path, dtype):
    path = nctools.save_dump(tmp_path / "e.safetensors", FEATS.to(dtype), LABELS, W, B)
    dump = nctools.load_dump(path, lazy=True)
    assert isinstance(dump.features, SafetensorsRows)
    assert dump.features.shape == (83, 9) and dump.features.dtype == dtype and dump.num_samples == 83
    assert torch.equal(dump.features[10:20], FEATS.to(dtype)[10:20])
    assert torch.equal(dump.features.materialize(), FEATS.to(dtype))
    lazy = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, chunk_size=16)
    eager = nctools.analyze(FEATS.to(dtype), LABELS, W, B, chunk_size=16)
    assert lazy.summary == eager.summary


def test_shards_load_as_one_dump(tmp_path):
    folder = write_shards(tmp_path / "epoch_0003")
    eager = nctools.load_dump(folder)
    assert torch.equal(eager.features, FEATS) and torch.equal(eager.labels, LABELS) and eager.epoch == 3
    lazy = nctools.load_dump(folder, lazy=True)
    assert isinstance(lazy.features, ConcatRows) and lazy.features.shape == (83, 9)
    assert torch.equal(lazy.features[25:35], FEATS[25:35])  # a read across shard boundaries
    one = nctools.analyze(FEATS, LABELS, W, B, chunk_size=16)
    assert nctools.analyze(lazy.features, lazy.labels, lazy.weight, lazy.bias, chunk_size=16).summary == one.summary


def test_shards_must_agree(tmp_path):
    with pytest.raises(nctools.DumpError, match=r"part-0001.safetensors: it is from epoch 4, but part-0000"):
        nctools.load_dump(write_shards(tmp_path / "a", epochs=(3, 4, 3)))
    with pytest.raises(nctools.DumpError, match=r"part-0002.safetensors: its weight differs from that of part-0000"):
        nctools.load_dump(write_shards(tmp_path / "b", weights=(W, W, W * 2)))


@pytest.mark.parametrize("lazy", [False, True])
def test_shards_of_mixed_dtypes_are_refused_eagerly_as_lazily(tmp_path, lazy):
    """Eager loading used to promote float16 and float32 shards to one dtype that the lazy reader (and the CLI)
    refused: both now refuse them, naming the shard."""
    folder = write_shards(tmp_path / "mixed")
    a, b = SPLITS[1]
    nctools.save_dump(folder / "part-0001.safetensors", FEATS[a:b].half(), LABELS[a:b], W, B,
                      metadata={"epoch": 3})
    with pytest.raises(nctools.DumpError, match=r"part-0001.safetensors: its features are torch.float16, but those "
                                                r"of part-0000.safetensors are torch.float32"):
        nctools.load_dump(folder, lazy=lazy)


def test_nan_in_a_lazy_dump_is_found_while_reading(tmp_path):
    feats = FEATS.clone()
    feats[50, 3] = float("nan")
    path = nctools.save_dump(tmp_path / "ok.safetensors", FEATS, LABELS, W, B)
    from safetensors.torch import save_file

    save_file({"features": feats, "labels": LABELS, "classifier.weight": W}, str(tmp_path / "nan.safetensors"))
    dump = nctools.load_dump(tmp_path / "nan.safetensors", lazy=True)  # no scan at load time
    with pytest.raises(ValueError, match=r"features\[50, 3\] = nan"):
        nctools.analyze(dump.features, dump.labels, dump.weight, chunk_size=20)
    assert nctools.load_dump(path, lazy=True).features.shape == (83, 9)


def test_lazy_truncated_file_is_a_dump_error(tmp_path):
    path = nctools.save_dump(tmp_path / "t.safetensors", FEATS, LABELS, W, B)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(nctools.DumpError, match="t.safetensors"):
        nctools.load_dump(path, lazy=True)


def test_row_sources_refuse_fancy_indexing(tmp_path):
    path = nctools.save_dump(tmp_path / "e.safetensors", FEATS, LABELS, W, B)
    rows = nctools.load_dump(path, lazy=True).features
    with pytest.raises(TypeError, match="contiguous row slices only"):
        rows[::2]
