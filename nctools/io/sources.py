"""Turn what a user points ``nctools analyze`` at into a :class:`~nctools.Dump`.

Three kinds of input (DESIGN "Inputs"):

- a feature dump (``.safetensors``, ``.pt``, ``.npz`` holding ``features``): read as it is;
- an ``allnc_train`` checkpoint: the model is rebuilt from the config stored in it and the
  features are extracted on the dataset the config names (or ``data=``);
- a plain state dict with ``arch=`` (a torchvision model name, or ``resnet32`` for the bundled
  trainer's ResNet-32) and ``data=`` (an image folder or a CIFAR root).

Every file is opened without running code (safetensors, ``torch.load(weights_only=True)``). Any
problem with the input raises :class:`SourceError`, one sentence naming the file.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .dump import Dump, DumpError, load_dump
from .rows import shard_paths

__all__ = ["SourceError", "SourceOptions", "load_source", "DUMP_SUFFIXES", "MODEL_SUFFIXES"]

DUMP_SUFFIXES = (".safetensors", ".pt", ".npz")
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_CHECKPOINT_PREFIX = "allnc_train.checkpoint/"
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class SourceError(DumpError):
    """The input file, the architecture or the data cannot be used: ``"<path>: <problem>."``."""


def _error(path, problem: str) -> SourceError:
    return SourceError(f"{path}: {problem.rstrip().rstrip('.')}.")


def analyze_source(path, dump: Dump, **kwargs):
    """``nctools.analyze`` of a loaded dump; a problem found while its features are read (NaN in a
    lazily read file, say) names the file like every other input error."""
    from ..core.analysis import analyze

    try:
        return analyze(dump.features, dump.labels, dump.weight, dump.bias, class_counts=dump.class_counts,
                       num_classes=dump.num_classes, **kwargs)
    except (TypeError, ValueError) as err:
        raise _error(path, str(err)) from err


@dataclass
class SourceOptions:
    """How to turn a model into features (ignored for dumps, except ``split``)."""

    arch: Optional[str] = None  # torchvision name or "resnet32"
    data: Optional[Path] = None  # image folder or CIFAR root
    split: Optional[str] = None  # "train" | "test"; None: train, or whatever a dump holds
    device: str = "auto"
    batch_size: int = 128
    image_size: Optional[int] = None  # default: 32 for resnet32, 224 for torchvision models
    progress: bool = False


def load_source(path, options: Optional[SourceOptions] = None) -> Dump:
    """A dump of the features, labels and classifier that ``path`` (with ``options``) stands for."""
    path, options = Path(path), options or SourceOptions()
    if path.is_dir():
        if shard_paths(path):  # one epoch's dump written as part-*.safetensors shards
            return _as_dump(path, options)
        raise _error(path, "is a directory; analyze takes a dump (or a folder of part-*.safetensors shards), "
                           "a checkpoint or a state dict (for a run directory use nctools track)")
    if not path.exists():
        raise _error(path, "no such file")
    suffix = path.suffix.lower()
    if suffix not in set(DUMP_SUFFIXES) | set(MODEL_SUFFIXES):
        raise _error(path, f"unsupported file type ({suffix or 'no suffix'}); expected a dump "
                           f"({', '.join(DUMP_SUFFIXES)}) or model weights ({', '.join(MODEL_SUFFIXES)})")
    if suffix == ".npz" or (suffix == ".safetensors" and "features" in _safetensors_keys(path)):
        return _as_dump(path, options)  # a dump: read once, by the dump reader and its checks
    obj = _read_tensors(path)
    if "features" in obj:
        if suffix not in DUMP_SUFFIXES:
            raise _error(path, f"holds features, but a dump file must end with {', '.join(DUMP_SUFFIXES)}")
        return _as_dump(path, options)
    if str(obj.get("format", "")).startswith(_CHECKPOINT_PREFIX):
        return _from_checkpoint(path, obj, options)
    state = _state_dict(path, obj)
    if options.arch is None:
        raise _error(path, "holds model weights but no 'features' tensor and no allnc_train config; "
                           "pass --arch (resnet32 or a torchvision model name) and --data to extract features")
    return _from_state_dict(path, state, options)


# --------------------------------------------------------------------------- reading files safely


def _as_dump(path: Path, options: SourceOptions) -> Dump:
    dump = load_dump(path, lazy=True)  # safetensors features stay on disk: analyze streams them
    if options.split is not None and dump.split is not None and dump.split != options.split:
        raise _error(path, f"the dump holds the {dump.split} split, but --split {options.split} was asked for")
    return dump


def _safetensors_keys(path: Path) -> set:
    """The tensor names in a safetensors header (reads no tensor data)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return set(f.keys())
    except (SafetensorError, OSError) as err:
        if path.stat().st_size == 0:
            raise _error(path, "the file is empty (0 bytes)") from err
        raise _error(path, f"truncated or corrupt ({type(err).__name__})") from err


def _read_tensors(path: Path) -> dict:
    """The top-level dict of a .pt-like file (or a safetensors file's tensors)."""
    if path.stat().st_size == 0:
        raise _error(path, "the file is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise _error(path, f"truncated or corrupt ({type(err).__name__})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _error(path, "could not be loaded safely: it holds Python objects other than tensors "
                           "(torch.load with weights_only=True refused it)") from err
    except Exception as err:  # torch.load's decoding errors are many and undocumented
        raise _error(path, f"truncated or corrupt ({type(err).__name__})") from err
    if not isinstance(obj, dict):
        raise _error(path, f"holds a {type(obj).__name__}, not a dict (a dump, a checkpoint or a state dict)")
    return obj


def _state_dict(path: Path, obj: dict) -> dict:
    """The tensors of a plain state dict, also when wrapped as {"state_dict": ...} or {"model": ...}."""
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise _error(path, "holds no tensors: it is neither a dump, an allnc_train checkpoint nor a state dict")
    # DataParallel / DDP checkpoints prefix every key with "module."
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- allnc_train checkpoints


def _import_trainer(path: Path):
    try:
        from allnc_train import config, data, models
    except ImportError as err:
        raise _error(path, f"is an allnc_train checkpoint, but allnc_train cannot be imported ({err})") from err
    return config, data, models


def _from_checkpoint(path: Path, ckpt: dict, options: SourceOptions) -> Dump:
    config, data, models = _import_trainer(path)
    try:
        cfg = config.from_dict(ckpt["config"])
        state, counts, names = ckpt["model"], list(ckpt["class_counts"]), list(ckpt["class_names"])
    except (KeyError, TypeError) as err:
        raise _error(path, f"is an allnc_train checkpoint without a usable {err} entry") from err
    except ValueError as err:  # allnc_train's ConfigError
        raise _error(path, f"the stored config is invalid ({err})") from err
    split = options.split or "train"
    if options.data is not None:
        cfg.data.root = str(options.data)
    if cfg.data.dataset != "synthetic" and not Path(cfg.data.root).exists():
        raise _error(cfg.data.root, "data root not found (the dataset the checkpoint was trained on); "
                                    "pass --data with its location")
    try:
        bundle = data.build_data(cfg.data, views=1)
    except (OSError, ValueError, RuntimeError) as err:
        raise _error(cfg.data.root, f"cannot read the checkpoint's dataset ({err})") from err
    model = models.build_model(cfg, len(counts), len(bundle.train_labels))
    _load_weights(path, model, state)
    meta = {"epoch": ckpt.get("epoch"), "split": split, "dataset": cfg.data.dataset, "arch": cfg.model.arch,
            "imbalance_ratio": bundle.imbalance_ratio, "method": _method_label(cfg), "class_names": names}
    meta = {k: v for k, v in meta.items() if v is not None}
    if cfg.model.arch == "ufm":  # free features: the learned table is the feature matrix itself
        if split != "train":
            raise _error(path, "an unconstrained-features (ufm) model has only a train split")
        dump = Dump(model.backbone.table.detach().float(), torch.as_tensor(bundle.train_labels).long(),
                    None, None, None, {})
    else:
        dataset = bundle.train_eval if split == "train" else bundle.test
        dump = _extract(_with_linear_head(model), dataset, options)
    return _finish(dump, model.weight, model.bias, counts, meta)


def _method_label(cfg) -> str:
    """The trainer's own label (``allnc``, ``ce+gbbn`` ...), as its dumps carry it."""
    try:
        from allnc_train.train import method_label
    except ImportError:
        return cfg.method.name
    return method_label(cfg)


def _with_linear_head(model) -> torch.nn.Module:
    """backbone -> nn.Linear holding the classifier: NCModel applies its (possibly fixed ETF)
    classifier functionally, so there is no Linear call for extract's hook to see."""
    head = torch.nn.Linear(model.feature_dim, model.num_classes, bias=model.bias is not None)
    with torch.no_grad():
        head.weight.copy_(model.weight)
        if model.bias is not None:
            head.bias.copy_(model.bias)
    return torch.nn.Sequential(model.backbone, head)


# --------------------------------------------------------------------------- state dict + --arch


def _from_state_dict(path: Path, state: dict, options: SourceOptions) -> Dump:
    if options.data is None:
        raise _error(path, "a state dict has no data of its own; pass --data (an image folder or a CIFAR root)")
    if options.arch == "resnet32":
        model = _resnet32(path, state)
        _load_weights(path, model, state)
        net, stats, size = _with_linear_head(model), _CIFAR_STATS, 32
    else:
        net, stats, size = _torchvision_model(path, state, options.arch), _IMAGENET_STATS, 224
        _load_weights(path, net, state)
    from .extraction import find_layer

    name, layer = find_layer(net)
    dataset, names = _image_dataset(Path(options.data), options.split or "train", options.image_size or size, stats)
    if len(names) != layer.weight.shape[0]:
        raise _error(options.data, f"holds {len(names)} classes but the classifier of {path.name} has "
                                   f"{layer.weight.shape[0]} rows; the data's classes must be the model's classes")
    dump = _extract(net, dataset, options)
    meta = {"split": options.split or "train", "arch": options.arch, "class_names": names, "dataset": str(options.data)}
    return _finish(dump, layer.weight, layer.bias, None, meta)


def _resnet32(path: Path, state: dict):
    _, _, models = _import_trainer(path)
    try:
        num_classes, _ = state["classifier.weight"].shape
        width = state["backbone.conv1.weight"].shape[0] // 16
    except KeyError as err:
        raise _error(path, f"is not a state dict of allnc_train's ResNet-32: it has no {err} tensor") from None
    heads = "projector.0.weight" in state
    kwargs = {}
    if heads:
        kwargs = dict(proj_hidden=state["projector.0.weight"].shape[0], proj_dim=state["projector.3.weight"].shape[0])
    return models.NCModel(models.ResNetCifar(5, width), num_classes, bias="classifier.bias" in state,
                          heads=heads, **kwargs)


def _import_torchvision(path: Path):
    try:
        import torchvision
    except ImportError as err:
        raise _error(path, f"reading images and torchvision models needs torchvision ({err}); "
                           "pip install 'nctools[train]'") from err
    return torchvision


def _torchvision_model(path: Path, state: dict, arch: str):
    torchvision = _import_torchvision(path)

    if arch not in torchvision.models.list_models():
        raise _error(path, f"unknown architecture {arch!r}; use resnet32 or a torchvision model name "
                           "such as resnet18 or resnet50")
    from .extraction import find_layer

    name, _ = find_layer(torchvision.models.get_model(arch))  # where the classifier lives, to read C from
    if f"{name}.weight" not in state:
        raise _error(path, f"has no {name}.weight tensor, so it is not a {arch} state dict")
    return torchvision.models.get_model(arch, num_classes=state[f"{name}.weight"].shape[0])


def _load_weights(path: Path, model: torch.nn.Module, state: dict) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n\t", 2)
        detail = first[1].strip() if len(first) > 1 else str(err).splitlines()[0]
        raise _error(path, f"the weights do not fit the architecture ({detail[:160]})") from None


def _image_dataset(root: Path, split: str, size: int, stats):
    """(dataset, class names) from a CIFAR root (torchvision layout) or an image folder."""
    torchvision = _import_torchvision(root)
    from torchvision.transforms import v2

    if not root.is_dir():
        raise _error(root, "data root not found (expected an image folder or a CIFAR root)")
    transform = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(*stats)])
    train = split == "train"
    for folder, cls in (("cifar-10-batches-py", torchvision.datasets.CIFAR10),
                        ("cifar-100-python", torchvision.datasets.CIFAR100)):
        if (root / folder).is_dir():
            try:
                ds = cls(str(root), train=train, transform=transform, download=False)
            except RuntimeError as err:
                raise _error(root / folder, f"is not a readable CIFAR copy ({err})") from None
            return ds, list(ds.classes)
    if (root / split).is_dir():
        root = root / split
    try:
        ds = torchvision.datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise _error(root, f"is not an image folder of <class>/<image> files ({str(err).splitlines()[0]})") from None
    return ds, list(ds.classes)


# --------------------------------------------------------------------------- shared steps


def _extract(model: torch.nn.Module, dataset, options: SourceOptions) -> Dump:
    from torch.utils.data import DataLoader

    from .extraction import extract

    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False)
    return extract(model, loader, device=options.device, progress=options.progress)


def _finish(dump: Dump, weight, bias, class_counts, meta: dict[str, Any]) -> Dump:
    """Attach the classifier, training counts and metadata (as dump metadata strings)."""
    from .dump import _stringify_metadata  # one rule for how metadata values become strings

    dump.weight = weight.detach().float().cpu()
    dump.bias = None if bias is None else bias.detach().float().cpu()
    dump.class_counts = None if class_counts is None else torch.as_tensor(class_counts, dtype=torch.int64)
    dump.metadata = _stringify_metadata(meta)
    return dump
