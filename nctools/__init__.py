"""nctools: neural-collapse diagnostics for classifiers trained on imbalanced data.

>>> import torch, nctools
>>> from nctools.core.geometry import simplex_etf
>>> means = simplex_etf(5, 8, dtype=torch.float32)
>>> labels = torch.arange(5).repeat(4)
>>> nctools.analyze(means[labels], labels, weight=means).summary["nc2_cos_std_means"] < 1e-7
True
"""
from __future__ import annotations

import importlib

# The one place the version is written: setup.cfg reads it (version = attr:), both commands print it
# (--version), and CHANGELOG.md's top entry names it.
__version__ = "0.3.7"

# Public names and the modules they live in. Imported on first use (PEP 562), so that
# `nctools --help` does not wait for torch.
_HOME = {
    "analyze": ".core.analysis",
    "auto_chunk_size": ".core.analysis",
    "NCResult": ".core.result",
    "SUMMARY_KEYS": ".core.keys",
    "Summary": ".core.keys",
    "NeuralCollapse": ".core.statistics",
    "simplex_etf": ".core.geometry",
    "Dump": ".io.dump_contents",
    "DumpError": ".io.dump_contents",
    "load_dump": ".io.dump",
    "save_dump": ".io.dump",
    "extract": ".io.extraction",
}
__all__ = [*_HOME, "functional", "__version__"]


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name == "functional":
        return importlib.import_module(".functional", __name__)
    raise AttributeError(f"module 'nctools' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
