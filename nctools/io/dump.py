"""Feature dumps, read and written: ``save_dump`` and ``load_dump``, the file format shared by the
bundled trainer and the toolkit (docs/DEFINITIONS.md, "The feature dump format").

A dump holds the penultimate features of one split at one epoch with their labels and the last
linear layer, under fixed keys::

    features            (N, d)  float16 / bfloat16 / float32 / float64, kept as stored
    labels              (N,)    int64 class indices in [0, C)
    classifier.weight   (C, d)  optional
    classifier.bias     (C,)    optional
    class_counts        (C,)    int64 training counts, optional (the many/few split of a test dump)

and metadata (``epoch``, ``split``, ``dataset``, ``imbalance_ratio``, ``method``, ``class_names``,
``format_version``), stored as text (numbers and lists as JSON) and read back with their JSON types
(:func:`~nctools.io.dump_contents.metadata_values`). Three containers carry it, chosen by suffix
(``.safetensors``, ``.pt``, ``.npz``; :mod:`nctools.io.dump_formats`). The :class:`Dump` type and
its checks live in :mod:`nctools.io.dump_contents`, the safe file readers in
:mod:`nctools.io.safe_files`; their public names are importable from here too.

Extra tensors in a file are ignored; anything wrong with the dump's own keys is a ``DumpError``
whose one sentence names the file and the problem.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError

from nctools.core.validation import as_tensor, check_inputs
from nctools.errors import describe
from nctools.io.atomic import atomic_write_path
from nctools.io.dump_contents import (
    FORMAT_VERSION,
    TENSOR_KEYS,
    Dump,
    DumpError,
    build_dump,
    dump_error,
    stringify_metadata,
)
from nctools.io.dump_formats import FORMATS, format_of, read_safetensors, storable_tensors
from nctools.io.rows import ConcatRows, SafetensorsRows, shard_paths
from nctools.io.safe_files import check_regular_file

__all__ = ["Dump", "DumpError", "FORMAT_VERSION", "load_dump", "save_dump"]


def save_dump(path, features, labels, weight=None, bias=None, class_counts=None, metadata=None) -> Path:
    """Check a dump and write it atomically to ``path`` (format by suffix); return the path.

    Tensors or numpy arrays are accepted and stored on the CPU in their own dtype (labels and
    class_counts as int64). Metadata values may be strings, numbers, booleans, lists or dicts (the
    file stores them as JSON text; :func:`load_dump` gives them back with their types);
    ``format_version`` is set to ``FORMAT_VERSION``. The
    parent folder is created; a reader never sees a partial file, and a failed write leaves
    nothing behind. Bad inputs raise ``DumpError`` naming ``path``; a file system problem
    raises ``OSError``.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_dump(f"{tmp}/dumps/epoch_0001.safetensors", torch.eye(3), torch.tensor([0, 1, 2]),
    ...                      weight=torch.eye(3), metadata={"epoch": 1, "class_names": ["cat", "dog", "eel"]})
    ...     print(path.name, sorted(p.name for p in path.parent.iterdir()))
    epoch_0001.safetensors ['epoch_0001.safetensors']
    """
    path = Path(path)
    fmt = format_of(path)
    try:
        given = zip(TENSOR_KEYS.items(), (features, labels, weight, bias, class_counts))
        tensors = {key: as_tensor(value, field) for (key, field), value in given if value is not None}
        meta = {**stringify_metadata(metadata), "format_version": FORMAT_VERSION}
    except (TypeError, ValueError) as err:
        raise dump_error(path, str(err)) from err
    # The same checks as load_dump: whatever save_dump writes, load_dump reads back.
    dump = build_dump(path, tensors, meta, validate=True)
    with atomic_write_path(path) as tmp:
        fmt.write(tmp, storable_tensors(dump), stringify_metadata(dump.metadata))  # files hold text
    return path


def load_dump(path, *, validate: bool = True, lazy: bool = False) -> Dump:
    """Read and check a dump written by ``save_dump`` (or by hand, with the same keys).

    ``validate=False`` skips only the O(N*d) scan for NaN/Inf; keys, shapes, dtypes, label
    range and metadata are always checked. Every problem raises ``DumpError`` naming the file.

    ``lazy=True`` leaves the features of a ``.safetensors`` dump on disk: ``dump.features`` is
    then a :class:`~nctools.io.rows.RowSource` that ``nctools.analyze`` reads chunk by chunk (and
    checks for NaN/Inf as it reads), so a dump larger than memory can be analysed. A folder of
    ``part-*.safetensors`` shards (one epoch written by several processes) loads as one dump.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_dump(f"{tmp}/test.npz", torch.eye(3, dtype=torch.float16), torch.tensor([0, 1, 2]),
    ...                      metadata={"epoch": 7, "split": "test", "class_names": ["cat", "dog", "eel"]})
    ...     dump = load_dump(path)
    >>> dump.features.dtype, dump.num_samples, dump.num_classes, dump.epoch, dump.class_names
    (torch.float16, 3, 3, 7, ['cat', 'dog', 'eel'])
    >>> dump.metadata["epoch"], dump.metadata["class_names"]   # with their JSON types
    (7, ['cat', 'dog', 'eel'])
    >>> load_dump("missing.pt")
    Traceback (most recent call last):
    ...
    nctools.io.dump_contents.DumpError: missing.pt: no such file.
    """
    path = Path(path)
    if path.is_dir() and shard_paths(path):
        return _load_shards(path, validate=validate, lazy=lazy)
    fmt = format_of(path)
    _check_is_nonempty_file(path)
    if not (lazy and fmt is FORMATS[".safetensors"]):
        return build_dump(path, *fmt.read(path), validate=validate)
    tensors, metadata = read_safetensors(path, skip=("features",))
    try:
        tensors["features"] = SafetensorsRows(path)
    except SafetensorError:
        pass  # no "features" key: build_dump names what is missing
    except (OSError, ValueError) as err:
        raise dump_error(path, f"features cannot be read ({describe(err)})") from err
    return build_dump(path, tensors, metadata, validate=validate)


def _load_shards(folder: Path, *, validate: bool, lazy: bool) -> Dump:
    """The ``part-*.safetensors`` shards of one folder as one dump: features and labels stacked in
    name order; the classifier, counts and epoch must agree across shards."""
    parts = [load_dump(p, validate=validate, lazy=lazy) for p in shard_paths(folder)]
    first = parts[0]
    for part in parts[1:]:
        for field in ("weight", "bias", "class_counts"):
            mine, theirs = getattr(first, field), getattr(part, field)
            if (mine is None) != (theirs is None) or (mine is not None and not torch.equal(mine, theirs)):
                raise dump_error(part.path, f"its {field} differs from that of {first.path.name}: shards of one "
                                            "dump must share the classifier and counts")
        if part.epoch != first.epoch:
            raise dump_error(part.path, f"it is from epoch {part.epoch}, but {first.path.name} is from epoch "
                                        f"{first.epoch}")
        if part.features.dtype != first.features.dtype:  # as the lazy reader does: no silent promotion
            raise dump_error(part.path, f"its features are {part.features.dtype}, but those of {first.path.name} are "
                                        f"{first.features.dtype}: shards of one dump must share the dtype")
    features = ConcatRows([p.features for p in parts]) if lazy else torch.cat([p.features for p in parts])
    labels = torch.cat([p.labels for p in parts])
    try:
        check_inputs(features, labels, first.weight, first.bias, first.class_counts, num_classes=first.num_classes,
                     finite=False)
    except (TypeError, ValueError) as err:
        raise dump_error(folder, str(err)) from err
    return Dump(features, labels, first.weight, first.bias, first.class_counts, dict(first.metadata), folder)


def _check_is_nonempty_file(path: Path) -> None:
    # Checked up front because each library reports these cases in its own, less clear, words.
    info = check_regular_file(path, dump_error, directory="is a directory, not a dump file")
    if info.st_size == 0:
        raise dump_error(path, "the file is empty (0 bytes); the write that made it probably did not finish")
