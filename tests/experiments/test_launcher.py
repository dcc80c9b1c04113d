"""experiments/launcher.py with a stand-in trainer (a few lines of Python writing the run folder), so
that skipping, resuming, retraining a changed recipe, failures and the deadline take seconds."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.launcher import Job, launch, run_state
from nctools.io.layout import checkpoint_path, record_path

# argv: --out RUN [--resume] [--fail] [--sleep S]: writes one checkpoint, then run.json ("finished").
TRAINER = """
import json, sys, time
from pathlib import Path
args = sys.argv[1:]
run = Path(args[args.index("--out") + 1])
if "--fail" in args:
    print("training started")
    print("bad config: no such key", flush=True)
    sys.exit(3)
if "--sleep" in args:
    time.sleep(float(args[args.index("--sleep") + 1]))
(run / "checkpoints").mkdir(parents=True, exist_ok=True)
(run / "checkpoints" / "epoch_0001.pt").write_bytes(b"")
(run / "run.json").write_text(json.dumps({"status": "finished", "epochs": [{"epoch": 1}],
                                          "resumed": "--resume" in args}))
"""


def _job(tmp_path: Path, name: str, *extra: str) -> Job:
    run = tmp_path / "runs" / name
    cmd = [sys.executable, "-c", TRAINER, "--out", str(run), *extra]
    return Job(name, run, cmd, resume=[*cmd, "--resume"], log=tmp_path / "logs" / f"{name}.log")


def test_finished_skipped_partial_resumed_new_started_afresh(tmp_path):
    done, partial, new = (_job(tmp_path, n) for n in ("done", "partial", "new"))
    record_path(done.run_dir).parent.mkdir(parents=True)
    record_path(done.run_dir).write_text(json.dumps({"status": "finished", "epochs": [{"epoch": 7}]}))
    checkpoint_path(partial.run_dir, 1).parent.mkdir(parents=True)
    checkpoint_path(partial.run_dir, 1).write_bytes(b"")
    (new.run_dir / "leftover").mkdir(parents=True)  # killed before its first checkpoint
    lines = []
    result = launch([done, partial, new], 2, log=lines.append)
    out = result.outcomes
    assert [o.state for o in out.values()] == ["finished"] * 3 and not result.stopped
    assert out["done"].process_s is None and out["done"].epoch == 7 and "skip   done (finished)" in lines
    assert out["partial"].resumed and json.loads(record_path(partial.run_dir).read_text())["resumed"]
    assert not out["new"].resumed and not (new.run_dir / "leftover").exists()
    assert out["new"].process_s > 0 and out["new"].exit == 0 and out["new"].as_dict()["state"] == "finished"
    assert new.log.read_text().startswith("$ ")


def test_a_changed_recipe_is_trained_again(tmp_path):
    plan = tmp_path / "plan.json"
    launch([_job(tmp_path, "a")], plan=plan, log=lambda m: None)
    lines = []
    out = launch([_job(tmp_path, "a", "--sleep", "0")], plan=plan, log=lines.append).outcomes
    assert any(line.startswith("stale  a") for line in lines)
    assert out["a"].process_s is not None and "--sleep" in json.loads(plan.read_text())["a"]


def test_failure_says_the_last_line_and_the_deadline_cuts_and_skips(tmp_path):
    jobs = [_job(tmp_path, "bad", "--fail"), _job(tmp_path, "slow", "--sleep", "60"), _job(tmp_path, "late")]
    out = launch(jobs, 1, seconds=3, min_start=2, grace=1, log=lambda m: None).outcomes
    assert (out["bad"].state, out["bad"].exit, out["bad"].why) == ("failed", 3, "bad config: no such key")
    assert out["slow"].state == "cut" and "deadline" in out["slow"].why and out["slow"].epoch == 0
    assert out["late"].state == "skipped" and out["late"].started_s is None
    assert run_state(jobs[1].run_dir) == "new"


def test_a_program_that_cannot_start_fails_with_the_reason(tmp_path):
    job = Job("x", tmp_path / "x", [str(tmp_path / "no-such-program"), "--out", str(tmp_path / "x")])
    out = launch([job], log=lambda m: None).outcomes["x"]
    assert out.state == "failed" and out.why.endswith("No such file or directory")


def test_sigterm_cuts_the_runs_going_and_skips_the_rest(tmp_path):
    """With ``sigterm`` set, a SIGTERM to the launching process stops its runs (a dead parent must not leave
    them training) and skips the queue; the previous handler comes back."""
    import os
    import signal
    import threading
    import time

    before = signal.getsignal(signal.SIGTERM)
    jobs = [_job(tmp_path, n, "--sleep", "60") for n in ("a", "b", "c")]
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    tic = time.monotonic()
    try:
        result = launch(jobs, 2, sigterm="the test stopped it", log=lambda m: None)
    finally:
        timer.cancel()
    assert result.stopped and time.monotonic() - tic < 20
    states = {name: o.state for name, o in result.outcomes.items()}
    assert states == {"a": "cut", "b": "cut", "c": "skipped"}
    assert "the test stopped it" in result.outcomes["c"].why
    assert signal.getsignal(signal.SIGTERM) == before
    alive = [c for c in Path("/proc").glob("[0-9]*/cmdline") if str(tmp_path).encode() in _read_or_empty(c)]
    assert not alive, "a run outlived the launch"


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_a_job_expected_to_overrun_the_deadline_gives_its_turn_to_the_next(tmp_path):
    """Under a deadline, a job whose expected time exceeds what is left is skipped and a shorter one behind
    it still starts (a sitting fills its time instead of stopping at the first long run)."""
    import dataclasses

    long = dataclasses.replace(_job(tmp_path, "long"), expected_s=3600.0)
    short = dataclasses.replace(_job(tmp_path, "short"), expected_s=1.0)
    unknown = _job(tmp_path, "unknown")  # no estimate: started while time is left
    lines = []
    out = launch([long, short, unknown], 1, seconds=60, log=lines.append).outcomes
    assert out["long"].state == "skipped" and "expected to take 3600 s, only" in out["long"].why
    assert out["short"].state == "finished" and out["unknown"].state == "finished"
    assert any(line.startswith("skip   long (expected to take 3600 s") for line in lines)
