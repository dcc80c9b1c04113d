"""Feature dumps: the file format shared by the bundled trainer and the toolkit
(docs/DEFINITIONS.md, "The feature dump format").

A dump holds the penultimate features of one split at one epoch with their labels and the last
linear layer, under fixed keys::

    features            (N, d)  float16 / bfloat16 / float32 / float64, kept as stored
    labels              (N,)    int64 class indices in [0, C)
    classifier.weight   (C, d)  optional
    classifier.bias     (C,)    optional
    class_counts        (C,)    int64 training counts, optional (the many/few split of a test dump)

and string metadata (``epoch``, ``split``, ``dataset``, ``imbalance_ratio``, ``method``,
``class_names`` as a JSON list, ``format_version``). Three containers carry it, chosen by suffix:

- ``.safetensors``: the tensors, with the metadata in the header; loading runs no code.
- ``.pt``: a plain dict of the tensors plus ``"metadata": {str: str}``, read only with
  ``torch.load(weights_only=True)`` so that a file from a stranger cannot run code.
- ``.npz``: the arrays plus a 0-d string array ``metadata`` holding JSON, read with
  ``allow_pickle=False``. numpy has no bfloat16, so bfloat16 tensors are written as float32.

Extra tensors in a file are ignored; anything wrong with the dump's own keys is a ``DumpError``
whose one sentence names the file and the problem.
"""
from __future__ import annotations

import errno
import json
import math
import os
import pickle
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nctools.core.validation import as_tensor, check_inputs
from nctools.io.atomic import atomic_write_path
from nctools.io.rows import ConcatRows, RowSource, SafetensorsRows, shard_paths

__all__ = ["Dump", "DumpError", "FORMAT_VERSION", "load_dump", "save_dump", "check_regular_file", "load_pt"]

FORMAT_VERSION = "1"

# File key -> Dump field, in the order of save_dump's arguments: the one table every format uses.
_TENSOR_KEYS = {
    "features": "features",
    "labels": "labels",
    "classifier.weight": "weight",
    "classifier.bias": "bias",
    "class_counts": "class_counts",
}
_REQUIRED_KEYS = ("features", "labels")
_METADATA_KEY = "metadata"  # the .pt dict entry and the .npz array that hold the metadata
_KEYS_SENTENCE = "a dump holds features and labels, and optionally classifier.weight, classifier.bias and class_counts"


class DumpError(ValueError):
    """A dump file, or the data given to ``save_dump``, is unusable.

    The message is one sentence, ``"<path>: <problem>."``, fit to show a user as it is.
    """


@dataclass
class Dump:
    """The contents of one feature dump; tensors as stored (features are not upcast)."""

    features: torch.Tensor | RowSource  # (N, d) floating; a RowSource when loaded lazily
    labels: torch.Tensor  # (N,) int64
    weight: torch.Tensor | None  # (C, d), "classifier.weight"
    bias: torch.Tensor | None  # (C,), "classifier.bias"
    class_counts: torch.Tensor | None  # (C,) int64 training counts
    metadata: dict[str, str]
    path: Path | None = None

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        """C, resolved as ``check_inputs`` does: classifier rows, class_counts, class_names, labels."""
        for source in (self.weight, self.class_counts):
            if source is not None:
                return int(source.shape[0])
        names = self.class_names
        return len(names) if names is not None else int(self.labels.max()) + 1

    @property
    def class_names(self) -> list[str] | None:
        return _parse_class_names(self.metadata)

    @property
    def epoch(self) -> int | None:
        return _parse_optional(self.metadata, "epoch", int)

    @property
    def imbalance_ratio(self) -> float | None:
        return _parse_optional(self.metadata, "imbalance_ratio", float)

    @property
    def split(self) -> str | None:
        return self.metadata.get("split")

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("dataset")

    @property
    def method(self) -> str | None:
        return self.metadata.get("method")

    @property
    def format_version(self) -> str | None:
        return self.metadata.get("format_version")


# --------------------------------------------------------------------------- public functions


def save_dump(path, features, labels, weight=None, bias=None, class_counts=None, metadata=None) -> Path:
    """Check a dump and write it atomically to ``path`` (format by suffix); return the path.

    Tensors or numpy arrays are accepted and stored on the CPU in their own dtype (labels and
    class_counts as int64). Metadata values that are not strings are stored as text: numbers
    with ``str``, lists and dicts as JSON; ``format_version`` is set to ``FORMAT_VERSION``. The
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
    fmt = _format_of(path)
    try:
        given = zip(_TENSOR_KEYS.items(), (features, labels, weight, bias, class_counts))
        tensors = {key: as_tensor(value, field) for (key, field), value in given if value is not None}
        meta = {**stringify_metadata(metadata), "format_version": FORMAT_VERSION}
    except (TypeError, ValueError) as err:
        raise _error(path, str(err)) from err
    # The same checks as load_dump: whatever save_dump writes, load_dump reads back.
    dump = _build_dump(path, tensors, meta, validate=True)
    with atomic_write_path(path) as tmp:
        fmt.write(tmp, _storable_tensors(dump), dump.metadata)
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
    >>> load_dump("missing.pt")
    Traceback (most recent call last):
    ...
    nctools.io.dump.DumpError: missing.pt: no such file.
    """
    path = Path(path)
    if path.is_dir() and shard_paths(path):
        return _load_shards(path, validate=validate, lazy=lazy)
    fmt = _format_of(path)
    _check_is_nonempty_file(path)
    if not (lazy and fmt is _FORMATS[".safetensors"]):
        return _build_dump(path, *fmt.read(path), validate=validate)
    tensors, metadata = _read_safetensors(path, skip=("features",))
    try:
        tensors["features"] = SafetensorsRows(path)
    except SafetensorError:
        pass  # no "features" key: _build_dump names what is missing
    except (OSError, ValueError) as err:
        raise _error(path, f"features cannot be read ({_describe(err)})") from err
    return _build_dump(path, tensors, metadata, validate=validate)


def _load_shards(folder: Path, *, validate: bool, lazy: bool) -> Dump:
    """The ``part-*.safetensors`` shards of one folder as one dump: features and labels stacked in
    name order; the classifier, counts and epoch must agree across shards."""
    parts = [load_dump(p, validate=validate, lazy=lazy) for p in shard_paths(folder)]
    first = parts[0]
    for part in parts[1:]:
        for field in ("weight", "bias", "class_counts"):
            mine, theirs = getattr(first, field), getattr(part, field)
            if (mine is None) != (theirs is None) or (mine is not None and not torch.equal(mine, theirs)):
                raise _error(part.path, f"its {field} differs from that of {first.path.name}: shards of one dump "
                                        "must share the classifier and counts")
        if part.epoch != first.epoch:
            raise _error(part.path, f"it is from epoch {part.epoch}, but {first.path.name} is from epoch {first.epoch}")
    features = ConcatRows([p.features for p in parts]) if lazy else torch.cat([p.features for p in parts])
    labels = torch.cat([p.labels for p in parts])
    try:
        check_inputs(features, labels, first.weight, first.bias, first.class_counts, num_classes=first.num_classes,
                     finite=False)
    except (TypeError, ValueError) as err:
        raise _error(folder, str(err)) from err
    return Dump(features, labels, first.weight, first.bias, first.class_counts, dict(first.metadata), folder)


# --------------------------------------------------------------------------- checks shared by every format


def _error(path: Path, problem: str) -> DumpError:
    return DumpError(f"{path}: {problem.rstrip().rstrip('.')}.")


def _format_of(path: Path) -> _Format:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        suffix = repr(path.suffix) if path.suffix else "no suffix"
        raise _error(path, f"unsupported file type ({suffix}); a dump ends with {', '.join(_FORMATS)}")
    return fmt


def _check_is_nonempty_file(path: Path) -> None:
    # Checked up front because each library reports these cases in its own, less clear, words.
    info = check_regular_file(path, _error, directory="is a directory, not a dump file")
    if info.st_size == 0:
        raise _error(path, "the file is empty (0 bytes); the write that made it probably did not finish")


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))


def check_regular_file(path: Path, error: Callable[[Path, str], Exception] = _error, *,
                       directory: str = "is a directory") -> os.stat_result:
    """The ``stat`` of ``path`` (symbolic links followed) when it is a regular file; otherwise
    ``error(path, problem)`` is raised, before anything opens it: opening a named pipe would block
    for ever, and a device (a link to /dev/zero, say) never ends.

    >>> check_regular_file(Path("/dev/null"))
    Traceback (most recent call last):
    ...
    nctools.io.dump.DumpError: /dev/null: is not a regular file (it is a character device).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(path, f"is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise error(path, "no such file") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error(path, "is a symbolic link loop") from None
        raise error(path, f"cannot be read ({_describe(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(path, directory)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), None)
        raise error(path, "is not a regular file" + (f" (it is {kind})" if kind else ""))
    return info


def _build_dump(path: Path, tensors: dict[str, Any], metadata: Any, *, validate: bool) -> Dump:
    """The one place where a dump is checked and assembled, for every format, on load and on save.

    ``tensors`` maps file keys (only those of ``_TENSOR_KEYS``) to what the file held there.
    """
    try:
        fields = _tensor_fields(tensors)
        meta = _check_metadata(metadata)
        names = _parse_class_names(meta)
        # Without classifier rows or counts, the class names are what fix C (a split may lack a class).
        names_fix_c = names is not None and "weight" not in fields and "class_counts" not in fields
        checked = check_inputs(
            fields["features"],
            fields["labels"],
            fields.get("weight"),
            fields.get("bias"),
            fields.get("class_counts"),
            num_classes=len(names) if names_fix_c else None,
            finite=validate,
        )
        if names is not None and len(names) != checked.num_classes:
            raise ValueError(
                f"metadata class_names lists {len(names)} names but the dump has {checked.num_classes} classes"
            )
    except (TypeError, ValueError) as err:
        raise _error(path, str(err)) from err
    return Dump(
        features=checked.features,
        labels=checked.labels,
        weight=checked.weight,
        bias=checked.bias,
        class_counts=checked.class_counts,
        metadata=meta,
        path=path,
    )


def _tensor_fields(tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """File keys -> Dump field names, after checking that the required keys hold dense tensors."""
    for key in _REQUIRED_KEYS:
        if key not in tensors:
            raise ValueError(f"missing the {key!r} tensor; {_KEYS_SENTENCE}")
    fields = {}
    for key, value in tensors.items():
        if isinstance(value, RowSource):  # features left on disk (lazy=True)
            fields[_TENSOR_KEYS[key]] = value
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key!r} holds a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise TypeError(f"{key!r} is a {value.layout} tensor; a dump holds dense tensors")
        # A .pt may store nn.Parameter objects; the dump is data, not part of a graph.
        fields[_TENSOR_KEYS[key]] = value.detach()
    return fields


def _check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of strings, got a {type(metadata).__name__}")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(
                f"metadata must map strings to strings, but it holds {_short(key)}: {_short(value)} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
    version = metadata.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown format_version {version!r}; this nctools reads format_version {FORMAT_VERSION!r}")
    # Parsed here once so that the Dump properties never fail on a loaded dump.
    _parse_optional(metadata, "epoch", int)
    _parse_optional(metadata, "imbalance_ratio", float)
    return dict(metadata)


def _parse_optional(metadata: dict[str, str], key: str, parse: Callable[[str], Any]):
    if key not in metadata:
        return None
    try:
        return parse(metadata[key])
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise ValueError(f"metadata {key} must be {kind}, got {_short(metadata[key])}") from None


def _parse_class_names(metadata: dict[str, str]) -> list[str] | None:
    raw = metadata.get("class_names")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise ValueError(f"metadata class_names must be a JSON list of at least 2 strings, got {_short(raw)}")
    return names


def stringify_metadata(metadata: dict | None) -> dict[str, str]:
    """Every metadata format holds strings only: numbers via ``str``, lists and dicts as JSON."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got a {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {_short(key)}")
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bool, int, float, np.integer, np.floating)):
            out[key] = str(value)
        elif isinstance(value, (list, tuple, dict)):
            try:
                out[key] = json.dumps(value)
            except (TypeError, ValueError) as err:
                raise TypeError(f"metadata {key!r} cannot be written as JSON: {err}") from None
        else:
            raise TypeError(f"metadata {key!r} must be a str, number, list or dict, got a {type(value).__name__}")
    return out


def _storable_tensors(dump: Dump) -> dict[str, torch.Tensor]:
    out = {}
    for key, field in _TENSOR_KEYS.items():
        tensor = getattr(dump, field)
        if tensor is not None:
            tensor = tensor.detach().cpu().contiguous()
            # torch.save writes a view's whole storage and safetensors refuses shared storage,
            # so a view into a bigger buffer is copied out.
            out[key] = tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()
    return out


def _describe(err: BaseException) -> str:
    """The exception type and the first sentence of its message: library messages run to paragraphs."""
    lines = str(err).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".")[:200] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- the three containers
# A reader returns ({file key: what the file holds there}, raw metadata) for the dump's own keys
# only, and turns the library's decoding errors into DumpError; _build_dump checks the rest.


def _read_safetensors(path: Path, skip: tuple = ()) -> tuple[dict[str, Any], Any]:
    try:
        # safe_open rather than load_file: one open gives the header metadata, and only the
        # dump's own keys are read, so extra tensors (a whole state dict, say) cost nothing.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            tensors = {key: f.get_tensor(key) for key in _TENSOR_KEYS if key in present and key not in skip}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise _error(path, f"truncated or corrupt ({_describe(err)})") from err
    return tensors, metadata


def _write_safetensors(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    save_file(tensors, str(tmp), metadata=metadata)


# torch.load's errors on damaged bytes are many and undocumented: these are the types that
# truncated and bit-flipped .pt files (zip and legacy) raised when fuzzed (tests/test_dump.py).
_PT_DECODE_ERRORS = (
    RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, AssertionError,
    struct.error, OSError,
)


def load_pt(path: Path, error: Callable[[Path, str], Exception] = _error, *, map_location="cpu",
            refusal: str = "it is not a plain tensor dict", expected: str = "a dict") -> dict:
    """The top-level dict of a ``.pt`` file, read with ``torch.load(weights_only=True)`` so that a
    file from a stranger cannot run code; every problem is ``error(path, one sentence)``.

    ``refusal`` says what a refused pickle is, ``expected`` what the file should hold instead of
    whatever non-dict it holds. The one safe ``.pt`` reader of the project (dumps, state dicts,
    the trainer's checkpoints).
    """
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only=True refuses every global outside torch's allow-list, which is exactly
        # what a pickle that runs code (or holds arbitrary objects) needs. Damaged bytes stop the
        # same unpickler, and are told apart by what it says.
        reason = refused_global(err)
        if reason is None:
            raise error(path, f"not a readable {path.suffix or '.pt'} file (truncated or corrupt)") from err
        raise error(path, f"could not be loaded safely: {refusal} "
                          f"(torch.load with weights_only=True refused it: {reason})") from err
    except _PT_DECODE_ERRORS as err:
        raise error(path, f"truncated or corrupt ({_describe(err)})") from err
    except MemoryError as err:
        raise error(path, "too large to read into memory") from err
    if not isinstance(obj, dict):
        raise error(path, f"holds a {type(obj).__name__}, not {expected}")
    return obj


def _read_pt(path: Path) -> tuple[dict[str, Any], Any]:
    obj = load_pt(path, expected=f"a dict of tensors; {_KEYS_SENTENCE}")
    tensors = {key: obj[key] for key in _TENSOR_KEYS if key in obj}
    return tensors, obj.get(_METADATA_KEY, {})


# What torch's weights_only unpickler says when it refuses something the pickle asks for (a global,
# a class to build, a function to call), as opposed to bytes it cannot decode at all.
_REFUSALS = ("GLOBAL ", "Can only create new object", "Trying to call reduce", "Can only build",
             "must be imported to load")


def refused_global(err: pickle.UnpicklingError) -> str | None:
    """The line of a ``torch.load(weights_only=True)`` refusal that names what the file asked for
    (a global, a class, a function), or ``None`` when the unpickler stopped on bytes that are not a
    valid pickle at all (a truncated or corrupt file, random bytes)."""
    # torch's message is several paragraphs of advice; the line naming the refused global is the
    # part that says what the file tried to do.
    for line in str(err).splitlines():
        if any(marker in line for marker in _REFUSALS):
            return line.strip().rstrip(".")
    return None


def _write_pt(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    torch.save({**tensors, _METADATA_KEY: dict(metadata)}, tmp)


# As for .pt: what np.load raised on fuzzed .npz files (zlib.error from savez_compressed ones).
_NPZ_DECODE_ERRORS = (
    zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, zlib.error, tokenize.TokenError,
    SyntaxError, KeyError, OSError, RuntimeError,  # RuntimeError: zipfile on an "encrypted" member
)


def _read_npz(path: Path) -> tuple[dict[str, Any], Any]:
    try:
        archive = np.load(path, allow_pickle=False)
    except _NPZ_DECODE_ERRORS as err:
        raise _error(path, _npz_problem(err, path)) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _error(path, "not an .npz archive: it holds a single .npy array")
    with archive:
        wanted = [key for key in (*_TENSOR_KEYS, _METADATA_KEY) if key in archive.files]
        try:  # members are decoded lazily, so damage inside one shows up here
            for key in wanted:
                _check_npz_member_size(path, archive, key)
            arrays = {key: archive[key] for key in wanted}
        except DumpError:
            raise
        except _NPZ_DECODE_ERRORS as err:
            raise _error(path, _npz_problem(err, member=True)) from err
        except MemoryError as err:
            raise _error(path, "too large to read into memory") from err
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):  # a member that is not a .npy file: numpy gives its bytes
            raise _error(path, f"{key!r} is not a .npy array inside the archive")
    metadata = _npz_metadata(path, arrays.pop(_METADATA_KEY, None))
    return {key: _tensor_from_npz(path, key, array) for key, array in arrays.items()}, metadata


def _npz_problem(err: BaseException, path: Path | None = None, *, member: bool = False) -> str:
    """What np.load's error means: numpy takes any file that is neither a zip nor a .npy for a
    pickle, so "pickled" is said only of an object array inside the archive, or of a file that
    starts like a pickle."""
    if isinstance(err, ValueError) and "allow_pickle" in str(err):
        if member:
            return "holds pickled Python objects (an object array), which are refused so that no code runs on load"
        if path is not None and _starts_like_a_pickle(path):
            return "holds pickled Python objects, which are refused so that no code runs on load"
        return "not a readable .npz file (truncated or corrupt)"
    return f"truncated or corrupt ({_describe(err)})"


def _starts_like_a_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def _check_npz_member_size(path: Path, archive, key: str) -> None:
    """Refuse a member whose .npy header claims more data than the archive holds for it, before
    numpy allocates the whole array (a header is a few bytes anyone can edit)."""
    names = archive.zip.namelist()
    member = f"{key}.npy" if f"{key}.npy" in names else key
    info = archive.zip.getinfo(member)
    with archive.zip.open(info) as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            return  # not a .npy member: found out when it is read
        f.seek(0)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return  # newer headers: numpy reads (and checks) them itself
        held = info.file_size - f.tell()
    if dtype.hasobject:
        return  # an object array is refused when it is read
    needed = math.prod(shape) * dtype.itemsize
    if needed > held:
        raise _error(path, f"{key!r} claims shape {tuple(shape)} ({_size(needed)}), too large to read: the archive "
                           f"holds {_size(max(held, 0))} for it")


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"


def _tensor_from_npz(path: Path, key: str, array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind not in "biufc":
        raise _error(path, f"{key!r} holds an array of dtype {array.dtype}, not numbers")
    # torch.from_numpy refuses non-native byte order, which a hand-made .npz may use.
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))


def _npz_metadata(path: Path, array: np.ndarray | None) -> Any:
    if array is None:
        return {}
    if array.ndim != 0 or array.dtype.kind != "U":
        raise _error(
            path, f"metadata must be a 0-d string array holding JSON, got dtype {array.dtype} shape {array.shape}"
        )
    try:
        return json.loads(array.item())
    except json.JSONDecodeError as err:
        raise _error(path, f"metadata is not valid JSON ({err.msg} at character {err.pos})") from err


def _write_npz(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # float32 holds every bfloat16 value exactly, and numpy has no bfloat16.
    arrays = {key: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for key, t in tensors.items()}
    arrays[_METADATA_KEY] = np.array(json.dumps(metadata))
    with open(tmp, "wb") as f:  # a file object: given a bare name, np.savez would append ".npz"
        np.savez(f, **arrays)


class _Format(NamedTuple):
    read: Callable[[Path], tuple[dict[str, Any], Any]]
    write: Callable[[Path, dict[str, torch.Tensor], dict[str, str]], None]


_FORMATS = {
    ".safetensors": _Format(_read_safetensors, _write_safetensors),
    ".pt": _Format(_read_pt, _write_pt),
    ".npz": _Format(_read_npz, _write_npz),
}
