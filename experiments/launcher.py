"""Train several allnc-train runs in parallel, resumably, and say how each one ended.

The training step that reproduce_paper, ufm_table and gpu_runs share. Each :class:`Job` is a run
folder and the command that trains it; :func:`launch` runs them in the order given, ``parallel`` at a
time, each in a process group of its own (its DataLoader workers with it), and

- skips a run that has finished (its ``run.json`` says ``finished``), continues one that has a
  checkpoint with its ``resume`` command (``allnc-train --out RUN --resume``), and starts any other
  afresh, in a folder cleared of what a run killed before its first checkpoint left;
- with a ``plan`` file (run name -> the command that made it), trains a run again from scratch when
  its command changed;
- with a deadline (``seconds``), starts no run with less than ``min_start`` seconds left and cuts the
  runs still going at the deadline (SIGTERM, then SIGKILL after ``grace`` seconds): a cut run keeps
  its last checkpoint, so the next launch resumes it;
- stops every run it started when it is interrupted itself (Ctrl-C, an error, or SIGTERM where
  ``sigterm`` says who sends it).

It returns one :class:`Outcome` per run: finished, cut, failed or skipped, why, the exit status,
the process's wall seconds, the last epoch in run.json and the most runs that ran beside it.

>>> train_command("ufm_lt_r100_ce", Path("runs/a"), ["seed=1"])
['allnc-train', '--config', 'ufm_lt_r100_ce', '--out', 'runs/a', '--set', 'seed=1']
>>> resume_command(Path("runs/a"), program=("python", "-m", "allnc_train.cli"))
['python', '-m', 'allnc_train.cli', '--out', 'runs/a', '--resume']
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nctools.errors import os_reason
from nctools.io.atomic import atomic_write_json
from nctools.io.layout import CHECKPOINTS, epoch_of, record_path

__all__ = ["ALLNC_TRAIN", "ALLNC_TRAIN_MODULE", "Job", "Launch", "Outcome", "launch", "read_record", "resume_command",
           "run_state", "start", "stop", "train_command"]

ALLNC_TRAIN = ("allnc-train",)  # the console script
ALLNC_TRAIN_MODULE = (sys.executable, "-m", "allnc_train.cli")  # the same without the console script on PATH


def read_record(run_dir: Path) -> dict | None:
    """The run's ``run.json``, or None when it is missing or unreadable (a run killed before writing it)."""
    try:
        record = json.loads(record_path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_state(run_dir: Path) -> str:
    """``finished`` (run.json says so), ``partial`` (a checkpoint to resume from) or ``new``."""
    if (read_record(run_dir) or {}).get("status") == "finished":
        return "finished"
    if any(epoch_of(p) is not None for p in (Path(run_dir) / CHECKPOINTS).glob("*.pt")):
        return "partial"
    return "new"


def train_command(config: str, run_dir: Path, overrides: Sequence[str] = (),
                  program: Sequence[str] = ALLNC_TRAIN) -> list[str]:
    """``allnc-train --config CONFIG --out RUN [--set KEY=VALUE ...]``: the command that starts a run."""
    return [*program, "--config", config, "--out", str(run_dir), *(["--set", *overrides] if overrides else [])]


def resume_command(run_dir: Path, program: Sequence[str] = ALLNC_TRAIN) -> list[str]:
    """``allnc-train --out RUN --resume``: the command that continues a run from its last checkpoint."""
    return [*program, "--out", str(run_dir), "--resume"]


@dataclass
class Job:
    """One run: its name (unique; what the log lines and the plan call it), its folder, the command that
    starts it afresh and the one that continues it. ``log``: where its output goes (appended, after a
    ``$ command`` line); None leaves it on this process's stdout and stderr. ``expected_s``: how long it is
    expected to take; under a deadline a job expected to overrun it is skipped and the next one tried."""

    name: str
    run_dir: Path
    command: list[str]
    resume: list[str] | None = None  # None: resume_command(run_dir, program) with the command's program
    log: Path | None = None
    expected_s: float | None = None


@dataclass
class Outcome:
    """How a run ended. ``state``: finished (now or before this launch), cut (at the deadline or when the
    launch was stopped; resumable), failed (a non-zero exit, or the command could not start) or skipped
    (not started: too little time left, or the launch was stopped first); ``why`` for all but a run
    finished now. ``started_s``: seconds after the launch began; ``process_s``: the process's wall time
    (None: not run by this launch); ``max_parallel``: the most runs going at once while it ran;
    ``epoch``: the last epoch in its run.json; ``resumed``: continued from a checkpoint."""

    state: str = "waiting"
    why: str | None = None
    exit: int | None = None
    started_s: float | None = None
    process_s: float | None = None
    max_parallel: int | None = None
    epoch: int | None = None
    resumed: bool = False

    def as_dict(self) -> dict:
        """The fields that say something (no None, no ``resumed: false``), for a status file."""
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "resumed" and not v)}


@dataclass
class Launch:
    """What :func:`launch` did: one outcome per job name (in the jobs' order), and whether a SIGTERM
    stopped it before every run had its turn."""

    outcomes: dict[str, Outcome]
    stopped: bool = False


def start(cmd: list[str], log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """``cmd`` with its output appended to ``log`` (or on this process's own), in a process group of its
    own: its DataLoader workers with it. A group, not a session, so that whatever stops the caller's
    session also reaches them."""
    if log is None:
        return subprocess.Popen(cmd, env=env, preexec_fn=os.setpgrp)
    with open(log, "a") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=os.setpgrp)


def stop(procs: Sequence[subprocess.Popen], grace: float) -> None:
    """SIGTERM to each process group, then SIGKILL to what is left of them after ``grace`` seconds in all."""
    def signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    end = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        signal_group(proc, signal.SIGKILL)  # the leader, and any worker that outlived it
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass


class _Stopped(Exception):
    """SIGTERM arrived while the runs were going."""


def _raise_stopped(signum, frame):
    raise _Stopped()


def _prepare(jobs: Sequence[Job], plan: Path | None, log: Callable[[str], None]) -> dict[str, str]:
    """Each job's state, after retiring the runs whose recorded command changed; records the commands."""
    recorded = json.loads(plan.read_text()) if plan is not None and plan.exists() else {}
    states = {}
    for job in jobs:
        state = run_state(job.run_dir)
        wanted = shlex.join(job.command)
        if state != "new" and recorded.get(job.name) not in (None, wanted):
            log(f"stale  {job.name} (its recipe changed): training it again")
            shutil.rmtree(job.run_dir)
            state = "new"
        recorded[job.name] = wanted
        states[job.name] = state
    if plan is not None:
        atomic_write_json(plan, recorded)  # a kill mid-write must not leave a plan the next start cannot read
    return states


def _last_line(log: Path | None, offset: int) -> str | None:
    """The last line written to ``log`` after ``offset`` bytes, past the ``$ command`` line."""
    if log is None:
        return None
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").strip().splitlines()[1:]
    except OSError:
        return None
    return lines[-1].strip() if lines else None


def launch(jobs: Sequence[Job], parallel: int = 1, *, seconds: float | None = None, min_start: float = 0.0,
           grace: float = 8.0, threads: int | None = None, plan: Path | None = None, drop_checkpoints: bool = False,
           sigterm: str | None = None, poll: float = 0.2, log: Callable[[str], None] = print,
           on_end: Callable[[str, Outcome], None] | None = None) -> Launch:
    """Train ``jobs`` in the order given, ``parallel`` at a time; see the module's docstring.

    ``threads``: OMP_NUM_THREADS of each run (None: this process's own, else 1). ``drop_checkpoints``:
    delete a run's checkpoints once it has finished. ``sigterm``: handle SIGTERM (from ``sigterm``, e.g.
    "the step's own time limit stopped gpu_runs.py") by cutting the runs going with 2 s of grace and
    skipping the rest; None leaves SIGTERM alone. ``log``: one line per event (start, skip, end);
    ``on_end(name, outcome)``: called as each run this launch started ends (to save timings as they come)."""
    began = time.monotonic()
    deadline = None if seconds is None else began + seconds
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: measured much faster on a shared CPU
    outcomes = {job.name: Outcome() for job in jobs}
    states = _prepare(jobs, plan, log)
    queue = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, float]] = {}
    offsets: dict[str, int] = {}

    def begin(job: Job) -> None:
        outcome, state = outcomes[job.name], states[job.name]
        if state == "new" and job.run_dir.exists():
            shutil.rmtree(job.run_dir)  # killed before its first checkpoint: start again
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = job.command if state == "new" else job.resume or resume_command(job.run_dir, _program(job.command))
        outcome.resumed = state == "partial"
        outcome.started_s = round(time.monotonic() - began, 1)
        if job.log is not None:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "a") as fh:
                offsets[job.name] = fh.tell()
                fh.write("$ " + shlex.join(cmd) + "\n")
        try:
            proc = start(cmd, job.log, env)
        except OSError as err:  # the program is missing or cannot run
            outcome.state, outcome.why = "failed", f"{cmd[0]}: {os_reason(err)}"
            log(f"failed {job.name} ({outcome.why})")
            return
        running[job.name] = (job, proc, time.monotonic())
        outcome.state, outcome.max_parallel = "running", 1
        log(f"{'resume' if outcome.resumed else 'train '} {job.name}")

    def end(name: str, cut: str | None = None) -> None:
        job, proc, t0 = running.pop(name)
        outcome = outcomes[name]
        outcome.exit, outcome.process_s = proc.poll(), round(time.monotonic() - t0, 1)
        record = read_record(job.run_dir) or {}
        outcome.epoch = _last_epoch(record)
        if record.get("status") == "finished":  # also when a cut's kill came after the last save
            outcome.state = "finished"
            if drop_checkpoints:
                shutil.rmtree(job.run_dir / CHECKPOINTS, ignore_errors=True)  # big, and not needed any more
            log(f"done   {name} ({outcome.process_s:.1f} s)")
        elif cut is not None:
            outcome.state, outcome.why = "cut", cut
            log(f"cut    {name} at epoch {outcome.epoch} ({cut})")
        else:
            outcome.state = "failed"
            outcome.why = _last_line(job.log, offsets.get(name, 0)) or f"exit status {outcome.exit}"
            log(f"failed {name} (exit {outcome.exit}{f'; see {job.log}' if job.log else ''})")
        if on_end is not None:
            on_end(name, outcome)

    def cut_all(why: str, wait: float) -> None:
        stop([proc for _, proc, _ in running.values()], wait)
        for name in list(running):
            end(name, cut=why)

    previous = signal.signal(signal.SIGTERM, _raise_stopped) if sigterm is not None else None
    stopped = False
    try:
        while queue or running:
            for name, (_, proc, _) in list(running.items()):
                if proc.poll() is not None:
                    end(name)
            left = None if deadline is None else deadline - time.monotonic()
            while queue and len(running) < max(1, parallel):
                job = queue.pop(0)
                if states[job.name] == "finished":
                    outcomes[job.name] = Outcome("finished", why="finished before this launch",
                                                 epoch=_last_epoch(read_record(job.run_dir) or {}))
                    log(f"skip   {job.name} (finished)")
                    continue
                if left is not None and left < min_start:
                    outcomes[job.name] = Outcome("skipped", why=f"only {max(left, 0):.0f} s left at its turn "
                                                                f"(no run starts with less than {min_start:.0f} s)")
                    log(f"skip   {job.name} ({outcomes[job.name].why})")
                    continue
                if left is not None and job.expected_s is not None and left < job.expected_s:
                    outcomes[job.name] = Outcome("skipped", why=f"expected to take {job.expected_s:.0f} s, "
                                                                f"only {max(left, 0):.0f} s left at its turn")
                    log(f"skip   {job.name} ({outcomes[job.name].why})")
                    continue
                begin(job)
            for name in running:
                outcomes[name].max_parallel = max(outcomes[name].max_parallel or 1, len(running))
            if left is not None and left <= 0 and running:
                cut_all(f"killed at the deadline, {seconds:.0f} s after the runs began", grace)
            if queue or running:
                time.sleep(poll)
    except _Stopped:
        stopped = True
        cut_all(f"killed when {sigterm}", 2.0)  # 2 s: before the sender's own SIGKILL
        for job in queue:
            outcomes[job.name] = Outcome("skipped", why=f"{sigterm} first")
    finally:
        if running:  # interrupted some other way (Ctrl-C, an error): leave no run behind
            stop([proc for _, proc, _ in running.values()], grace)
        if sigterm is not None:
            signal.signal(signal.SIGTERM, previous)
    return Launch(outcomes, stopped)


def _last_epoch(record: dict) -> int:
    """The last epoch a run record lists (0: none yet)."""
    epochs = record.get("epochs") or []
    return epochs[-1].get("epoch", 0) if epochs else 0


def _program(command: list[str]) -> list[str]:
    """The program part of an allnc-train command: everything before its first option."""
    return command[:next((i for i, a in enumerate(command) if a.startswith("--")), len(command))]
