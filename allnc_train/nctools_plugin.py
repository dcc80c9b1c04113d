"""What ``nctools`` needs to read this trainer's files, registered as entry points in setup.cfg.

- ``read_checkpoint`` (group ``nctools.sources``): ``nctools analyze run/checkpoints/epoch_0200.pt``
  rebuilds the model from the config stored in the checkpoint and extracts features on the data
  that config names (or ``--data``); the unconstrained-features model's table is the features.
- ``resnet32`` (group ``nctools.architectures``): ``nctools analyze weights.pt --arch resnet32
  --data DIR`` for a plain state dict of this trainer's CIFAR ResNet-32.

The dependency runs one way: this module imports nctools, nctools finds it through the entry points.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nctools import Dump
from nctools.errors import first_line
from nctools.io.images import normalization
from nctools.io.sources import (
    Architecture,
    SourceOptions,
    extract_features,
    load_weights,
    source_error,
    with_classifier,
)

from .checkpoint import CHECKPOINT_FORMAT, model_from_checkpoint

__all__ = ["read_checkpoint", "resnet32"]

_FAMILY = CHECKPOINT_FORMAT.split("/")[0] + "/"  # any version of the format is ours to read or refuse


def read_checkpoint(path: Path, contents: dict, options: SourceOptions) -> Dump | None:
    """The dump of an allnc_train checkpoint, or None for any other file."""
    if not str(contents.get("format", "")).startswith(_FAMILY):
        return None
    from . import data
    from .config import method_label
    from .schema import ConfigError

    try:
        model, cfg = model_from_checkpoint(contents)
        counts, names = list(contents["class_counts"]), list(contents["class_names"])
    except (KeyError, TypeError) as err:
        raise source_error(path, f"is an allnc_train checkpoint without a usable {err} entry") from err
    except (ConfigError, ValueError) as err:
        raise source_error(path, f"the stored config is invalid ({err})") from err
    except RuntimeError as err:  # load_state_dict: the weights do not fit the stored config
        raise source_error(path, f"its weights do not fit its stored config ({first_line(err)})") from err
    split = options.split or "train"
    if options.data is not None:
        cfg.data.root = str(options.data)
    # Analysing is reading: a stranger's checkpoint never starts a download into a folder it names.
    cfg.data.download = False
    if cfg.data.dataset != "synthetic" and not Path(cfg.data.root).exists():
        raise source_error(cfg.data.root, "data root not found (the dataset the checkpoint was trained on); "
                                          "pass --data with its location")
    try:
        bundle = data.build_data(cfg.data, views=1)
    except (OSError, ValueError, RuntimeError) as err:
        raise source_error(cfg.data.root, f"cannot read the checkpoint's dataset ({err})") from err
    meta = {"epoch": contents.get("epoch"), "split": split, "dataset": cfg.data.dataset, "arch": cfg.model.arch,
            "imbalance_ratio": bundle.imbalance_ratio, "method": method_label(cfg), "class_names": names}
    meta = {k: v for k, v in meta.items() if v is not None}
    if cfg.model.arch == "ufm":  # free features: sample i's input is its index i
        if split != "train":
            raise source_error(path, "an unconstrained-features (ufm) model has only a train split")
        with torch.no_grad():
            feats = model.eval().features(torch.arange(len(bundle.train_labels)))
        dump = Dump(feats.float(), torch.as_tensor(bundle.train_labels).long(), None, None, None, {})
    else:
        dataset = bundle.train_eval if split == "train" else bundle.test
        dump = extract_features(_with_linear_head(model), dataset, options)
    return with_classifier(dump, model.weight, model.bias, counts, meta)


def resnet32(path: Path, state: dict) -> Architecture:
    """This trainer's CIFAR ResNet-32 (any width, with or without HyCon heads) from its state dict."""
    from .models import NCModel, ResNetCifar

    try:
        num_classes, _ = state["classifier.weight"].shape
        width = state["backbone.conv1.weight"].shape[0] // 16
    except KeyError as err:
        raise source_error(path, f"is not a state dict of allnc_train's ResNet-32: it has no {err} tensor") from None
    projection = "projector.0.weight" in state
    sizes = {}
    if projection:
        sizes = dict(proj_hidden=state["projector.0.weight"].shape[0], proj_dim=state["projector.3.weight"].shape[0])
    model = NCModel(ResNetCifar(5, width), num_classes, bias="classifier.bias" in state, projection=projection,
                    **sizes)
    load_weights(path, model, state)
    return Architecture(_with_linear_head(model), 32, normalization("cifar10"))


def _with_linear_head(model) -> torch.nn.Module:
    """backbone -> nn.Linear holding the classifier: NCModel applies its (possibly fixed ETF)
    classifier functionally, so there is no Linear call for extract's hook to see."""
    head = torch.nn.Linear(model.feature_dim, model.num_classes, bias=model.bias is not None)
    with torch.no_grad():
        head.weight.copy_(model.weight)
        if model.bias is not None:
            head.bias.copy_(model.bias)
    return torch.nn.Sequential(model.backbone, head)
