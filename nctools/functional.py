"""The functional metrics (``nc1``, ``nc2``, ``nc3``, ``nc4``, ``icpa``); they live in
:mod:`nctools.core.functional` and are importable from here as ``nctools.functional``."""
from .core.functional import icpa, nc1, nc2, nc3, nc4

__all__ = ["nc1", "nc2", "nc3", "nc4", "icpa"]
