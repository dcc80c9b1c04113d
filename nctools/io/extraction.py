"""``nctools.extract``: penultimate features of any ``torch.nn.Module``, through a forward hook.

The features are what enters the classifier layer, so a pre-forward hook on that layer sees them
whatever the model's ``forward`` does before it (pooling, flattening, dropout in eval mode).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.device import resolve_device
from ..core.validation import check_inputs
from .dump_contents import Dump, stringify_metadata

__all__ = ["extract", "find_layer", "FeatureTap", "batch_xy"]


def _unwrap(model: nn.Module) -> nn.Module:
    # DataParallel and DistributedDataParallel keep the real model in .module. Running that module
    # directly on one device is what an evaluation pass wants: DataParallel would run the hook on
    # replicas in several threads (features out of order), DDP would sync buffers for nothing.
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def find_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """``(name, module)`` of the named layer, or of the last ``nn.Linear`` registered in ``model``."""
    model = _unwrap(model)
    if layer is not None:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise ValueError(f"the model has no layer named {layer!r}; "
                             f"its linear layers are {names or 'none'}") from None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; name the classifier layer with layer=")
    return linears[-1]


def _not_once(name: str, calls: int) -> str:
    if calls == 0:
        return (f"layer {name!r} was not called in the forward pass (a model that applies its classifier "
                "functionally, with F.linear, hides it from the hook); pass layer= naming a module that runs")
    return f"layer {name!r} ran {calls} times in one forward pass; extract needs a layer that runs once"


def batch_xy(batch, index: int) -> tuple:
    """``(inputs, labels)`` of one loader batch: a pair, or a dict with image/input/x and label/target/y."""
    if isinstance(batch, dict):
        keys = [k for k in ("image", "input", "x") if k in batch], [k for k in ("label", "target", "y") if k in batch]
        if keys[0] and keys[1]:
            return batch[keys[0][0]], batch[keys[1][0]]
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"batch {index} of the loader is a {type(batch).__name__}; extract needs (inputs, labels) "
                    "pairs or dicts with 'image' and 'label'")


@torch.no_grad()
def extract(
    model: nn.Module,
    loader: Iterable,
    layer: str | None = None,
    device: str | torch.device = "auto",
    *,
    progress: bool | None = None,
    metadata: dict | None = None,
) -> Dump:
    """Run ``model`` over ``loader`` and return a :class:`~nctools.Dump` of the classifier's inputs.

    Args:
        model: any module, possibly wrapped in ``DataParallel`` / ``DistributedDataParallel``.
        loader: yields ``(inputs, labels)`` (or dicts with ``image`` and ``label``).
        layer: dotted name of the classifier layer (default: the last ``nn.Linear``); its input
            is the feature, its ``weight`` and ``bias`` the classifier.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        progress: progress bar on stderr (default: when stderr is a terminal).
        metadata: values to keep with the dump (``split``, ``dataset``, ``class_names`` ...): strings,
            numbers, booleans, lists or dicts.

    The model runs in eval mode without gradients and is put back in its former mode.

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> data = TensorDataset(torch.randn(10, 4), torch.tensor([0, 1] * 5))
    >>> dump = extract(net, DataLoader(data, batch_size=4), device="cpu")
    >>> tuple(dump.features.shape), tuple(dump.weight.shape), dump.metadata["layer"]
    ((10, 3), (2, 3), '2')
    """
    dev = resolve_device(device)
    if progress is None:
        progress = sys.stderr.isatty()
    features, labels = [], []
    with FeatureTap(model, layer) as tap:
        tap.net.to(dev)
        for i, batch in enumerate(tqdm(loader, desc="extract", unit="batch", disable=not progress, leave=False,
                                       file=sys.stderr)):
            x, y = batch_xy(batch, i)
            features.append(tap.features(lambda: tap.net(x.to(dev))).cpu())
            labels.append(torch.as_tensor(y).reshape(-1).long().cpu())
    if not features:
        raise ValueError("the loader yielded no batches")
    weight, bias = tap.classifier()
    checked = check_inputs(torch.cat(features), torch.cat(labels), weight, bias)
    meta = {"layer": tap.name, **(metadata or {})}  # with their own types, as a loaded dump holds them
    stringify_metadata(meta)  # the check save_dump makes: every value can be stored (a TypeError names the key)
    return Dump(checked.features, checked.labels, checked.weight, checked.bias, None, meta)


class FeatureTap:
    """The input of a model's classifier layer, one forward pass at a time, through a pre-hook.

    Inside ``with FeatureTap(model) as tap:`` the model is in eval mode; ``tap.features(call)`` runs
    ``call()`` (any forward pass of the model, e.g. ``lambda: model(**batch)``) without gradients and
    returns what entered the classifier layer, ``(B, d)`` float32 on the model's device. The former
    train / eval mode comes back on exit.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> with FeatureTap(net) as tap:
    ...     tuple(tap.features(lambda: net(torch.randn(5, 4))).shape), tap.name
    ((5, 3), '1')
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.net = _unwrap(model)
        self.name, self.head = find_layer(self.net, layer)
        self._captured: list[torch.Tensor] = []

    def __enter__(self) -> FeatureTap:
        self._was_training = self.net.training
        self.net.eval()
        self._handle = self.head.register_forward_pre_hook(self._grab)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self.net.train(self._was_training)

    def _grab(self, _module, inputs) -> None:
        self._captured.append(inputs[0].detach().flatten(1).float())  # (B, d)

    def features(self, call: Callable[[], object]) -> torch.Tensor:
        before = len(self._captured)
        with torch.no_grad():
            call()
        if len(self._captured) != before + 1:
            calls = len(self._captured) - before
            del self._captured[before:]
            raise ValueError(_not_once(self.name, calls))
        return self._captured.pop()

    def classifier(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The layer's ``weight`` (C, d) and ``bias`` (C,) as float32 CPU tensors (None where absent)."""
        weight, bias = getattr(self.head, "weight", None), getattr(self.head, "bias", None)
        weight = weight.detach().float().cpu() if isinstance(weight, torch.Tensor) else None
        bias = bias.detach().float().cpu() if isinstance(bias, torch.Tensor) and weight is not None else None
        return weight, bias
