"""nctools: neural-collapse diagnostics for classifiers trained on imbalanced data.

>>> import torch, nctools
>>> from nctools.geometry import simplex_etf
>>> means = simplex_etf(5, 8, dtype=torch.float32)
>>> labels = torch.arange(5).repeat(4)
>>> nctools.analyze(means[labels], labels, weight=means).summary["nc2_cos_std_means"] < 1e-7
True
"""
from . import functional
from .analysis import analyze, auto_chunk_size
from .dump import Dump, DumpError, load_dump, save_dump
from .result import SUMMARY_KEYS, NCResult
from .statistics import NeuralCollapse

__version__ = "0.1.0"

__all__ = [
    "analyze", "auto_chunk_size", "functional", "NCResult", "NeuralCollapse", "SUMMARY_KEYS",
    "Dump", "DumpError", "load_dump", "save_dump", "__version__",
]
