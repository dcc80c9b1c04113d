"""The three containers of a feature dump, chosen by suffix: how each one is read and written.

- ``.safetensors``: the tensors, with the metadata in the header; loading runs no code.
- ``.pt``: a plain dict of the tensors plus ``"metadata": {str: str}``, read only with
  ``torch.load(weights_only=True)`` (:func:`~nctools.io.safe_files.load_pt`).
- ``.npz``: the arrays plus a 0-d string array ``metadata`` holding JSON, read with
  ``allow_pickle=False``. numpy has no bfloat16, so bfloat16 tensors are written as float32.

A reader returns ``({file key: what the file holds there}, raw metadata)`` for the dump's own keys
only, and turns the library's decoding errors into ``DumpError``;
:func:`~nctools.io.dump_contents.build_dump` checks the rest. A writer writes checked tensors to a
temporary path (``save_dump`` renames it into place).
"""
from __future__ import annotations

import json
import math
import pickle
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nctools.errors import describe
from nctools.io.dump_contents import KEYS_SENTENCE, TENSOR_KEYS, Dump, DumpError, dump_error
from nctools.io.safe_files import load_pt

__all__ = ["FORMATS", "format_of", "read_safetensors", "storable_tensors"]

METADATA_KEY = "metadata"  # the .pt dict entry and the .npz array that hold the metadata


class Format(NamedTuple):
    read: Callable[[Path], tuple[dict[str, Any], Any]]
    write: Callable[[Path, dict[str, torch.Tensor], dict[str, str]], None]


def format_of(path: Path) -> Format:
    """The container that ``path``'s suffix names; any other suffix is a ``DumpError``."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        suffix = repr(path.suffix) if path.suffix else "no suffix"
        raise dump_error(path, f"unsupported file type ({suffix}); a dump ends with {', '.join(FORMATS)}")
    return fmt


def storable_tensors(dump: Dump) -> dict[str, torch.Tensor]:
    """File key -> the tensor to write: on the CPU, contiguous, and owning its storage."""
    out = {}
    for key, field in TENSOR_KEYS.items():
        tensor = getattr(dump, field)
        if tensor is not None:
            tensor = tensor.detach().cpu().contiguous()
            # torch.save writes a view's whole storage and safetensors refuses shared storage,
            # so a view into a bigger buffer is copied out.
            out[key] = tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()
    return out


# --------------------------------------------------------------------------- .safetensors


def read_safetensors(path: Path, skip: tuple = ()) -> tuple[dict[str, Any], Any]:
    try:
        # safe_open rather than load_file: one open gives the header metadata, and only the
        # dump's own keys are read, so extra tensors (a whole state dict, say) cost nothing.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            tensors = {key: f.get_tensor(key) for key in TENSOR_KEYS if key in present and key not in skip}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise dump_error(path, f"truncated or corrupt ({describe(err)})") from err
    return tensors, metadata


def _write_safetensors(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    save_file(tensors, str(tmp), metadata=metadata)


# --------------------------------------------------------------------------- .pt


def _read_pt(path: Path) -> tuple[dict[str, Any], Any]:
    obj = load_pt(path, expected=f"a dict of tensors; {KEYS_SENTENCE}")
    tensors = {key: obj[key] for key in TENSOR_KEYS if key in obj}
    return tensors, obj.get(METADATA_KEY, {})


def _write_pt(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    torch.save({**tensors, METADATA_KEY: dict(metadata)}, tmp)


# --------------------------------------------------------------------------- .npz

# As for .pt: what np.load raised on fuzzed .npz files (zlib.error from savez_compressed ones).
_NPZ_DECODE_ERRORS = (
    zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, zlib.error, tokenize.TokenError,
    SyntaxError, KeyError, OSError, RuntimeError,  # RuntimeError: zipfile on an "encrypted" member
)


def _read_npz(path: Path) -> tuple[dict[str, Any], Any]:
    try:
        archive = np.load(path, allow_pickle=False)
    except _NPZ_DECODE_ERRORS as err:
        raise dump_error(path, _npz_problem(err, path)) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise dump_error(path, "not an .npz archive: it holds a single .npy array")
    with archive:
        wanted = [key for key in (*TENSOR_KEYS, METADATA_KEY) if key in archive.files]
        try:  # members are decoded lazily, so damage inside one shows up here
            for key in wanted:
                _check_npz_member_size(path, archive, key)
            arrays = {key: archive[key] for key in wanted}
        except DumpError:
            raise
        except _NPZ_DECODE_ERRORS as err:
            raise dump_error(path, _npz_problem(err, member=True)) from err
        except MemoryError as err:
            raise dump_error(path, "too large to read into memory") from err
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):  # a member that is not a .npy file: numpy gives its bytes
            raise dump_error(path, f"{key!r} is not a .npy array inside the archive")
    metadata = _npz_metadata(path, arrays.pop(METADATA_KEY, None))
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
    return f"truncated or corrupt ({describe(err)})"


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
        raise dump_error(path, f"{key!r} claims shape {tuple(shape)} ({_size(needed)}), too large to read: the "
                               f"archive holds {_size(max(held, 0))} for it")


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"


def _tensor_from_npz(path: Path, key: str, array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind not in "biufc":
        raise dump_error(path, f"{key!r} holds an array of dtype {array.dtype}, not numbers")
    # torch.from_numpy refuses non-native byte order, which a hand-made .npz may use.
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))


def _npz_metadata(path: Path, array: np.ndarray | None) -> Any:
    if array is None:
        return {}
    if array.ndim != 0 or array.dtype.kind != "U":
        raise dump_error(
            path, f"metadata must be a 0-d string array holding JSON, got dtype {array.dtype} shape {array.shape}"
        )
    try:
        return json.loads(array.item())
    except json.JSONDecodeError as err:
        raise dump_error(path, f"metadata is not valid JSON ({err.msg} at character {err.pos})") from err


def _write_npz(tmp: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # float32 holds every bfloat16 value exactly, and numpy has no bfloat16.
    arrays = {key: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for key, t in tensors.items()}
    arrays[METADATA_KEY] = np.array(json.dumps(metadata))
    with open(tmp, "wb") as f:  # a file object: given a bare name, np.savez would append ".npz"
        np.savez(f, **arrays)


FORMATS = {
    ".safetensors": Format(read_safetensors, _write_safetensors),
    ".pt": Format(_read_pt, _write_pt),
    ".npz": Format(_read_npz, _write_npz),
}
