"""A run's configuration, resolved: defaults, a YAML file, ``key=value`` overrides, then the method's.

The tree of keys, their types and their checks are :mod:`allnc_train.schema`'s; the method named by
``method.name`` (the methods table, :mod:`allnc_train.methods`) fills in the ``null`` keys (which
components are on, GBBN's heads and encoder gradient) and adds its own checks. An unknown key, a
value of the wrong type or an invalid choice raises a :class:`ConfigError` whose message is one
sentence naming the key. The resolved config (every key, defaults included) is stored as a plain
dict in ``run.json`` and in every checkpoint, so a run can be rebuilt from its own files.

>>> cfg = resolve({"method": {"name": "allnc"}}, ["optim.epochs=3"])
>>> cfg.optim.epochs, cfg.hycon.enabled, cfg.gbbn.enabled, cfg.gbbn.heads
(3, True, True, 2)
"""
from __future__ import annotations

from pathlib import Path

from .config_limits import check_sizes
from .methods import METHODS, get_method
from .schema import Config, check_fields, check_views, get_key, load_yaml, merge, parse_override

__all__ = ["from_dict", "load_config", "method_components", "method_label", "resolve", "validate"]


def method_components(method: str) -> dict[str, bool]:
    """Which components a method switches on by default (its row's ``components``).

    >>> method_components("bbn")
    {'gbbn': True, 'hycon': False, 'p2p': False}
    """
    return dict(get_method(method).components)


def method_label(cfg: Config) -> str:
    """'allnc', or the method plus the components switched away from its defaults, e.g. 'allnc-hycon'."""
    label = cfg.method.name
    for name, default in method_components(label).items():
        on = getattr(cfg, name).enabled
        if on != default:
            label += ("+" if on else "-") + name
    return label


def _fill_method_defaults(cfg: Config) -> None:
    """Turn the ``null`` keys (``enabled``, GBBN's heads and encoder gradient) into what the method implies
    (nothing for an unknown method, which :func:`validate` then names)."""
    method = METHODS.get(cfg.method.name)
    if method is None:
        return
    for name, default in method.components.items():
        if getattr(cfg, name).enabled is None:
            getattr(cfg, name).enabled = default
    for key, value in method.defaults.items():
        section, _, name = key.rpartition(".")
        if get_key(cfg, key) is None:
            setattr(get_key(cfg, section), name, value)


def validate(cfg: Config) -> None:
    """Check choices, ranges and combinations, then the method's own rules, then that the sizes asked
    for fit in memory; raise ConfigError."""
    check_fields(cfg, tuple(METHODS))
    get_method(cfg.method.name).check(cfg)
    check_views(cfg)
    check_sizes(cfg)


def resolve(base: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then ``base`` (a dict, e.g. from YAML), then ``key=value`` overrides; validated."""
    cfg = Config()
    merge(cfg, base or {})
    for text in overrides:
        merge(cfg, parse_override(text))
    _fill_method_defaults(cfg)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (or only the defaults when ``path`` is None) and apply overrides."""
    return resolve(load_yaml(path) if path is not None else {}, overrides)


def from_dict(data: dict) -> Config:
    """Rebuild a Config from :func:`to_dict` output (as stored in a checkpoint)."""
    return resolve(data)
