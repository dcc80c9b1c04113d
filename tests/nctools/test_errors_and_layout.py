"""The shared errors (nctools.errors) and the run-folder layout (nctools.io.layout)."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from nctools import DumpError
from nctools.errors import InputError, first_line, one_line, os_reason
from nctools.io import layout
from nctools.io.sources import SourceError

# --------------------------------------------------------------------------- errors


def test_the_project_errors_are_input_errors():
    assert issubclass(InputError, ValueError)
    assert issubclass(DumpError, InputError) and issubclass(SourceError, DumpError)


@pytest.mark.parametrize("err, expected", [
    (ValueError("a\n  b\tc "), "a b c"),
    (RuntimeError("one sentence."), "one sentence."),
    (KeyError(), "KeyError"),
    (TypeError("  \n "), "TypeError"),
])
def test_one_line_joins_every_line(err, expected):
    assert one_line(err) == expected


@pytest.mark.parametrize("err, expected", [
    (RuntimeError("first\nsecond"), "first"),
    (RuntimeError("\n  \n  first  \nsecond"), "first"),
    (OSError(), "OSError"),
])
def test_first_line_is_the_first_non_empty_line(err, expected):
    assert first_line(err) == expected


@pytest.mark.parametrize("err, expected", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/staging/x"), "No such file or directory"),
    (OSError(errno.ENOSPC), "No space left on device"),
    (OSError("disk\nfull"), "disk full"),
    (ValueError("not an OSError"), None),
])
def test_os_reason_leaves_out_the_paths(err, expected):
    assert os_reason(err) == expected


# --------------------------------------------------------------------------- layout


def test_names_of_the_run_folder():
    run = Path("run")
    assert layout.record_path(run) == run / "run.json"
    assert layout.checkpoint_path(run, 7) == run / "checkpoints" / "epoch_0007.pt"
    assert layout.epoch_name(12345, ".npz") == "epoch_12345.npz"


@pytest.mark.parametrize("split, folder", [("train", "dumps"), ("test", "dumps-test")])
def test_dump_path_per_split(split, folder):
    assert layout.dump_path(Path("run"), split, 3, "safetensors") == Path("run", folder, "epoch_0003.safetensors")


def test_dump_path_refuses_an_unknown_split():
    with pytest.raises(KeyError):
        layout.dump_path(Path("run"), "val", 1, "pt")


@pytest.mark.parametrize("name, epoch", [
    ("epoch_0007.pt", 7), ("epoch_10000.safetensors", 10000), ("epoch_0003", 3),
    ("epoch_.pt", None), ("epoch_0001.pt.tmp", None), ("run.json", None), ("part-0000.safetensors", None),
    ("my_epoch_0001.pt", None), (".epoch_0002.pt.0123456789ab.tmp", None),
])
def test_epoch_of(name, epoch):
    assert layout.epoch_of(Path("run", "dumps", name)) == epoch


def test_epoch_files_are_in_epoch_order_by_number():
    names = ["epoch_10000.pt", "run.json", "epoch_9999.pt", "epoch_0002.pt", "notes.txt", "epoch_0010"]
    assert [p.name for p in layout.epoch_files(Path(n) for n in names)] == [
        "epoch_0002.pt", "epoch_0010", "epoch_9999.pt", "epoch_10000.pt"]


def test_track_reads_epochs_past_9999_in_order(tmp_path):
    import torch

    from nctools.io.dump import save_dump
    from nctools.report.tracking import epoch_dumps

    for epoch in (10000, 9999, 2):
        save_dump(layout.dump_path(tmp_path, "train", epoch, "pt"), torch.eye(3), torch.arange(3))
    (tmp_path / "dumps" / "epoch_0005.json").write_text("{}")  # not a dump suffix: ignored
    assert [p.name for p in epoch_dumps(tmp_path)] == ["epoch_0002.pt", "epoch_9999.pt", "epoch_10000.pt"]
