"""The trainer under hostile conditions: no lost runs, no tracebacks, nothing partial.

- two runs on one ``--out``: the run directory is locked (``out/run.lock``), the second run and a
  ``--resume`` of a live run are refused at once naming the holder; a dead holder's lock blocks nobody;
- file-system errors (``--out`` a file, read-only, full disk) are one line and exit 2, before any
  training where they can be seen up front, and a run stopped by a full disk resumes to the same weights;
- the hidden temporaries a ``kill -9`` leaves mid-write are removed when the run is resumed, and
  nothing else is.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import allnc_train.train as train_module
import nctools.io.atomic as atomic
from allnc_train.checkpoint import latest_checkpoint
from allnc_train.cli import CONFIG_DIR, main
from allnc_train.config import load_config
from allnc_train.rundir import RunLock, remove_stale_temporaries, stale_temporaries
from allnc_train.train import RunError, train
from nctools.io.layout import LOCK
from tests.helpers.launch import run_processes
from tests.helpers.paths import REPO

FAST = ["run.progress=false", "run.dump_every=0", "optim.epochs=3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the thread count of this process: bitwise-equal sums

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ufm(*extra: str):
    return load_config(CONFIG_DIR / "ufm_lt_r100_ce.yaml", [*FAST, *extra])


def _cli_args(out: Path, *extra: str) -> list[str]:
    return ["--config", "ufm_lt_r100_ce", "--out", str(out), "--set", *FAST, *extra]


@pytest.fixture
def cli(capsys):
    """``cli(argv) -> (exit status, stdout, stderr)`` of ``allnc-train`` in this process."""
    def run(argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def _one_error_line(err: str) -> bool:
    return err.startswith("allnc-train: error: ") and err.count("\n") == 1 and "Traceback" not in err


def _weights(out: Path) -> dict:
    return torch.load(latest_checkpoint(out), map_location="cpu", weights_only=True)["model"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _hidden_temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if "tmp" in p.name]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the trainer gets as far as building its data."""
    def refuse(*args, **kwargs):
        raise AssertionError("the trainer started although the run could not")
    monkeypatch.setattr(train_module, "build_data", refuse)


HOLDER = """
import sys, time
from pathlib import Path
from allnc_train.rundir import RunLock
lock = RunLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin (or kills us)
lock.release()
"""


@pytest.fixture
def lock_holder():
    """``lock_holder(out)``: another process holding ``out``'s run lock; yields the Popen."""
    procs = []

    def start(out: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# 1. The run lock
# ---------------------------------------------------------------------------------------------

def test_a_live_run_directory_refuses_a_new_run_and_a_resume_naming_the_holder(tmp_path, cli, lock_holder,
                                                                                monkeypatch):
    out = tmp_path / "run"
    train(_ufm(), out, stop_after=1)
    assert not (out / LOCK).exists()  # given up when the call ends
    holder = lock_holder(out)
    before = (out / "run.json").read_text()
    with monkeypatch.context() as m:
        m.setattr(train_module, "build_data", lambda *a, **k: pytest.fail("trained under someone else's lock"))
        for argv in (_cli_args(out), ["--out", out, "--resume"]):
            code, stdout, err = cli(argv)
            assert code == 2 and stdout == "" and _one_error_line(err), err
            assert f"{out}: the run folder is in use by pid {holder.pid} on {socket.gethostname()} (since " in err
            assert "wait for that run to end or choose another --out." in err
        with pytest.raises(RunError, match=f"in use by pid {holder.pid}"):
            train(_ufm(), out, resume=True)
    assert (out / "run.json").read_text() == before and latest_checkpoint(out).name == "epoch_0001.pt"
    # kill -9 the holder: the kernel drops its flock; the lock file it leaves blocks nobody.
    holder.kill()
    holder.wait()
    assert str(holder.pid) in (out / LOCK).read_text()
    code, stdout, err = cli(["--out", out, "--resume"])
    assert code == 0 and json.loads(stdout)["status"] == "finished", err
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("content", ["", "not json", '{"pid": 999999999, "host": "elsewhere", "started": "then"}'])
def test_a_stale_lock_file_does_not_block(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(content)
    assert train(_ufm(), out)["status"] == "finished"
    assert not (out / LOCK).exists()


def test_the_lock_is_given_up_when_a_run_fails_and_an_empty_new_folder_goes_with_it(tmp_path, monkeypatch):
    out = tmp_path / "new" / "run"

    def broken(*args, **kwargs):
        raise ValueError("broken on purpose")
    with monkeypatch.context() as m:
        m.setattr(train_module, "train_one_epoch", broken)
        with pytest.raises(ValueError, match="on purpose"):
            train(_ufm(), out)
    assert not (tmp_path / "new").exists()  # created for the run, which wrote nothing
    train(_ufm(), out, stop_after=1)
    with pytest.raises(RunError, match="already holds a run"):
        train(_ufm(), out)
    assert train(_ufm(), out, resume=True)["status"] == "finished"  # the refused call held nothing either


def test_a_file_system_without_locks_runs_unlocked_with_a_warning_and_removes_no_temporaries(tmp_path,
                                                                                              monkeypatch):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    temporary = out / "checkpoints" / ".epoch_0001.pt.0123456789ab.tmp"  # perhaps a live writer's: kept
    temporary.write_text("half")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="does not support locks"):
        assert train(_ufm(), out)["status"] == "finished"
    assert temporary.exists() and not (out / LOCK).exists()


def test_two_cli_runs_started_together_on_one_out_one_wins(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "allnc_train.cli", *_cli_args(out, "optim.epochs=100")]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    assert sorted(p.returncode for p, _, _ in results) == [0, 2], [err for _, _, err in results]
    (winner, stdout, _), = [r for r in results if r[0].returncode == 0]
    (loser, lost_out, lost_err), = [r for r in results if r[0].returncode == 2]
    assert json.loads(stdout)["status"] == "finished" and json.loads(stdout)["epoch"] == 100
    assert lost_out == "" and _one_error_line(lost_err), lost_err
    assert f"in use by pid {winner.pid} on {socket.gethostname()}" in lost_err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and len(run["epochs"]) == 100
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0100.pt"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "run.json"]


def _ddp_worker(rank: int, world: int, out: str) -> None:
    try:
        train(_ufm(), Path(out))
        result = "trained"
    except RunError as exc:
        result = str(exc)
    Path(out).with_name(f"rank{rank}.txt").write_text(result)


def test_under_ddp_every_rank_refuses_a_locked_directory_without_waiting(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock.acquire(out)
    try:
        # a short timeout: a rank left waiting for one that gave up fails the test instead of hanging it
        run_processes(_ddp_worker, str(out), tmp_path=tmp_path, threads=1, timeout_s=60)
    finally:
        lock.release()
    for rank in (0, 1):
        assert f"in use by pid {os.getpid()}" in (tmp_path / f"rank{rank}.txt").read_text()
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 2. File-system errors: one line, exit 2, before training where possible
# ---------------------------------------------------------------------------------------------

def _fail_os_open(monkeypatch, under: Path, code: int) -> None:
    """Make ``os.open`` of anything in ``under`` fail with ``code``, as a read-only mount would."""
    real = os.open

    def fake(path, *args, **kwargs):
        if Path(path).parent == under or under in Path(path).parents:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake)


@pytest.mark.parametrize("case, message", [
    ("file", "{out}: --out names a file, not a folder; choose another --out."),
    ("under_a_file", "{out}: cannot create the run folder, {tmp}/file is a file."),
    ("read_only", "{out}: cannot write in the run folder (read-only file system)."),
    ("no_permission", "{out}: cannot write in the run folder (permission denied)."),
])
def test_an_out_that_cannot_hold_a_run_fails_before_training(tmp_path, cli, no_training, monkeypatch, case,
                                                             message):
    (tmp_path / "file").write_text("not a folder")
    out = {"file": tmp_path / "file", "under_a_file": tmp_path / "file" / "run"}.get(case, tmp_path / "run")
    if case in ("read_only", "no_permission"):
        out.mkdir()
        _fail_os_open(monkeypatch, out, errno.EROFS if case == "read_only" else errno.EACCES)
    code, stdout, err = cli(_cli_args(out))
    assert code == 2 and stdout == "" and _one_error_line(err), err
    assert err == f"allnc-train: error: {message.format(out=out, tmp=tmp_path)}\n"
    code, _, err = cli(["--out", out, "--resume"])  # a resume fails as plainly
    assert code == 2 and _one_error_line(err), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_real_read_only_folder_fails_before_training(tmp_path, cli, no_training):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = cli(_cli_args(out))
    finally:
        out.chmod(0o755)
    assert code == 2 and err == f"allnc-train: error: {out}: cannot write in the run folder (permission denied).\n"


def _inject_full_disk(monkeypatch, target: str, how: str) -> None:
    """The disk fills up for ``target`` (a path in the run folder): its atomic write fails.

    ``run.json`` fails from the write after checkpoints/epoch_0002.pt exists on (epoch 2 on).
    """
    real_fsync, real_save = atomic._fsync_file, torch.save
    name = Path(target).name

    def full(tmp: Path) -> bool:
        if not tmp.name.startswith(f".{name}."):
            return False
        last = latest_checkpoint(tmp.parent)
        return name != "run.json" or (last is not None and last.name >= "epoch_0002.pt")

    def fsync(tmp):
        if full(Path(tmp)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        real_fsync(tmp)

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)) and full(Path(f)):
            Path(f).write_bytes(b"PK\x03\x04 half a zip file")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(atomic, "_fsync_file", fsync)
    if how == "torch":
        monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("target, how, saved, reason", [
    ("checkpoints/epoch_0002.pt", "oserror", 1, "no space left on device"),
    ("checkpoints/epoch_0002.pt", "torch", 1, "torch.save stopped part-way, as on a full disk"),
    ("dumps/epoch_0002.safetensors", "oserror", 1, "no space left on device"),
    ("run.json", "oserror", 2, "no space left on device"),
])
def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes_to_the_same_weights(tmp_path, cli, monkeypatch,
                                                                                  target, how, saved, reason):
    extra = ["run.dump_every=1"] if target.startswith("dumps") else []
    train(_ufm(*extra), tmp_path / "whole")
    out = tmp_path / "run"
    argv = _cli_args(out, *extra)
    with monkeypatch.context() as m:
        _inject_full_disk(m, target, how)
        for attempt in (argv, ["--out", out, "--resume"]):  # a resume while the disk is still full: the same
            code, stdout, err = cli(attempt)
            at = int(latest_checkpoint(out).stem[-4:])  # the last complete epoch, intact
            assert at == saved or attempt is not argv
            assert code == 2 and stdout == "" and _one_error_line(err), err
            assert err == (f"allnc-train: error: {out / target}: cannot write it ({reason}); the run is saved up to "
                           f"epoch {at}: fix that and continue it with --resume.\n")
            assert _hidden_temporaries(out) == [] and not (out / LOCK).exists()
            assert json.loads((out / "run.json").read_text())["status"] == "running"
    code, stdout, err = cli(["--out", out, "--resume"])  # space freed
    assert code == 0 and json.loads(stdout)["status"] == "finished" and json.loads(stdout)["epoch"] == 3, err
    assert _same_weights(tmp_path / "whole", out)
    whole, resumed = (json.loads((d / "run.json").read_text())["epochs"] for d in (tmp_path / "whole", out))
    for entry in whole + resumed:
        del entry["train_time_s"]
    assert resumed == whole
    assert _hidden_temporaries(out) == []


def _file_size_limit() -> None:  # runs in the child before exec: writes past 100 KiB fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024))


@pytest.mark.parametrize("dump_every, failed", [(0, "checkpoints/epoch_0001.pt"),
                                                (1, "dumps/epoch_0001.safetensors")])
def test_a_real_failed_write_in_a_subprocess_is_one_line_and_leaves_nothing_partial(tmp_path, dump_every, failed):
    """The operating system refuses the write (a file size limit), so torch.save and safetensors fail as
    they do on a full disk."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "allnc_train.cli", *_cli_args(out, f"run.dump_every={dump_every}")]
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit)
    assert done.returncode == 2 and done.stdout == "" and _one_error_line(done.stderr), done.stderr
    assert done.stderr.startswith(f"allnc-train: error: {out / failed}: cannot write it (")
    assert "no epoch is saved yet: fix that and start the run again." in done.stderr
    assert _hidden_temporaries(out) == [] and not (out / LOCK).exists()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# 3. Temporaries of a killed writer
# ---------------------------------------------------------------------------------------------

def test_only_our_own_temporaries_count_as_stale(tmp_path):
    out = tmp_path
    ours = [".run.json.0123456789ab.tmp", ".run.json.tmp-4242", ".write-probe.00000000ffff.tmp",
            "checkpoints/.epoch_0002.pt.abcdef012345.tmp", "checkpoints/.epoch_0002.pt.tmp-17",
            "dumps/.epoch_0002.safetensors.0123456789ab.tmp", "dumps-test/.epoch_0012.pt.tmp-99",
            "dumps-test/.epoch_0002.safetensors.abcdefabcdef.tmp"]
    theirs = ["run.json", "notes.txt", ".notes.txt.0123456789ab.tmp", ".run.json.0123456789AB.tmp",
              ".run.json.0123456789a.tmp", ".run.json.tmp-", ".run.json.tmp-12x", ".epoch_0002.pt.0123456789ab.tmp",
              "checkpoints/epoch_0002.pt", "checkpoints/.epoch_0002.pt.XYZ.tmp", "checkpoints/.keep",
              "dumps/sub/.epoch_0001.safetensors.0123456789ab.tmp", "dumps/.epoch_0002.safetensors.0123456789ab.tmp.x",
              "other/.run.json.0123456789ab.tmp", ".run.lock.0123456789ab.tmp"]
    for name in ours + theirs:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    (out / "dumps" / ".epoch_0003.safetensors.0123456789ab.tmp").mkdir()  # a folder: never ours
    assert sorted(stale_temporaries(out)) == sorted(out / name for name in ours)
    assert sorted(remove_stale_temporaries(out)) == sorted(out / name for name in ours)
    assert all(not (out / name).exists() for name in ours) and all((out / name).exists() for name in theirs)
    assert (out / "dumps" / ".epoch_0003.safetensors.0123456789ab.tmp").is_dir()


DIE_WRITING = """
import os, signal, sys
import nctools.io.atomic as atomic
real = atomic._fsync_file
def die_writing(tmp):  # kill -9 in the middle of writing epoch 2's checkpoint
    if tmp.name.startswith(".epoch_0002.pt."):
        os.kill(os.getpid(), signal.SIGKILL)
    real(tmp)
atomic._fsync_file = die_writing
from allnc_train.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_temporaries_of_a_writer_killed_mid_write_go_when_the_run_resumes(tmp_path, cli):
    train(_ufm("run.dump_every=1"), tmp_path / "whole")
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", DIE_WRITING, *_cli_args(out, "run.dump_every=1")], cwd=REPO,
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = stale_temporaries(out)
    assert len(left) == 1 and left[0].parent.name == "checkpoints" and left[0].name.startswith(".epoch_0002.pt.")
    planted = [out / ".run.json.tmp-31337", out / "dumps" / ".epoch_0003.safetensors.0123456789ab.tmp",
               out / "dumps-test" / ".epoch_0002.safetensors.tmp-4242"]
    foreign = [out / "notes.txt", out / ".notes.txt.0123456789ab.tmp", out / "dumps" / "sub" / ".x.0123456789ab.tmp"]
    for path in planted + foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    # While someone holds the lock (a writer may be alive) nothing is removed, and the resume is refused.
    lock = RunLock.acquire(out)
    try:
        code, _, err = cli(["--out", out, "--resume"])
    finally:
        lock.release()
    assert code == 2 and f"in use by pid {os.getpid()}" in err
    assert all(p.exists() for p in left + planted + foreign)
    code, stdout, err = cli(["--out", out, "--resume"])
    assert code == 0 and json.loads(stdout)["status"] == "finished", err
    assert not any(p.exists() for p in left + planted) and all(p.exists() for p in foreign)
    assert sorted(_hidden_temporaries(out)) == sorted([foreign[1], foreign[2]])
    assert _same_weights(tmp_path / "whole", out)
    assert not (out / LOCK).exists()


def test_a_killed_run_that_saved_nothing_is_tidied_by_a_fresh_start(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".epoch_0001.pt.0123456789ab.tmp").write_text("half")
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "gone", "started": "then"}))
    assert train(_ufm(), out)["status"] == "finished"
    assert _hidden_temporaries(out) == [] and sorted(p.name for p in out.iterdir()) == ["checkpoints", "run.json"]
