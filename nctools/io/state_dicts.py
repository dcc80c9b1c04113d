"""Which tensors of a saved file are a model's weights: state dicts as frameworks save them.

A file may hold the state dict itself or nest it (Lightning's ``{"state_dict": ...}``, a trainer's
``{"model": ...}``), and its keys may carry a wrapper's prefix: ``module.`` (DataParallel, DDP),
``_orig_mod.`` (``torch.compile``), ``model.`` or ``net.`` (a LightningModule's attribute), or
several of them. :func:`readings` lists every such interpretation; the caller keeps the one that
loads into its architecture (:func:`choose` by key names), and ``state_key`` / ``strip_prefix``
(``--state-key``, ``--strip-prefix``) settle the cases where none or several do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["WRAPPERS", "Reading", "readings", "choose", "ambiguous"]

WRAPPERS = ("module", "_orig_mod", "model", "net")  # attribute names that wrap a model's own keys
_SHOWN = 3  # keys named in an error, of each kind
TOP = "the top level"


@dataclass
class Reading:
    """One interpretation of a file as a state dict: where the tensors were, the prefix removed."""

    where: str  # TOP or the quoted key of the nested dict
    prefix: str  # "" when no prefix was removed
    state: dict[str, torch.Tensor]

    @property
    def how(self) -> str:
        """E.g. "'state_dict' entry minus prefix 'model.'", "minus prefix 'module.'", "the top level"."""
        parts = [f"{self.where} entry"] if self.where != TOP else []
        parts += [f"minus prefix {self.prefix!r}"] if self.prefix else []
        return " ".join(parts) or TOP


def _tensors(obj: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _wrapper_prefixes(state: dict) -> list[str]:
    """Every run of wrapper names at the start of some key: "module.", "module._orig_mod.", ..."""
    found = set()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts) - 1):
            if parts[i] not in WRAPPERS:
                break
            found.add(".".join(parts[: i + 1]) + ".")
    return sorted(found, key=lambda p: (len(p), p))


def readings(contents: dict, error: Callable[[str], Exception], state_key: str | None = None,
             strip_prefix: str | None = None) -> list[Reading]:
    """The interpretations of ``contents`` (a file's top-level dict) as a state dict, the plain one first.

    Without ``state_key``: the top level's tensors and each nested dict of tensors; without
    ``strip_prefix``: each as it is and without each wrapper prefix its keys start with (keys
    without that prefix are left out). ``error(problem)`` builds the exception for a file that
    holds no tensors or a ``state_key`` that names none.
    """
    if state_key is not None:
        value = contents.get(state_key)
        if not isinstance(value, dict) or not _tensors(value):
            nested = sorted(k for k, v in contents.items() if isinstance(v, dict) and _tensors(v))
            raise error(f"--state-key {state_key!r} names no dict of tensors in it; "
                        + (f"its dicts of tensors are {', '.join(map(repr, nested))}" if nested
                           else "it holds no nested dict of tensors"))
        sources = [(repr(state_key), _tensors(value))]
    else:
        sources = [(TOP, _tensors(contents))]
        sources += [(repr(k), _tensors(v)) for k, v in contents.items() if isinstance(v, dict)]
        sources = [(where, state) for where, state in sources if state]
    if not sources:
        raise error("holds no tensors: it is neither a dump, a checkpoint nor a state dict")
    if strip_prefix is not None and strip_prefix and not strip_prefix.endswith("."):
        strip_prefix += "."
    found = []
    for where, state in sources:
        for prefix in [strip_prefix] if strip_prefix is not None else ["", *_wrapper_prefixes(state)]:
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if stripped:
                found.append(Reading(where, prefix, stripped))
    if not found:
        raise error(f"no key starts with the prefix {strip_prefix!r} given by --strip-prefix")
    return found


def _distinct(found: list[Reading]) -> list[Reading]:
    """``found`` without readings of the very same tensors under the same names (a dict saved twice)."""
    seen, out = set(), []
    for reading in found:
        identity = tuple(sorted((k, id(v)) for k, v in reading.state.items()))
        if identity not in seen:
            seen.add(identity)
            out.append(reading)
    return out


def ambiguous(found: list[Reading], arch: str) -> str:
    """The problem of several readings that all load."""
    return (f"the weights fit the architecture {arch} in {len(found)} ways ({'; '.join(r.how for r in found)}); "
            "choose one with --state-key KEY and --strip-prefix P")


def _names(keys: set[str]) -> str:
    shown = sorted(keys)[:_SHOWN]
    return ", ".join(shown) + (f" and {len(keys) - len(shown)} more" if len(keys) > len(shown) else "")


def choose(found: list[Reading], expected: set[str], arch: str, error: Callable[[str], Exception]) -> Reading:
    """The one reading whose keys are exactly ``expected`` (the architecture's state-dict keys); none
    or several raise ``error(problem)``, naming the closest reading's missing and unexpected keys."""
    fits = _distinct([r for r in found if set(r.state) == expected])
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise error(ambiguous(fits, arch))
    closest = max(found, key=lambda r: (len(expected & set(r.state)), -len(set(r.state) - expected)))
    missing, unexpected = expected - set(closest.state), set(closest.state) - expected
    parts = [f"lacks {len(missing)} of its {len(expected)} keys ({_names(missing)})" if missing else "",
             f"has {len(unexpected)} keys it does not know ({_names(unexpected)})" if unexpected else ""]
    problem = (f"the weights do not fit the architecture {arch}: the closest reading ({closest.how}) "
                      f"{' and '.join(p for p in parts if p)}; pass --state-key KEY or --strip-prefix P "
                      "if the weights are elsewhere in the file")
    raise error(problem)
