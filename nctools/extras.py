"""The distribution's name and its optional parts: which extra brings what, and the one sentence that
tells a user how to install a missing one.

``import nctools`` comes from the distribution ``neural-collapse-tools`` (the registry's ``nctools``
is another project), as ``import sklearn`` comes from ``scikit-learn``. The light core (torch, numpy,
safetensors, click, tqdm, pandas, matplotlib) analyses dumps and runs the ``nctools`` command; each
extra below adds one thing. setup.cfg declares the same extras (``tests/test_packaging.py`` checks
that the two agree).

>>> install_hint("vision")
"pip install 'neural-collapse-tools[vision]'"
"""
from __future__ import annotations

__all__ = ["DISTRIBUTION", "EXTRAS", "install_hint"]

DISTRIBUTION = "neural-collapse-tools"

# extra -> what it brings
EXTRAS = {
    "vision": "torchvision and timm: models by name (nctools analyze --arch) and image folders",
    "lightning": "PyTorch Lightning, for nctools.integrations.lightning",
    "transformers": "Hugging Face transformers and accelerate, for nctools.integrations.transformers",
    "train": "torchvision and PyYAML: the allnc-train trainer",
    "dev": "every extra above, and the test and lint tools",
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (one of :data:`EXTRAS`), to end an error message with.

    >>> install_hint("torch")
    Traceback (most recent call last):
    ...
    ValueError: unknown extra 'torch'; the extras are vision, lightning, transformers, train, dev
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    return f"pip install '{DISTRIBUTION}[{extra}]'"
