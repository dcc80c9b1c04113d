"""Nothing partial, no tracebacks: inputs and situations a hostile (or unlucky) user brings to
nctools' files and reports: special files, symbolic links, random bytes, lying headers, class names that matplotlib
would parse, a full disk, an --out that cannot take the report, umasks, warnings under --quiet.

Every bad case must end with exit status 2 and one sentence naming the file and the problem, write
nothing partial, and show no traceback."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import nctools
from nctools.io.dump import DumpError, load_dump
from nctools.report import plots
from tests.helpers.cli import invoke, leftovers, make_dump, make_run

REPORT = ["cosines.pdf", "icpa.pdf", "metrics.json", "per_class.csv", "per_class.pdf", "report.pdf"]
HOSTILE_NAMES = ["$\\frac{$", "$", "\\", "_^{}", "x" * 300, "猫 🐱 ĉ"]


def one_error_line(result, *phrases) -> str:
    """The single ``Error: ...`` line of a failed command (exit 2), after checking its form."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    line = lines[0]
    assert line.endswith(".") and "Traceback" not in result.output and result.stdout == ""
    assert ".nctools-" not in line and ".tmp" not in line, "the message shows a staging path"
    for phrase in phrases:
        assert phrase in line, line
    return line


def console(*args, cwd, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    exe = shutil.which("nctools")
    assert exe, "the nctools console script is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# --------------------------------------------------------------------------- 4: special files


@pytest.mark.parametrize("name", ["x.safetensors", "x.pt", "x.npz", "x.pth"])
def test_a_named_pipe_is_refused_without_opening_it(tmp_path, name):
    # A real process with a timeout: a library that opens the pipe blocks holding the GIL, so no
    # in-process watchdog could end the wait.
    os.mkfifo(tmp_path / name)
    done = console("analyze", name, "--out", "out", "-q", cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"Error: {name}: is not a regular file (it is a named pipe)."]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_named_pipe_shard_and_a_socket_are_refused_by_load_dump(tmp_path):
    shards = tmp_path / "epoch_0001"
    shards.mkdir()
    make_dump(shards / "part-0.safetensors")
    os.mkfifo(shards / "part-1.safetensors")
    with pytest.raises(DumpError, match="part-1.safetensors: is not a regular file"):
        load_dump(shards, lazy=True)
    sock_path = tmp_path / "s.pt"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(DumpError, match=r"s.pt: is not a regular file \(it is a socket\)"):
            load_dump(sock_path)
        result = invoke("analyze", sock_path, "--out", tmp_path / "out")
        one_error_line(result, "is not a regular file (it is a socket)")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
def test_a_link_to_a_device_is_not_a_regular_file(tmp_path, suffix):
    link = tmp_path / f"zero{suffix}"
    link.symlink_to("/dev/zero")
    one_error_line(invoke("analyze", link, "--out", tmp_path / "out"),
                   f"{link}: is not a regular file (it is a character device).")
    with pytest.raises(DumpError, match="is not a regular file"):
        load_dump(link)
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_loop_and_a_dangling_link_are_named_as_such(tmp_path):
    (tmp_path / "a.pt").symlink_to("b.pt")
    (tmp_path / "b.pt").symlink_to("a.pt")
    one_error_line(invoke("analyze", tmp_path / "a.pt"), f"{tmp_path / 'a.pt'}: is a symbolic link loop.")
    with pytest.raises(DumpError, match="is a symbolic link loop"):
        load_dump(tmp_path / "b.pt")
    (tmp_path / "gone.safetensors").symlink_to("moved.safetensors")
    one_error_line(invoke("analyze", tmp_path / "gone.safetensors"),
                   "gone.safetensors: is a symbolic link to moved.safetensors, which does not exist.")
    one_error_line(invoke("analyze", tmp_path / "never.pt"), "never.pt: no such file.")


# --------------------------------------------------------------------------- 11: random bytes


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".npz"])
def test_random_bytes_are_a_corrupt_file_not_a_pickle(tmp_path, suffix, seed):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    line = one_error_line(invoke("analyze", path, "--out", tmp_path / "out"), str(path), "truncated or corrupt")
    assert "pickled" not in line and "Python objects" not in line and "safely" not in line
    if suffix == ".pt":
        assert line == f"Error: {path}: not a readable .pt file (truncated or corrupt)."
    if suffix != ".pth":
        with pytest.raises(DumpError, match="truncated or corrupt") as info:
            load_dump(path)
        assert "pickled" not in str(info.value) and "safely" not in str(info.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_pickle_that_runs_code_is_still_named_a_refused_global(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps({"features": _RunsCode()}, protocol=2))
    one_error_line(invoke("analyze", path), "could not be loaded safely", "GLOBAL posix.system")
    assert not (tmp_path / "pwned.txt").exists()
    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"features": [1.0]}))
    one_error_line(invoke("analyze", tmp_path / "evil.npz"), "holds pickled Python objects")


# --------------------------------------------------------------------------- 6: a header that lies


def _npz_claiming(path: Path, claimed: str) -> Path:
    """An .npz whose features member holds 12 floats but whose header claims ``claimed``."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 4), np.float32))
    raw = buf.getvalue()
    end = raw.index(b"\n") + 1
    header = raw[:end].replace(b"(3, 4), }", claimed.encode() + b", }")
    header = header[:-1].rstrip(b" ")
    header += b" " * (end - 1 - len(header)) + b"\n"  # the same length: the data stays aligned
    labels = io.BytesIO()
    np.save(labels, np.zeros(3, np.int64))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("features.npy", header + raw[end:])
        z.writestr("labels.npy", labels.getvalue())
    return path


def test_an_npz_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = _npz_claiming(tmp_path / "huge.npz", "(100000000000, 4)")
    line = one_error_line(invoke("analyze", path, "--out", tmp_path / "out"))
    assert line.startswith(f"Error: {path}: 'features' claims shape (100000000000, 4) (1.5 TiB), too large to read")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DumpError, match="claims shape"):
        load_dump(path)


def test_an_npz_member_that_is_not_npy_is_named(tmp_path):
    path = tmp_path / "raw.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("features", b"just some bytes")
        z.writestr("labels.npy", b"")
    one_error_line(invoke("analyze", path), str(path), "'features' is not a .npy array")


def test_a_memory_error_while_reading_is_bad_input(tmp_path, monkeypatch):
    path = make_dump(tmp_path / "d.npz")

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.46 TiB")

    monkeypatch.setattr(np.lib.format, "read_array", no_memory)
    one_error_line(invoke("analyze", path), f"{path}: too large to read into memory.")


# --------------------------------------------------------------------------- 5: class names are user text


def test_hostile_class_names_are_drawn_literally(tmp_path):
    dump = make_dump(tmp_path / "$\\frac{$.safetensors", class_names=HOSTILE_NAMES)
    assert nctools.load_dump(dump).class_names == HOSTILE_NAMES
    out = tmp_path / "out"
    result = invoke("analyze", dump, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == "", "glyph warnings must not reach stderr under --quiet"
    assert sorted(p.name for p in out.iterdir()) == REPORT
    assert pd.read_csv(out / "per_class.csv", keep_default_na=False)["name"].tolist() == HOSTILE_NAMES
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(out / "per_class.pdf"))
    try:
        text = pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()
    for name in ("$\\frac{$ (150)", "$ (60)", "\\ (30)", "_^{} (15)", "x" * 29 + "... (8)"):
        assert name in text, name  # as written, not as mathtext
    assert "($\\frac{$.safetensors)" in text  # the file name in the title too


def test_hostile_names_render_in_every_figure_builder():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(60, 8, generator=g)
    labels = torch.arange(6).repeat(10)
    result = nctools.analyze(features, labels, weight=torch.randn(6, 8, generator=g))
    figures = [plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, 100.0, HOSTILE_NAMES, title="$x"),
               plots.per_class_bars(result.per_class, HOSTILE_NAMES, title="$\\frac{$"),
               plots.icpa_grid([("$\\frac{$", result.icpa_means, result.icpa_classifier),
                                ("_run", result.icpa_means, None)], 100.0, HOSTILE_NAMES),
               plots.curves([plots.Panel("$", "$y$", {"$\\frac{$": ([1, 2], [0.1, 0.2]),
                                                      "_private": ([1, 2], [0.3, 0.4])})], "$", "$\\frac{$")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs
        for fig in figures:
            fig.savefig(io.BytesIO(), format="pdf")
    legend = figures[-1].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["\\$\\frac{\\$", "_private"]  # "_" labels kept


def test_hostile_run_labels_in_compare(tmp_path):
    runs = [make_run(tmp_path / "a", epochs=(1, 2), ratio=10), make_run(tmp_path / "b", epochs=(1, 2), ratio=100)]
    out = tmp_path / "cmp"
    result = invoke("compare", *runs, "--labels", "$\\frac{$,_hidden", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and (out / "report.pdf").is_file()


# --------------------------------------------------------------------------- 11: warnings and --quiet


def test_an_all_nan_self_duality_column_draws_without_a_warning():
    table = pd.DataFrame({"class": [0, 1, 2], "count": [5, 4, 3], "mean_norm": [1.0, 1.0, 1.0],
                          "classifier_norm": [0.0, 0.0, 0.0], "self_duality_cos": [np.nan] * 3,
                          "group": ["few"] * 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.per_class_bars(table, ["a", "b", "c"])
    assert fig.axes[1].get_ylim() == pytest.approx((-0.05, 1.05))


def _zero_classifier_dump(path: Path) -> Path:
    """A classifier of zeros: every self-duality cosine is NaN (the old All-NaN warning)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(8)
    return nctools.save_dump(path, torch.randn(24, 4, generator=g) + 3 * torch.eye(3, 4)[labels], labels,
                             weight=torch.zeros(3, 4), metadata={"class_names": ["猫", "$", "_^{}"]})


def test_quiet_means_nothing_but_the_result_on_stderr_in_a_real_process(tmp_path):
    dump = _zero_classifier_dump(tmp_path / "zero_w.safetensors")
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning would be shown
    done = console("analyze", dump, "--out", "rep", "-q", "--format", "json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and json.loads(done.stdout)["summary"]["num_classes"] == 3
    loud = console("analyze", dump, "--out", "rep2", cwd=tmp_path, env=env)
    assert loud.returncode == 0, loud.stderr
    assert "All-NaN" not in loud.stderr  # the cause is gone, not only hidden
    for line in loud.stderr.splitlines():  # warnings, when shown, are one line each with no source excerpt
        assert line.startswith(("Warning: ", "wrote ")), loud.stderr


def test_warnings_are_one_line_each_and_quiet_leaves_the_filters_as_they_were(tmp_path, monkeypatch):
    import nctools.report.writer as writer

    real = writer.analysis_figures

    def warns(*args, **kwargs):
        for _ in range(3):
            warnings.warn("something odd\nover two lines", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "analysis_figures", warns)
    dump = make_dump(tmp_path / "d.safetensors")
    before = list(warnings.filters)
    loud = invoke("analyze", dump, "--out", tmp_path / "a")
    assert loud.exit_code == 0 and loud.stderr.splitlines()[0] == "Warning: something odd over two lines"
    assert loud.stderr.count("Warning:") == 1
    quiet = invoke("analyze", dump, "--out", tmp_path / "b", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert warnings.filters == before


# --------------------------------------------------------------------------- 6: a full disk


def test_a_full_disk_while_writing_is_one_sentence(tmp_path, monkeypatch):
    import nctools.report.writer as writer

    def full(data, path):
        raise OSError(errno.ENOSPC)

    monkeypatch.setattr(writer, "_write_json", full)
    dump = make_dump(tmp_path / "d.safetensors")
    out = tmp_path / "new" / "out"
    result = invoke("analyze", dump, "--out", out)
    assert one_error_line(result) == f"Error: {out}: cannot write the report (No space left on device)."
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.json").write_text("previous")
    result = invoke("analyze", dump, "--out", existing)
    assert one_error_line(result) == f"Error: {existing}: cannot write the report (No space left on device)."
    assert [p.name for p in existing.iterdir()] == ["metrics.json"]
    assert (existing / "metrics.json").read_text() == "previous" and leftovers(tmp_path) == []


class _FillingDisk:
    """A file handle on a disk with ``budget`` bytes left: the write that does not fit fails with ENOSPC."""

    def __init__(self, fh, budget: int):
        self._fh, self._left = fh, budget

    def write(self, data):
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_matplotlibs_own_error_on_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    """matplotlib's PDF writer turns ENOSPC into other errors while it cleans up (an AttributeError:
    'Stream' object has no attribute 'pos', a zlib error); the report says what happened."""
    import matplotlib.cbook

    real = matplotlib.cbook.to_filehandle
    dump = make_dump(tmp_path / "d.safetensors")
    causes = set()
    for budget in (0, 300, 1000, 3000, 6000, 12000):
        def filling(fname, flag="r", return_opened=False, encoding=None, budget=budget):
            fh, opened = real(fname, flag, True, encoding)
            fh = _FillingDisk(fh, budget) if "w" in flag else fh
            return (fh, opened) if return_opened else fh

        monkeypatch.setattr(matplotlib.cbook, "to_filehandle", filling)
        out = tmp_path / f"out{budget}"
        result = invoke("analyze", dump, "--out", out)
        assert one_error_line(result) == f"Error: {out}: cannot write the report (No space left on device)."
        assert not out.exists() and leftovers(tmp_path) == []
        debug = invoke("analyze", dump, "--out", out, env={"NCTOOLS_DEBUG": "1"})
        causes.add(type(debug.exception.__cause__).__name__)
    assert causes - {"OSError"}, f"matplotlib raised only OSError ({causes}): the disguised case was not met"


def test_a_file_size_limit_in_a_real_process_is_one_sentence(tmp_path):
    """No monkeypatching: the kernel refuses the writes (EFBIG) once a file passes 9 kB."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (9000, 9000))

    dump = make_dump(tmp_path / "d.safetensors")
    done = console("analyze", dump, "--out", "rep", "-q", cwd=tmp_path, preexec_fn=limit)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["Error: rep: cannot write the report (File too large)."]
    assert not (tmp_path / "rep").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 7: the final move


def _old_report(out: Path) -> dict:
    out.mkdir()
    (out / "metrics.json").write_text("old metrics")
    (out / "per_class.csv").write_text("old csv")
    (out / "notes.txt").write_text("mine")
    return _contents(out)


def _contents(out: Path) -> dict:
    return {p.name: (p.read_text() if p.is_file() else "<dir>") for p in sorted(out.iterdir())}


def test_a_directory_in_the_way_is_refused_before_anything_moves(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("old metrics")
    (out / "per_class.csv").mkdir()
    before = _contents(out)
    result = invoke("analyze", make_dump(tmp_path / "d.safetensors"), "--out", out)
    line = one_error_line(result)
    assert line == (f"Error: {out / 'per_class.csv'}: is a directory, so the report cannot put its per_class.csv "
                    "there; nothing was written.")
    assert _contents(out) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_move_that_fails_half_way_is_rolled_back(tmp_path, monkeypatch, hard_links):
    import nctools.report.staging as writer  # where the staged files are moved into place

    out = tmp_path / "out"
    before = _old_report(out)
    real_replace = os.replace

    def replace(src, dst, **kwargs):
        if Path(dst) == out / "per_class.pdf":  # the fifth of six files
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(writer.os, "replace", replace)
    if not hard_links:
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(writer.os, "link", no_link)
    result = invoke("analyze", make_dump(tmp_path / "d.safetensors"), "--out", out)
    line = one_error_line(result)
    assert line == (f"Error: {out / 'per_class.pdf'}: cannot write the report (Input/output error); "
                    f"{out} was left as it was.")
    assert _contents(out) == before and leftovers(tmp_path) == []


def test_a_good_run_into_an_existing_out_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "out"
    _old_report(out)
    result = invoke("analyze", make_dump(tmp_path / "d.safetensors"), "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([*REPORT, "notes.txt"])
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "metrics.json").read_text())
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 11: --out


@pytest.mark.parametrize("command", ["analyze", "compare", "demo"])
@pytest.mark.parametrize("out, message", [
    ("", "Error: --out is empty: give the folder the report should be written to."),
    ("/", "Error: /: is the root of the file system; give --out a folder of its own for the report."),
    ("afile", "Error: afile: --out exists and is not a directory."),
    ("afile/sub", "Error: afile/sub: cannot be created, because afile is not a directory."),
])
def test_an_unusable_out_is_refused_before_any_work(tmp_path, monkeypatch, command, out, message):
    import nctools.io.dump
    import nctools.io.sources

    def no_work(*args, **kwargs):
        raise AssertionError("the input was read before --out was checked")

    monkeypatch.setattr(nctools.io.sources, "load_source", no_work)
    monkeypatch.setattr(nctools.io.dump, "load_dump", no_work)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    args = {"analyze": ["analyze", "d.safetensors"], "compare": ["compare", "a", "b"], "demo": ["demo"]}[command]
    result = invoke(*args, "--out", out)
    assert one_error_line(result) == message
    assert (tmp_path / "afile").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_out_that_resolves_to_the_root_is_refused(tmp_path):
    (tmp_path / "root").symlink_to("/")
    one_error_line(invoke("analyze", "d.safetensors", "--out", tmp_path / "root"), "is the root of the file system")


# --------------------------------------------------------------------------- 9: file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [make_dump(tmp_path / f"d{suffix}") for suffix in (".safetensors", ".pt", ".npz")]
        result = invoke("analyze", paths[0], "--out", tmp_path / "out", "-q")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for path in paths + sorted((tmp_path / "out").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == mode, f"{path.name}: {oct(stat.S_IMODE(path.stat().st_mode))}"



def test_a_slow_legend_on_a_loaded_machine_prints_nothing(tmp_path, monkeypatch):
    """matplotlib warns when a loc="best" legend took over a second to place, which happens under load
    only: the report's output must not depend on how busy the machine is."""
    import types

    import matplotlib.legend

    clock = iter(range(0, 10**6, 5))  # every reading 5 s after the last: each placement "takes" 5 s
    monkeypatch.setattr(matplotlib.legend, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    result = invoke("analyze", make_dump(tmp_path / "d.safetensors"), "--out", tmp_path / "out")
    assert result.exit_code == 0 and 'loc="best"' not in result.stderr, result.stderr
