"""CUDA runs equal CPU runs (skipped without a CUDA device)."""
from __future__ import annotations

import math

import pytest
import torch

import nctools
from tests.helpers.datagen import lt_counts, make_features

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_cuda_equals_cpu(dtype):
    feats, labels, w, b = make_features(lt_counts(400, 20, 100), 64, dtype=dtype, spread=0.5, seed=4)
    cpu = nctools.analyze(feats, labels, w.float(), b.float(), device="cpu")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a user who enabled TF32 globally
    try:
        gpu = nctools.analyze(feats.cuda(), labels.cuda(), w.float().cuda(), b.float().cuda(), device="cuda")
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.get_float32_matmul_precision() == previous
    for key, value in cpu.summary.items():
        if isinstance(value, float):
            assert math.isclose(gpu.summary[key], value, rel_tol=1e-6, abs_tol=1e-9), key
        else:
            assert gpu.summary[key] == value, key


def test_nearly_collapsed_on_cuda_is_exact():
    feats, labels, w, b = make_features([60, 30, 20, 12, 8], 32, spread=3e-4, offset=20.0,
                                        dtype=torch.float32, seed=5)
    cpu = nctools.analyze(feats, labels, w, b, device="cpu")
    gpu = nctools.analyze(feats, labels, w, b, device="cuda")  # CPU chunks moved to the GPU
    assert math.isclose(gpu.summary["nc1"], cpu.summary["nc1"], rel_tol=1e-6)
