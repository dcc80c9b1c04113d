"""The trainer's configuration tree: dataclasses with commented defaults, read from plain dicts.

A config is a tree of dataclasses. YAML files and ``--set key=value`` overrides are merged on top
of the defaults below; an unknown key, a value of the wrong type or an invalid choice raises a
:class:`ConfigError` whose message is one sentence naming the key. This module knows the keys and
their types, ranges and choices; what depends on the method (its defaults for the ``null`` keys and
its own checks) is the methods table's, applied by :mod:`allnc_train.config`.

>>> cfg = Config()
>>> merge(cfg, parse_override("optim.epochs=3"))
>>> cfg.optim.epochs, get_key(cfg, "optim.batch_size")
(3, 128)
"""

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from nctools.errors import InputError, first_line

from .yaml_input import YAMLRefused, read_text, safe_load


class ConfigError(InputError):
    """A bad configuration: unknown key, wrong type, invalid value or unreadable file."""


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | imagenet_lt | places_lt | inat2018 | synthetic
    # folder: root/{train,test}/<class>/*.jpg | torchvision: CIFAR download | splits: 'path label' files
    source: str = "folder"
    root: str = "data/cifar10"  # image folder, torchvision root, or image root that split-file paths are relative to
    download: bool = False  # torchvision source only: download CIFAR when it is missing
    train_split: str | None = None  # splits source: 'path label' file of the training set
    test_split: str | None = None  # splits source: 'path label' file of the evaluation set
    imbalance_ratio: float = 100.0  # beta = n_max / n_min of the LDAM subset; 1 = balanced (CIFAR, synthetic)
    n_max: int | None = None  # head-class size of the subset; None = the full per-class size (5000 for CIFAR-10)
    subset_seed: int = 0  # numpy seed of the long-tailed subset (LDAM-DRW uses 0); separate from the training seed
    num_classes: int = 10  # synthetic only (CIFAR and split files know their own)
    test_per_class: int | None = None  # keep the first k test images of each class (quick runs); None = all
    # hold out this share of each class's training samples (at least one) as the evaluation set and leave the
    # test set unread: the split on which hyper-parameters are chosen; 0 = train on all, evaluate on test
    val_fraction: float = 0.0
    image_size: int = 32  # training crop in pixels (32 for CIFAR, 224 for ImageNet-style data)
    augment: str = "standard"  # standard (crop + flip) | none
    num_workers: int = 0  # DataLoader worker processes (the loader pipeline only)
    # batched: the training set lives on the device as one uint8 tensor, batches are gathered and augmented
    # there (CIFAR, synthetic); loader: torch DataLoader with per-sample transforms (needed for file-backed
    # data); auto: batched where the data is in memory, loader otherwise
    pipeline: str = "auto"
    view_augment: str = "simclr"  # HyCon views: simclr (resized crop, colour jitter, grayscale) | standard


@dataclass
class ModelConfig:
    arch: str = "resnet32"  # resnet32 | resnet50 | resnext50 | ufm (unconstrained features: a free vector per sample)
    width: int = 1  # resnet32 channel multiplier; feature dim = 64 * width (use 2 for CIFAR-100 so d >= C - 1)
    feature_dim: int = 64  # ufm only: dimension of the free features
    ufm_init_std: float = 0.1  # ufm only: std of the initial free features
    bias: bool = True  # bias of the linear classifier (the fixed ETF classifier has none)
    proj_hidden: int = 512  # HyCon heads: hidden width of the projection MLP and of the predictor
    proj_dim: int = 128  # HyCon heads: output dimension of the projection (and predictor)


@dataclass
class MethodConfig:
    # a name of the methods table (allnc_train.methods.METHODS): ce | la | etf | etf_dr | bbn | allnc as shipped
    name: str = "ce"
    la_tau: float = 1.0  # la: logits + tau * log(prior) during training (Menon et al. 2021)
    etf_scale: float = 1.0  # etf: norm of each fixed classifier row


@dataclass
class GBBNConfig:
    enabled: bool | None = None  # None = the method's default (its row in the methods table: on for bbn, allnc)
    gamma: float = 2.0  # eta(t) = 1 - (t / T)^gamma mixes the conventional and re-balancing losses; 2 = BBN's parabola
    sampler: str = "reversed"  # sampler of the re-balancing branch: reversed | class_balanced | sqrt | instance
    # classification heads: 1 = both branches share the classifier; 2 = a head per branch (the paper's Fig. 5a),
    # the inference classifier (model.weight / model.bias) being their fixed mean. None = the method's (2 for allnc,
    # 1 otherwise)
    heads: int | None = None
    # the re-balancing branch's CE gradient into the features (its head always gets it in full): eta = scaled by
    # eta(t), so that branch trains the classifier more and the encoder less as t grows (progressive
    # feature-classifier decoupling); full = unscaled. None = the method's (eta for allnc, full otherwise)
    encoder_grad: str | None = None


@dataclass
class HyConConfig:
    enabled: bool | None = None  # None = the method's default (on for allnc)
    weight: float = 1.0  # weight of the hybrid contrastive loss
    temperature: float = 0.1  # softmax temperature on cosine similarities
    views: int = 2  # augmented views per image in the conventional branch
    prototype_momentum: float = 0.9  # EMA momentum of the class prototypes (mean normalised projections)
    # share of the weight on the penultimate features h (the rest on the 128-d projection / predictor heads,
    # which are built only when the share is below 1): 1 = on h alone, where NC1 is measured
    feature_share: float = 1.0
    balanced: bool = True  # class-balanced denominator (BCL): average exp-similarities per class, sum over classes
    # prototypes on h: classifier = the inference classifier's rows; running = EMA of the normalised class features
    prototypes: str = "classifier"
    prototype_grad: bool = False  # let HyCon's gradient reach the prototypes (false: they are targets)
    rebal_anchors: bool = True  # the re-balancing batch's samples are anchors too (not only the conventional views)
    fade: bool = False  # multiply HyCon by eta(t), so it fades out with the conventional branch
    # CE on every view of the conventional batch, not only view 0; the views are made whenever this is on, so
    # with HyCon off it keeps HyCon's augmentation and compute without its loss (the allnc_no_hycon_views control)
    views_to_ce: bool = False


@dataclass
class P2PConfig:
    enabled: bool | None = None  # None = the method's default (on for allnc)
    weight: float = 1.0  # weight of the peer-to-peer loss
    momentum: float = 0.9  # EMA momentum of the running class means of the features
    # batch = the batch's own class means (both branches), gradient into the features, running means standing in
    # for absent classes; running = the running means blended with the batch at 1 - momentum (the older variant)
    means: str = "batch"
    align_weight: float = 1.0  # term 1 - cos(w_c, mu_c - mu_G)   (NC3)
    angle_weight: float = 1.0  # squared gap of pairwise cosines to -1/(C-1), rows and means   (NC2)
    norm_weight: float = 1.0  # squared coefficient of variation of the norms, rows and means   (NC2 equinorm)


@dataclass
class OptimConfig:
    epochs: int = 200  # total epochs T (also the T of eta(t))
    batch_size: int = 128  # images per batch per branch
    lr: float = 0.1  # peak learning rate (after warm-up), for batch_size as given (no scaling rule)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    weight_decay: float = 2e-4  # on every trainable tensor (LDAM-DRW's CIFAR recipe)
    warmup_epochs: int = 5  # linear warm-up to lr, per step (capped at half the run so short runs still train)
    schedule: str = "cosine"  # cosine (to 0 at the last step) | step | constant
    milestones: list[int] = field(default_factory=lambda: [160, 180])  # step schedule: epochs where lr is multiplied
    step_gamma: float = 0.1  # step schedule: factor applied at each milestone


@dataclass
class RunConfig:
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    amp: bool = True  # autocast on CUDA (see amp_dtype); ignored on CPU
    amp_dtype: str = "bfloat16"  # bfloat16 (no loss scaling needed) | float16 (with gradient scaling)
    channels_last: bool = True  # channels-last memory format for convolutions on CUDA; ignored on CPU
    compile: bool = False  # torch.compile the training step's model (worth it on a GPU for long runs)
    eval_every: int = 1  # evaluate every k epochs (the last epoch always)
    dump_every: int = 1  # write a train-set feature dump every k epochs; 0 = never (the last epoch always otherwise)
    dump_test: bool = False  # also dump the evaluation-set features
    dump_dtype: str = "float32"  # float16 | float32 (features in the dump)
    dump_format: str = "safetensors"  # safetensors | pt | npz
    keep_checkpoints: int = 1  # per-epoch checkpoints kept on disk; 0 = keep all
    progress: bool = True  # tqdm progress bars on stderr, shown only on a terminal


@dataclass
class Config:
    seed: int = 0  # training seed: model init, sampling order, augmentation (the data subset has its own seed)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    gbbn: GBBNConfig = field(default_factory=GBBNConfig)
    hycon: HyConConfig = field(default_factory=HyConConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {  # the keys with a fixed set of values, in the order they are checked; method.name: see choices()
    "data.dataset": ("cifar10", "cifar100", "imagenet_lt", "places_lt", "inat2018", "synthetic"),
    "data.source": ("folder", "torchvision", "splits"),
    "data.augment": ("standard", "none"),
    "data.pipeline": ("auto", "batched", "loader"),
    "data.view_augment": ("simclr", "standard"),
    "run.amp_dtype": ("bfloat16", "float16"),
    "model.arch": ("resnet32", "resnet50", "resnext50", "ufm"),
    "method.name": (),
    "gbbn.sampler": ("reversed", "class_balanced", "sqrt", "instance"),
    "gbbn.heads": (1, 2),
    "gbbn.encoder_grad": ("eta", "full"),
    "hycon.prototypes": ("classifier", "running"),
    "p2p.means": ("batch", "running"),
    "optim.schedule": ("cosine", "step", "constant"),
    "run.dump_dtype": ("float16", "float32"),
    "run.dump_format": ("safetensors", "pt", "npz"),
}
POSITIVE = ("optim.epochs", "optim.batch_size", "optim.lr", "model.width", "model.feature_dim", "model.proj_hidden",
            "model.proj_dim", "hycon.temperature", "hycon.views", "data.image_size", "data.num_classes",
            "data.imbalance_ratio", "run.eval_every", "method.etf_scale")
NON_NEGATIVE = ("optim.momentum", "optim.weight_decay", "optim.warmup_epochs", "gbbn.gamma", "hycon.weight",
                "p2p.weight", "p2p.align_weight", "p2p.angle_weight", "p2p.norm_weight", "run.dump_every",
                "run.keep_checkpoints", "data.num_workers", "data.subset_seed", "seed", "model.ufm_init_std")
# Integer keys with bounds of their own: a seed must fit the generators it seeds (torch takes 64 bits,
# numpy's legacy RandomState behind the LDAM subset 32), and neural collapse compares two classes or more.
INT_RANGES = {"seed": (0, 2**63 - 1), "data.subset_seed": (0, 2**32 - 1), "data.num_classes": (2, 1_000_000)}
UNIT_INTERVAL = ("hycon.prototype_momentum", "p2p.momentum", "data.val_fraction")
CLOSED_UNIT_INTERVAL = ("hycon.feature_share",)


# ---------------------------------------------------------------------------------------------
# Merging plain dicts into the dataclass tree, with type checks
# ---------------------------------------------------------------------------------------------

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict, _SHORT_REPR.maxstring = 2, 6, 4, 40


def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(tp) is list:
        return "a list of integers"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return f"{_type_name(args[0])} or null"
    return names.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        try:
            return _coerce(key, value, inner)
        except ConfigError:
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}.") from None
    if origin is list:
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf
        elif isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; accept what float() reads
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN or inf would start a run that can only diverge
                raise ConfigError(f"config key '{key}' must be a finite number, got {shown(value)}.")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}.")


def merge(node: Any, updates: dict, prefix: str = "") -> None:
    """Set the fields of dataclass ``node`` from the nested dict ``updates`` (in place)."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping, "
                          f"got {shown(updates)}.")
    hints = typing.get_type_hints(type(node))
    names = [f.name for f in dataclasses.fields(node)]
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            where = f"section '{prefix.rstrip('.')}'" if prefix else "the top level"
            raise ConfigError(f"unknown config key '{full}' (known keys in {where}: {', '.join(names)}).")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, f"{full}.")
        else:
            setattr(node, key, _coerce(full, value, hints[key]))


def get_key(cfg: Config, key: str) -> Any:
    """Value at a dotted key, e.g. ``get_key(cfg, "optim.lr")``."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def parse_override(text: str) -> dict:
    """Turn ``"optim.lr=0.05"`` into ``{"optim": {"lr": 0.05}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {shown(text)} must look like key=value, e.g. optim.lr=0.05.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {shown(text)} has an empty key.")
    try:
        value = safe_load(raw) if raw.strip() else None
    except YAMLRefused as exc:
        raise ConfigError(f"override of '{key}': the value {exc}.") from None
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a string; the type check then names the key
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a dict (an empty file gives {}), as untrusted input: bounded in size,
    depth and aliases, UTF-8, no key written twice (:mod:`allnc_train.yaml_input`)."""
    path = Path(path)
    try:
        data = safe_load(read_text(path))
    except YAMLRefused as exc:
        raise ConfigError(f"config file {path} {exc}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({first_line(exc)}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as an error message quotes it: a short prefix of its repr, never the whole of a huge
    (or alias-expanded) one.

    >>> shown(list(range(1000)))
    '[0, 1, 2, 3, 4, 5, ...]'
    """
    try:
        text = _SHORT_REPR.repr(value)
    except ValueError:  # an int beyond Python's 4300-digit conversion limit
        text = f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Checks that hold for every method
# ---------------------------------------------------------------------------------------------

def choices(method_names: Sequence[str]) -> dict[str, tuple]:
    """:data:`CHOICES`, with ``method.name`` taking the names of the methods table."""
    return {**CHOICES, "method.name": tuple(method_names)}


def check_fields(cfg: Config, method_names: Sequence[str]) -> None:
    """Check choices (``method.name`` among ``method_names``), ranges and the combinations of keys that
    hold for every method; raise ConfigError with one sentence. The method's own checks (its ``check``
    in the methods table), then :func:`check_views`, come after."""
    for key, allowed in choices(method_names).items():
        if get_key(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, "
                              f"got {shown(get_key(cfg, key))}.")
    for key in POSITIVE:
        if not get_key(cfg, key) > 0:
            raise ConfigError(f"config key '{key}' must be positive, got {shown(get_key(cfg, key))}.")
    for key in NON_NEGATIVE:
        if get_key(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' must not be negative, got {shown(get_key(cfg, key))}.")
    for key, (low, high) in INT_RANGES.items():
        if not low <= get_key(cfg, key) <= high:
            raise ConfigError(f"config key '{key}' must lie in [{low}, {high}], got {shown(get_key(cfg, key))}.")
    for key in UNIT_INTERVAL:
        if not 0 <= get_key(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must lie in [0, 1), got {shown(get_key(cfg, key))}.")
    for key in CLOSED_UNIT_INTERVAL:
        if not 0 <= get_key(cfg, key) <= 1:
            raise ConfigError(f"config key '{key}' must lie in [0, 1], got {shown(get_key(cfg, key))}.")
    d, m = cfg.data, cfg.model
    if d.imbalance_ratio < 1:
        raise ConfigError(f"config key 'data.imbalance_ratio' must be at least 1 (n_max / n_min), "
                          f"got {d.imbalance_ratio!r}.")
    if d.n_max is not None and d.n_max < 1:
        raise ConfigError(f"config key 'data.n_max' must be a positive integer or null, got {shown(d.n_max)}.")
    if d.test_per_class is not None and d.test_per_class < 1:
        raise ConfigError(f"config key 'data.test_per_class' must be a positive integer or null, "
                          f"got {shown(d.test_per_class)}.")
    if (m.arch == "ufm") != (d.dataset == "synthetic"):
        raise ConfigError("model.arch 'ufm' and data.dataset 'synthetic' go together: the free-feature table is "
                          f"indexed by sample, so set both or neither (got arch {m.arch!r}, dataset {d.dataset!r}).")
    if d.dataset in ("cifar10", "cifar100") and d.source == "splits":
        raise ConfigError(f"data.source 'splits' is for ImageNet-LT, Places-LT and iNaturalist; use 'folder' or "
                          f"'torchvision' for {d.dataset}.")
    if d.dataset in ("imagenet_lt", "places_lt", "inat2018"):
        if d.source != "splits":
            raise ConfigError(f"data.dataset {d.dataset!r} is read from split files: set data.source to 'splits'.")
        if not d.train_split or not d.test_split:
            raise ConfigError(f"data.dataset {d.dataset!r} needs data.train_split and data.test_split "
                              "('path label' files).")


def check_views(cfg: Config) -> None:
    """HyCon contrasts views of an image: it needs two or more (a free feature's views are all one)."""
    if cfg.hycon.enabled and cfg.hycon.views < 2 and cfg.model.arch != "ufm":
        raise ConfigError("HyCon needs at least two views per image: set hycon.views to 2 or more.")
    if cfg.hycon.views_to_ce and cfg.model.arch == "ufm":
        raise ConfigError("hycon.views_to_ce needs images: a free feature's views are all one (model.arch 'ufm').")


def conventional_views(cfg: Config) -> int:
    """Views per image in the conventional batch: ``hycon.views`` when HyCon or ``hycon.views_to_ce`` uses
    them, else one."""
    return cfg.hycon.views if cfg.hycon.enabled or cfg.hycon.views_to_ce else 1


def num_classes_hint(cfg: Config) -> int:
    """The number of classes the data will have, known before it is read (CIFAR's, or ``data.num_classes``)."""
    return {"cifar10": 10, "cifar100": 100}.get(cfg.data.dataset, cfg.data.num_classes)


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain nested dicts (safe for JSON and ``weights_only`` checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
