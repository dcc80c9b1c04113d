"""Turn what a user points ``nctools analyze`` at into one checked :class:`~nctools.Dump`.

The kinds of input, tried in this order:

1. a feature dump (``.safetensors``, ``.pt``, ``.npz`` holding ``features``) or a folder of
   ``part-*.safetensors`` shards: read by :func:`nctools.load_dump`, features left on disk;
2. a checkpoint that a registered reader understands. Readers are entry points of the group
   ``nctools.sources``: a function ``read(path, contents, options) -> Dump | None`` that returns
   ``None`` for files that are not its kind. ``allnc_train`` registers the reader of its own
   checkpoints this way, and any other trainer can register one in its package metadata;
3. a plain state dict with ``options.arch``: an architecture registered under the entry-point
   group ``nctools.architectures`` (``allnc_train`` registers ``resnet32``), ``timm:NAME`` or a
   torchvision model name, run on the images of ``options.data`` (an image folder or a CIFAR root).
   The state dict may be nested or prefixed as frameworks save it (see :mod:`.state_dicts`); the
   images are preprocessed as the options say, else as the architecture's source documents it
   (a warning says so where that is a guess: a bare state dict does not say how it was trained).

Every file is opened without running code (safetensors, ``torch.load(weights_only=True)``), and
every problem raises :class:`SourceError`, one sentence naming the file. The dump that leaves
:func:`load_source` has been checked once, here: shapes, labels, classifier and class counts agree.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from ..core.result import NCResult
from ..core.validation import check_inputs
from ..errors import first_line
from ..extras import install_hint
from .dump import load_dump
from .dump_contents import Dump, DumpError, metadata_values
from .images import (
    IMAGENET_STATS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Preprocessing,
    Stats,
    image_dataset,
    import_torchvision,
)
from .rows import shard_paths
from .safe_files import check_regular_file, load_pt
from .state_dicts import TOP, Reading, ambiguous, choose, readings

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
    mean: tuple[float, float, float] | None = None  # per-channel normalisation; default: the architecture's
    std: tuple[float, float, float] | None = None
    # "module:function" (imported, so it runs that code) or a callable: function() returns the
    # transform from a PIL image to a normalised float tensor; replaces image_size, mean and std
    transform: str | Callable | None = None
    state_key: str | None = None  # the nested dict of the file that holds the weights
    strip_prefix: str | None = None  # the prefix to remove from the weights' keys ("model.")

    def __post_init__(self) -> None:
        if self.image_size is not None and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, got {self.image_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(float(v) for v in value)
            if len(value) != 3 or not all(math.isfinite(v) for v in value) or (name == "std" and min(value) <= 0):
                raise ValueError(f"{name} must be three finite numbers (R, G, B){', all > 0' if name == 'std' else ''}"
                                 f", got {getattr(self, name)!r}")
            setattr(self, name, value)
        if self.transform is not None and (self.image_size, self.mean, self.std) != (None, None, None):
            raise ValueError("transform replaces image_size, mean and std; give one or the other")


@dataclass
class Architecture:
    """A model rebuilt from a state dict, ready for extraction: weights loaded, and its classifier
    is the last ``nn.Linear`` that runs in ``module``'s forward pass."""

    module: torch.nn.Module
    image_size: int  # side of the square input images it expects
    stats: Stats = IMAGENET_STATS  # (mean, std) per channel for normalising those images
    # the full default preprocessing where it is more than (image_size, stats): resize, crop, interpolation
    preprocessing: Preprocessing | None = None


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
            found = readings(contents, lambda problem: source_error(path, problem), options.state_key,
                             options.strip_prefix)
            if options.arch is None:
                raise source_error(path, "holds model weights but no 'features' tensor, and no installed checkpoint "
                                         "reader claims it; pass --arch (a model name) and --data to extract features")
            dump = _from_state_dict(path, found, options)
    except DumpError:  # already one sentence naming its file
        raise
    except (TypeError, ValueError) as err:  # from extraction (a NaN weight, a layer that never runs): name the file
        raise source_error(path, str(err)) from err
    return _checked(path, dump)


def analyze_source(path, dump: Dump, *, center: str = "class", groups: Sequence[float] = (100, 20),
                   squeeze_deg: float = 5.0, split: str | None = None, device="auto",
                   progress: bool | None = None) -> NCResult:
    """``nctools.analyze`` of a loaded dump; a problem found while its features are read (NaN in a
    lazily read file, say) names the file like every other input error. ``split`` defaults to the
    split the dump says it holds."""
    from ..core.analysis import analyze

    try:
        return analyze(dump.features, dump.labels, dump.weight, dump.bias, class_counts=dump.class_counts,
                       num_classes=dump.num_classes, center=center, groups=groups, squeeze_deg=squeeze_deg,
                       split=split or dump.split, device=device, progress=progress)
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


# --------------------------------------------------------------------------- plug-ins


def _registered(group: str) -> list[tuple[str, Callable | None, str | None]]:
    """``(name, loaded object or None, problem or None)`` for each entry point of ``group``, by name."""
    found, seen = [], set()
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        # the same plug-in seen twice (e.g. a checkout's stale metadata from the package's old distribution name)
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
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


def _architecture(path: Path, found: list[Reading], arch: str) -> tuple[Architecture, Reading]:
    """The architecture ``arch`` with the one reading of the file that loads into it."""
    for name, build, problem in _registered(ARCHITECTURE_GROUP):
        if name == arch:
            if build is None:
                raise source_error(path, f"architecture {arch!r} is registered but {problem}")
            return _registered_architecture(path, build, found, arch)
    if arch.startswith("timm:"):
        return _timm_model(path, found, arch[len("timm:"):])
    return _torchvision_model(path, found, arch)


def _registered_architecture(path: Path, build: Callable, found: list[Reading], arch: str):
    """A plug-in's builder knows its keys only by trying: each reading in turn, exactly one must load."""
    if len(found) == 1:
        return build(path, found[0].state), found[0]
    fits, first = [], None
    for reading in found:
        try:
            fits.append((build(path, reading.state), reading))
        except (DumpError, KeyError, RuntimeError, ValueError) as err:  # this reading is not the one
            first = first or err
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise source_error(path, ambiguous([r for _, r in fits], arch))
    if isinstance(first, DumpError):
        raise first
    raise source_error(path, f"the weights do not fit the architecture {arch} ({first_line(first)})")


def _timm_model(path: Path, found: list[Reading], name: str) -> tuple[Architecture, Reading]:
    """A timm architecture, built with ``pretrained=False`` (nothing is downloaded), the user's
    weights loaded; its default preprocessing is timm's eval transform for the model
    (``resolve_data_config``, ``create_transform``)."""
    try:
        import timm
        from timm.data import create_transform, resolve_data_config
    except ImportError as err:
        raise source_error(path, f"--arch timm:{name} needs timm ({err}); {install_hint('vision')}") from err
    if not name:
        raise source_error(path, "--arch timm: needs a model name after the colon, e.g. timm:resnet18")
    if not timm.is_model(name):
        raise source_error(path, f"unknown timm architecture {name!r}; timm.list_models() shows the names "
                                 "(e.g. resnet18, vit_small_patch16_224)")
    model, reading = _built_with_weights(path, found, f"timm:{name}",
                                         lambda **kw: timm.create_model(name, pretrained=False, **kw))
    cfg = resolve_data_config({}, model=model)
    size, crop_pct, mode = int(cfg["input_size"][-1]), float(cfg.get("crop_pct") or 1.0), cfg.get("crop_mode", "center")

    def make(p: Preprocessing):
        return create_transform(input_size=(3, p.size, p.size), interpolation=p.interpolation, mean=p.mean, std=p.std,
                                crop_pct=1.0 if p.resize == p.size else crop_pct, crop_mode=p.crop, is_training=False)

    pre = Preprocessing(size, tuple(cfg["mean"]), tuple(cfg["std"]), resize=math.floor(size / crop_pct),
                        interpolation=str(cfg["interpolation"]), crop=str(mode), make=make,
                        name="timm create_transform", assumed=True)
    return Architecture(model, size, (pre.mean, pre.std), pre), reading


# --------------------------------------------------------------------------- state dict + --arch


def _from_state_dict(path: Path, found: list[Reading], options: SourceOptions) -> Dump:
    if options.data is None:
        raise source_error(path, "a state dict has no data of its own; pass --data (an image folder or a CIFAR root)")
    arch, reading = _architecture(path, found, options.arch)
    from .extraction import find_layer

    _, layer = find_layer(arch.module)
    pre = _preprocessing(arch, options)
    dataset, names = image_dataset(Path(options.data), options.split or "train", pre, source_error)
    if pre.transform is not None:
        _check_transform(dataset, pre.name)
    if len(names) != layer.weight.shape[0]:
        raise source_error(options.data, f"holds {len(names)} classes but the classifier of {path.name} has "
                                         f"{layer.weight.shape[0]} rows; the data's classes must be the model's")
    if pre.assumed:  # one line: the defaults come from the architecture, not from these weights
        warnings.warn(f"{path.name}: preprocessing {pre.describe()}: the weights do not say how the model was "
                      "trained; set --image-size, --mean and --std (or --transform) if it differs", stacklevel=2)
    dump = extract_features(arch.module, dataset, options)
    meta = {"split": options.split or "train", "arch": options.arch, "class_names": names, "dataset": str(options.data),
            "preprocessing": pre.record()}
    if reading.how != TOP:
        meta["weights"] = reading.how
    return with_classifier(dump, layer.weight, layer.bias, None, meta)


def _preprocessing(arch: Architecture, options: SourceOptions) -> Preprocessing:
    """The architecture's default preprocessing with what the options set, or the user's transform."""
    if options.transform is not None:
        return _user_transform(options.transform)
    base = arch.preprocessing or Preprocessing(arch.image_size, tuple(arch.stats[0]), tuple(arch.stats[1]),
                                               resize=arch.image_size)
    given = {"mean": options.mean, "std": options.std}
    if options.image_size is not None:  # the side the model saw: the whole image, resized, no crop margin
        given.update(size=options.image_size, resize=options.image_size)
    given = {k: v for k, v in given.items() if v is not None}
    assumed = base.assumed and not (options.image_size is not None and options.mean and options.std)
    return dataclasses.replace(base, **given, assumed=assumed)


def _user_transform(spec: str | Callable) -> Preprocessing:
    """``"module:function"`` imported and called (it runs that code), or a callable used as the transform."""
    if callable(spec):
        name = f"{getattr(spec, '__module__', '?')}.{getattr(spec, '__qualname__', type(spec).__name__)}"
        return Preprocessing(transform=spec, name=name)
    module, _, function = str(spec).partition(":")
    where = f"--transform {spec}"
    if not module or not function:
        raise source_error(where, "expected module:function, e.g. mytransforms:cifar_eval")
    try:
        factory = getattr(importlib.import_module(module), function)
    except AttributeError:
        raise source_error(where, f"module {module!r} has no {function!r}") from None
    except Exception as err:  # the user's module: any error it raises is theirs to read
        raise source_error(where, f"cannot import {module!r} ({type(err).__name__}: {first_line(err)})") from None
    try:
        transform = factory()
    except Exception as err:
        raise source_error(where, f"{function}() failed ({type(err).__name__}: {first_line(err)})") from None
    if not callable(transform):
        raise source_error(where, f"{function}() returned a {type(transform).__name__}, not a transform (a callable)")
    return Preprocessing(transform=transform, name=str(spec))


def _check_transform(dataset, name: str | None) -> None:
    """The user's transform must make a float tensor (C, H, W) of an image: checked on the first one."""
    where = f"--transform {name}"
    try:
        x = dataset[0][0]
    except Exception as err:
        raise source_error(where, f"fails on the first image ({type(err).__name__}: {first_line(err)})") from None
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 3):
        got = f"a {type(x).__name__}"
        if isinstance(x, torch.Tensor):
            got = f"a {x.dtype} tensor of shape {tuple(x.shape)}"
        raise source_error(where, f"turns an image into {got}, not a float tensor (channels, height, width)")


def _built_with_weights(path: Path, found: list[Reading], label: str, build: Callable
                        ) -> tuple[torch.nn.Module, Reading]:
    """``build(num_classes=C)`` with the one reading of the file whose keys fit the architecture (a reference
    ``build()`` tells the keys and where the classifier is, whose rows give C), its weights loaded."""
    from .extraction import find_layer

    reference = build()
    classifier, _ = find_layer(reference)
    reading = choose(found, set(reference.state_dict()), label, lambda problem: source_error(path, problem))
    model = build(num_classes=reading.state[f"{classifier}.weight"].shape[0])
    load_weights(path, model, reading.state)
    return model, reading


def _torchvision_model(path: Path, found: list[Reading], arch: str) -> tuple[Architecture, Reading]:
    torchvision = import_torchvision(lambda problem: source_error(path, problem))
    if arch not in torchvision.models.list_models():
        known = " or ".join(sorted(name for name, *_ in _registered(ARCHITECTURE_GROUP)) + ["a torchvision model name"])
        raise source_error(path, f"unknown architecture {arch!r}; use {known} such as resnet18 or resnet50")
    model, reading = _built_with_weights(path, found, arch, lambda **kw: torchvision.models.get_model(arch, **kw))
    pre = _torchvision_preprocessing(torchvision, arch)
    return Architecture(model, pre.size, (pre.mean, pre.std), pre), reading


def _torchvision_preprocessing(torchvision, arch: str) -> Preprocessing:
    """torchvision's documented evaluation preprocessing of ``arch``'s default weights (their resize,
    crop, interpolation and statistics; nothing is downloaded), as a guess for the user's weights."""
    try:
        preset = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        return Preprocessing(int(preset.crop_size[0]), tuple(preset.mean), tuple(preset.std),
                             resize=int(preset.resize_size[0]), interpolation=preset.interpolation.value, assumed=True)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):  # no weights or no image preset
        return Preprocessing(224, IMAGENET_STATS[0], IMAGENET_STATS[1], resize=256, assumed=True)


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

    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, collate_fn=_same_size_batch)
    return extract(model, loader, device=options.device, progress=options.progress)


def _same_size_batch(batch):
    """torch's default collation, with images of different sizes (a transform that does not resize) said in
    one sentence instead of torch.stack's error."""
    from torch.utils.data import default_collate

    shapes = sorted({tuple(image.shape) for image, _ in batch})
    if len(shapes) > 1:
        sizes = " and ".join("x".join(map(str, shape)) for shape in shapes[:2])
        raise ValueError(f"the images of one batch have different sizes after preprocessing ({sizes}): give an image "
                         "size (--image-size N) or a transform that resizes every image to one size")
    return default_collate(batch)


def with_classifier(dump: Dump, weight, bias, class_counts, metadata: dict[str, Any]) -> Dump:
    """``dump`` with the classifier, training counts and metadata (stored as dump metadata strings)."""
    dump.weight = weight.detach().float().cpu()
    dump.bias = None if bias is None else bias.detach().float().cpu()
    dump.class_counts = None if class_counts is None else torch.as_tensor(class_counts, dtype=torch.int64)
    dump.metadata = metadata_values(metadata)
    return dump
