"""Sizes a config asks for, checked before any work: the memory its largest tensors need must fit.

A config is untrusted input: ``data.n_max=1e9`` or ``model.feature_dim=1e8`` is a valid integer that
would end, minutes later, in an out-of-memory kill or a traceback naming no key. The estimate below
counts only what a key makes certain (the free-feature table with its gradient and momentum, the
classifier, the synthetic labels, one batch of input images, the HyCon heads), so it is a floor:
a config refused here could never have run on this machine, and the message names the keys that ask
for most of the memory.

>>> from allnc_train.schema import Config
>>> check_sizes(Config(), memory=16 << 30)
>>> cfg = Config()
>>> cfg.data.dataset, cfg.model.arch, cfg.model.feature_dim = "synthetic", "ufm", 10**8
>>> check_sizes(cfg, memory=16 << 30)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
allnc_train.schema.ConfigError: config keys 'data.n_max' = None and 'model.feature_dim' = 100000000 ask for ...
"""
from __future__ import annotations

import os

import numpy as np

from .schema import Config, ConfigError, conventional_views, get_key

__all__ = ["check_sizes", "machine_memory"]

_FLOAT = 4  # bytes of a float32
_TRAINED = 3  # a trained tensor, its gradient and its SGD momentum
_FEATURE_DIMS = {"resnet32": 64, "resnet50": 2048, "resnext50": 2048}  # per width for resnet32


def machine_memory() -> int | None:
    """Physical memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _synthetic_samples(cfg: Config) -> int:
    """Samples of the synthetic LDAM subset: sum over classes of n_max * beta^(-c/(C-1))."""
    d = cfg.data
    c = np.arange(d.num_classes, dtype=np.float64)
    sizes = (d.n_max or 500) * (1.0 / d.imbalance_ratio) ** (c / max(d.num_classes - 1, 1))
    return int(sizes.sum())


def _needs(cfg: Config) -> list[tuple[tuple[str, ...], int, str]]:
    """(keys, bytes, what) for each tensor whose size the keys decide."""
    d, m = cfg.data, cfg.model
    dim_key = "model.width" if m.arch == "resnet32" else "model.feature_dim"
    dim = m.feature_dim if m.arch == "ufm" else _FEATURE_DIMS[m.arch] * (m.width if m.arch == "resnet32" else 1)
    classes = d.num_classes if d.dataset == "synthetic" else {"cifar10": 10, "cifar100": 100}.get(d.dataset, 8142)
    needs = [(("data.num_classes", dim_key), _TRAINED * _FLOAT * classes * dim,
              "the classifier: classes x feature dimension, with its gradient and momentum")]
    if d.dataset == "synthetic":
        n = _synthetic_samples(cfg)
        needs.append((("data.n_max",), 8 * n, "the synthetic labels: one int64 per sample"))
        if m.arch == "ufm":
            needs.append((("data.n_max", dim_key), _TRAINED * _FLOAT * n * dim,
                          "the free-feature table: samples x feature_dim, with its gradient and momentum"))
    else:
        batch = cfg.optim.batch_size * (conventional_views(cfg) + 1)  # the conventional views, the re-balancing batch
        needs.append((("optim.batch_size", "data.image_size"), _FLOAT * batch * 3 * d.image_size ** 2,
                      "one batch of input images: batch_size x views x 3 x image_size^2"))
    if m.arch == "resnet32":  # its parameters grow with the square of the width (about 0.47M at width 1)
        needs.append((("model.width",), _TRAINED * _FLOAT * 470_000 * m.width ** 2, "the ResNet-32's parameters"))
    if cfg.hycon.enabled and cfg.hycon.feature_share < 1:  # the heads are built only then
        heads = dim * m.proj_hidden + 2 * m.proj_hidden * m.proj_dim
        needs.append(((dim_key, "model.proj_hidden"), _TRAINED * _FLOAT * heads, "the HyCon projection heads"))
    return needs


def check_sizes(cfg: Config, memory: int | None = None) -> None:
    """Raise ``ConfigError`` naming the key when the tensors ``cfg`` makes certain exceed ``memory``
    (default: this machine's physical memory; nothing is checked where that is unknown)."""
    memory = machine_memory() if memory is None else memory
    if memory is None:
        return
    needs = _needs(cfg)
    total = sum(size for _, size, _ in needs)
    if total <= memory:
        return
    keys, size, what = max(needs, key=lambda need: need[1])
    named = " and ".join(f"'{key}' = {get_key(cfg, key)}" for key in keys)
    verb = "asks" if len(keys) == 1 else "ask"
    raise ConfigError(f"config key{'s' if len(keys) > 1 else ''} {named} {verb} for {_size(size)} ({what}), more than "
                      f"this machine's {_size(memory)} of memory.")


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"
