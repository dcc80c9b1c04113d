"""Two processes under torch.distributed (gloo, CPU) give the same result as one process."""
from __future__ import annotations

import math

import torch

import nctools
from tests.helpers.datagen import make_features, two_passes
from tests.helpers.launch import run_processes

DTYPES = {"float64": (torch.float64, 1e-12), "float32": (torch.float32, 1e-6)}


def _data(dtype):
    return make_features([50, 31, 20, 9, 4], 7, seed=21, dtype=dtype)


def _worker(rank: int, world: int) -> dict:
    results = {}
    for name, (dtype, _) in DTYPES.items():
        feats, labels, w, b = _data(dtype)
        mine = slice(rank, None, world)  # an uneven, interleaved shard per rank
        acc = nctools.NeuralCollapse(5, w, b, device="cpu")
        results[name] = two_passes(acc, feats[mine], labels[mine]).to_dict()
    return results


def test_two_gloo_processes_equal_one(tmp_path):
    everything = run_processes(_worker, tmp_path=tmp_path)
    for name, (dtype, rtol) in DTYPES.items():
        # float64 features: equal to float64 rounding; float32: the float32 products of pass 2
        # run on other chunk shapes in the two runs, so equal to float32 rounding.
        merged = everything[name]
        single = nctools.analyze(*_data(dtype), device="cpu").to_dict()
        assert merged["summary"].keys() == single["summary"].keys()
        for key, value in single["summary"].items():
            if isinstance(value, float):
                assert math.isclose(merged["summary"][key], value, rel_tol=rtol, abs_tol=1e-12), (name, key)
            else:
                assert merged["summary"][key] == value, (name, key)
        assert [r["count"] for r in merged["per_class"]] == [r["count"] for r in single["per_class"]]


def _idle_rank_worker(rank: int, world: int) -> dict:
    feats, labels, w, b = _data(torch.float32)
    acc = nctools.NeuralCollapse(5, w, b, device="cpu")
    mine = slice(0, None if rank == 0 else 0)  # rank 1 gets no data at all
    return two_passes(acc, feats[mine], labels[mine]).to_dict()


def test_a_rank_without_data_still_takes_part(tmp_path):
    merged = run_processes(_idle_rank_worker, tmp_path=tmp_path)
    single = nctools.analyze(*_data(torch.float32), device="cpu").to_dict()
    assert merged["summary"] == single["summary"]
