"""Turn what a user points ``nctools analyze`` at into one checked :class:`~nctools.Dump`.

The kinds of input, tried in this order:

1. a feature dump (``.safetensors``, ``.pt``, ``.npz`` holding ``features``) or a folder of
   ``part-*.safetensors`` shards: read by :func:`nctools.load_dump`, features left on disk;
2. a checkpoint that a registered reader understands. Readers are entry points of the group
   ``nctools.sources``: a function ``read(path, contents, options) -> Dump | None`` that returns
   ``None`` for files that are not its kind. ``allnc_train`` registers the reader of its own
   checkpoints this way, and any other trainer can register one in its package metadata;
3. a plain state dict with ``options.arch``: an architecture registered under the entry-point
   group ``nctools.architectures`` (``allnc_train`` registers ``resnet32``) or a torchvision model
   name, run on the images of ``options.data`` (an image folder or a CIFAR root).

Every file is opened without running code (safetensors, ``torch.load(weights_only=True)``), and
every problem raises :class:`SourceError`, one sentence naming the file. The dump that leaves
:func:`load_source` has been checked once, here: shapes, labels, classifier and class counts agree.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from ..core.result import NCResult
from ..core.validation import check_inputs
from ..errors import first_line
from .dump import load_dump
from .dump_contents import Dump, DumpError, stringify_metadata
from .images import IMAGENET_STATS, Stats, image_dataset, import_torchvision
from .rows import shard_paths
from .safe_files import check_regular_file, load_pt

__all__ = [
    "SourceError", "SourceOptions", "Architecture", "load_source", "analyze_source", "read_contents",
    "load_weights", "extract_features", "with_classifier", "source_error", "READER_GROUP", "ARCHITECTURE_GROUP",
    "DUMP_SUFFIXES", "MODEL_SUFFIXES",
]

DUMP_SUFFIXES = (".safetensors", ".pt", ".npz")
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
READER_GROUP = "nctools.sources"
ARCHITECTURE_GROUP = "nctools.architectures"


class SourceError(DumpError):
    """The input file, the architecture or the data cannot be used: ``"<path>: <problem>."``."""


def source_error(path, problem: str) -> SourceError:
    """The :class:`SourceError` for ``path``, in the one-sentence form every input error takes."""
    return SourceError(f"{path}: {problem.rstrip().rstrip('.')}.")


@dataclass
class SourceOptions:
    """How to turn a model into features (ignored for dumps, except ``split``)."""

    arch: str | None = None  # a registered architecture (e.g. "resnet32") or a torchvision name
    data: Path | None = None  # image folder or CIFAR root
    split: str | None = None  # "train" | "test"; None: train, or whatever a dump holds
    device: str = "auto"
    batch_size: int = 128
    image_size: int | None = None  # default: the architecture's own (32 for resnet32, 224 for torchvision)
    progress: bool = False


@dataclass
class Architecture:
    """A model rebuilt from a state dict, ready for extraction: weights loaded, and its classifier
    is the last ``nn.Linear`` that runs in ``module``'s forward pass."""

    module: torch.nn.Module
    image_size: int  # side of the square input images it expects
    stats: Stats = IMAGENET_STATS  # (mean, std) per channel for normalising those images


# --------------------------------------------------------------------------- the entry point


def load_source(path, options: SourceOptions | None = None) -> Dump:
    """The checked dump of features, labels and classifier that ``path`` (with ``options``) stands for."""
    path, options = Path(path), options or SourceOptions()
    if path.is_dir():
        if shard_paths(path):  # one epoch's dump written as part-*.safetensors shards
            return _read_dump(path, options)
        raise source_error(path, "is a directory; analyze takes a dump (or a folder of part-*.safetensors shards), "
                                 "a checkpoint or a state dict (for a run directory use nctools track)")
    check_regular_file(path, source_error)  # before anything opens it: a named pipe would block for ever
    suffix = path.suffix.lower()
    if suffix not in set(DUMP_SUFFIXES) | set(MODEL_SUFFIXES):
        raise source_error(path, f"unsupported file type ({suffix or 'no suffix'}); expected a dump "
                                 f"({', '.join(DUMP_SUFFIXES)}) or model weights ({', '.join(MODEL_SUFFIXES)})")
    if suffix == ".npz" or (suffix == ".safetensors" and "features" in _safetensors_keys(path)):
        return _read_dump(path, options)  # read once, by the dump reader and its checks
    contents = read_contents(path)
    if "features" in contents:
        if suffix not in DUMP_SUFFIXES:
            raise source_error(path, f"holds features, but a dump file must end with {', '.join(DUMP_SUFFIXES)}")
        return _read_dump(path, options)
    try:
        dump = _from_registered_reader(path, contents, options)
        if dump is None:
            state = _state_dict(path, contents)
            if options.arch is None:
                raise source_error(path, "holds model weights but no 'features' tensor, and no installed checkpoint "
                                         "reader claims it; pass --arch (a model name) and --data to extract features")
            dump = _from_state_dict(path, state, options)
    except DumpError:  # already one sentence naming its file
        raise
    except (TypeError, ValueError) as err:  # from extraction (a NaN weight, a layer that never runs): name the file
        raise source_error(path, str(err)) from err
    return _checked(path, dump)


def analyze_source(path, dump: Dump, *, center: str = "class", groups: Sequence[float] = (100, 20),
                   device="auto", progress: bool | None = None) -> NCResult:
    """``nctools.analyze`` of a loaded dump; a problem found while its features are read (NaN in a
    lazily read file, say) names the file like every other input error."""
    from ..core.analysis import analyze

    try:
        return analyze(dump.features, dump.labels, dump.weight, dump.bias, class_counts=dump.class_counts,
                       num_classes=dump.num_classes, center=center, groups=groups, device=device,
                       progress=progress)
    except (TypeError, ValueError) as err:
        raise source_error(path, str(err)) from err


def _read_dump(path: Path, options: SourceOptions) -> Dump:
    dump = load_dump(path, lazy=True)  # safetensors features stay on disk: analyze streams them
    if options.split is not None and dump.split is not None and dump.split != options.split:
        raise source_error(path, f"the dump holds the {dump.split} split, but --split {options.split} was asked for")
    return dump


def _checked(path: Path, dump: Dump) -> Dump:
    """The one check of a dump built from a model: features, labels, classifier and counts agree.

    Finiteness is left to the analysis, whose first pass checks every value as it reads it (and
    names this file): scanning here too would read the features twice."""
    try:
        checked = check_inputs(dump.features, dump.labels, dump.weight, dump.bias, dump.class_counts, finite=False)
    except (TypeError, ValueError) as err:
        raise source_error(path, str(err)) from err
    dump.features, dump.labels, dump.weight, dump.bias, dump.class_counts = checked[:5]
    dump.path = path
    return dump


# --------------------------------------------------------------------------- reading files safely


def _safetensors_keys(path: Path) -> set:
    """The tensor names in a safetensors header (reads no tensor data)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return set(f.keys())
    except (SafetensorError, OSError) as err:
        if path.stat().st_size == 0:
            raise source_error(path, "the file is empty (0 bytes)") from err
        raise source_error(path, f"truncated or corrupt ({type(err).__name__})") from err


def read_contents(path: Path) -> dict[str, Any]:
    """The top-level dict of a ``.pt``-like file (or a safetensors file's tensors), read without
    running code; what registered readers receive as ``contents``."""
    path = Path(path)
    if check_regular_file(path, source_error).st_size == 0:
        raise source_error(path, "the file is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise source_error(path, f"truncated or corrupt ({type(err).__name__})") from err
    return load_pt(path, source_error, refusal="it holds Python objects other than tensors",
                   expected="a dict (a dump, a checkpoint or a state dict)")


def _state_dict(path: Path, obj: dict) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict, also when wrapped as {"state_dict": ...} or {"model": ...}."""
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise source_error(path, "holds no tensors: it is neither a dump, a checkpoint nor a state dict")
    # DataParallel / DDP checkpoints prefix every key with "module."
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- plug-ins


def _registered(group: str) -> list[tuple[str, Callable | None, str | None]]:
    """``(name, loaded object or None, problem or None)`` for each entry point of ``group``, by name."""
    found = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load(), None))
        except Exception as err:  # a broken plug-in must not stop dumps and other readers from working
            found.append((ep.name, None, f"{ep.value} cannot be loaded ({type(err).__name__}: {err})"))
    return found


def _from_registered_reader(path: Path, contents: dict, options: SourceOptions) -> Dump | None:
    problems = []
    for name, read, problem in _registered(READER_GROUP):
        if read is None:
            problems.append(f"reader {name!r}: {problem}")
            continue
        dump = read(path, contents, options)
        if dump is not None:
            if not isinstance(dump, Dump):
                raise source_error(path, f"the {READER_GROUP} reader {name!r} returned a {type(dump).__name__}, "
                                         "not a nctools.Dump")
            return dump
    if problems and options.arch is None:
        raise source_error(path, "no installed checkpoint reader claims it, and some could not be loaded: "
                                 + "; ".join(problems))
    return None


def _architecture(path: Path, state: dict, arch: str) -> Architecture:
    for name, build, problem in _registered(ARCHITECTURE_GROUP):
        if name == arch:
            if build is None:
                raise source_error(path, f"architecture {arch!r} is registered but {problem}")
            return build(path, state)
    if arch.startswith("timm:"):
        return _timm_model(path, state, arch[len("timm:"):])
    return _torchvision_model(path, state, arch)


def _timm_model(path: Path, state: dict, name: str) -> Architecture:
    """A timm architecture, built with ``pretrained=False`` (nothing is downloaded), the user's
    weights loaded; its own input size and normalisation from timm's ``pretrained_cfg``."""
    try:
        import timm
    except ImportError as err:
        raise source_error(path, f"--arch timm:{name} needs timm ({err}); pip install 'nctools[timm]'") from err
    if not name:
        raise source_error(path, "--arch timm: needs a model name after the colon, e.g. timm:resnet18")
    if not timm.is_model(name):
        raise source_error(path, f"unknown timm architecture {name!r}; timm.list_models() shows the names "
                                 "(e.g. resnet18, vit_small_patch16_224)")
    from .extraction import find_layer

    classifier, _ = find_layer(timm.create_model(name, pretrained=False))  # where C is read from
    if f"{classifier}.weight" not in state:
        raise source_error(path, f"has no {classifier}.weight tensor, so it is not a timm {name} state dict")
    model = timm.create_model(name, pretrained=False, num_classes=state[f"{classifier}.weight"].shape[0])
    load_weights(path, model, state)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    stats = (tuple(cfg.get("mean", IMAGENET_STATS[0])), tuple(cfg.get("std", IMAGENET_STATS[1])))
    return Architecture(model, size, stats)


# --------------------------------------------------------------------------- state dict + --arch


def _from_state_dict(path: Path, state: dict, options: SourceOptions) -> Dump:
    if options.data is None:
        raise source_error(path, "a state dict has no data of its own; pass --data (an image folder or a CIFAR root)")
    arch = _architecture(path, state, options.arch)
    from .extraction import find_layer

    _, layer = find_layer(arch.module)
    dataset, names = image_dataset(Path(options.data), options.split or "train", options.image_size or arch.image_size,
                                   arch.stats, source_error)
    if len(names) != layer.weight.shape[0]:
        raise source_error(options.data, f"holds {len(names)} classes but the classifier of {path.name} has "
                                         f"{layer.weight.shape[0]} rows; the data's classes must be the model's")
    dump = extract_features(arch.module, dataset, options)
    meta = {"split": options.split or "train", "arch": options.arch, "class_names": names, "dataset": str(options.data)}
    return with_classifier(dump, layer.weight, layer.bias, None, meta)


def _torchvision_model(path: Path, state: dict, arch: str) -> Architecture:
    torchvision = import_torchvision(lambda problem: source_error(path, problem))
    if arch not in torchvision.models.list_models():
        known = " or ".join(sorted(name for name, *_ in _registered(ARCHITECTURE_GROUP)) + ["a torchvision model name"])
        raise source_error(path, f"unknown architecture {arch!r}; use {known} such as resnet18 or resnet50")
    from .extraction import find_layer

    name, _ = find_layer(torchvision.models.get_model(arch))  # where the classifier lives, to read C from
    if f"{name}.weight" not in state:
        raise source_error(path, f"has no {name}.weight tensor, so it is not a {arch} state dict")
    model = torchvision.models.get_model(arch, num_classes=state[f"{name}.weight"].shape[0])
    load_weights(path, model, state)
    return Architecture(model, 224, IMAGENET_STATS)


# --------------------------------------------------------------------------- steps readers share


def load_weights(path: Path, model: torch.nn.Module, state: dict) -> None:
    """``model.load_state_dict(state, strict=True)``, a mismatch told as one sentence naming ``path``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).split("\n\t", 2)
        detail = first[1].strip() if len(first) > 1 else first_line(err)
        raise source_error(path, f"the weights do not fit the architecture ({detail[:160]})") from None


def extract_features(model: torch.nn.Module, dataset, options: SourceOptions) -> Dump:
    """:func:`nctools.extract` of ``model`` over ``dataset`` in order, with the options' batch size,
    device and progress bar."""
    from torch.utils.data import DataLoader

    from .extraction import extract

    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False)
    return extract(model, loader, device=options.device, progress=options.progress)


def with_classifier(dump: Dump, weight, bias, class_counts, metadata: dict[str, Any]) -> Dump:
    """``dump`` with the classifier, training counts and metadata (stored as dump metadata strings)."""
    dump.weight = weight.detach().float().cpu()
    dump.bias = None if bias is None else bias.detach().float().cpu()
    dump.class_counts = None if class_counts is None else torch.as_tensor(class_counts, dtype=torch.int64)
    dump.metadata = stringify_metadata(metadata)
    return dump
