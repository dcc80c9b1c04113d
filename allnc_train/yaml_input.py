"""YAML read as untrusted input: a config file (or a ``--set`` value) is someone else's text.

PyYAML's ``safe_load`` runs no code, but it still lets a small file cost without bound: a "billion
laughs" of aliases expands to more nodes than memory holds as soon as anything walks it (a message
that prints the value, a merge into the config), a deeply nested file exhausts Python's recursion,
and a key written twice silently keeps the second value. Here the text is bounded before it is
parsed (:data:`MAX_BYTES`, UTF-8), the node tree while it is composed (:data:`MAX_DEPTH` levels,
:data:`MAX_ALIASES` aliases) and once composed, counting every alias as the copy it stands for
(:data:`MAX_NODES`); a key repeated in one mapping is refused with both lines. Every refusal is a
:class:`YAMLRefused` whose message says what was refused, for the caller to put after the file's
name or the key's.

>>> safe_load("a: 1\\nb: [1, 2]")
{'a': 1, 'b': [1, 2]}
>>> safe_load("a: 1\\na: 2")
Traceback (most recent call last):
...
allnc_train.yaml_input.YAMLRefused: the key 'a' appears twice in one mapping (lines 1 and 2)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YAMLRefused", "read_text", "safe_load"]

MAX_BYTES = 1 << 20  # a config is a few kB; 1 MiB leaves room for generated ones
MAX_DEPTH = 32  # the config tree is three levels deep; lists of lists add one or two
MAX_ALIASES = 100
MAX_NODES = 100_000  # nodes of the tree with every alias expanded


class YAMLRefused(ValueError):
    """YAML text refused before or while it is read (too large, too deep, too many aliases, a repeated
    key, not UTF-8, not a regular file); the message names what, not where."""


def read_text(path: Path) -> str:
    """The text of the config file ``path``: a regular file of at most :data:`MAX_BYTES`, in UTF-8.

    A folder, a FIFO or a device is refused by what it is (opening a FIFO would wait for a writer)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise YAMLRefused("does not exist") from None
    if stat.S_ISDIR(info.st_mode):
        raise YAMLRefused("is a folder, not a config file")
    if not stat.S_ISREG(info.st_mode):
        raise YAMLRefused("is not a regular file (a FIFO, socket or device); give a YAML file")
    if info.st_size > MAX_BYTES:
        raise YAMLRefused(f"holds {info.st_size} bytes, more than a config's limit of {MAX_BYTES}")
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:  # grew since stat
        raise YAMLRefused(f"holds more than a config's limit of {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YAMLRefused(f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)`` within the bounds above; raises :class:`YAMLRefused` or ``yaml.YAMLError``."""
    if len(text) > MAX_BYTES:
        raise YAMLRefused(f"holds more than {MAX_BYTES} characters")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as err:
        if isinstance(err, YAMLRefused):
            raise
        # e.g. an integer of more than 4300 digits, which Python refuses to convert
        raise YAMLRefused(f"holds a value that cannot be read ({str(err)[:80]})") from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with the depth, alias and expanded-size bounds, and no repeated keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YAMLRefused(f"uses more than {MAX_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # before PyYAML's recursive composer reaches Python's limit
                raise YAMLRefused(f"is nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise YAMLRefused(f"expands to more than {MAX_NODES} values once its aliases are followed "
                              "(an alias bomb?)")
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges: keys overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeConstructor names it below
                    continue
                if first is not None:
                    raise YAMLRefused(f"the key {_short(key)} appears twice in one mapping (lines {first} and {line})")
                seen[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(node, memo: dict) -> int:
    """Nodes under ``node`` with every alias counted as a copy (memoised: a bomb is counted, not walked)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node that refers to itself (a recursive alias) counts once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
