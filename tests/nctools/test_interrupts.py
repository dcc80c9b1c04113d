"""Signals and closed pipes end a command with one line and 128 + n."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
import pytest

from nctools.interrupts import Interrupted, exit_status, run_click, signals_as_interrupts

COMMAND = """
import os, signal, sys, click
from nctools.interrupts import run_click

@click.command()
@click.argument("what")
def cmd(what):
    if what == "ctrl-c":
        raise KeyboardInterrupt
    if what in ("SIGTERM", "SIGHUP"):
        os.kill(os.getpid(), getattr(signal, what))
    for i in range(100000):  # more than a pipe holds
        click.echo(f"line {i}")

sys.exit(run_click(cmd, sys.argv[1:], "prog"))
"""


@pytest.mark.parametrize("what, status", [("ctrl-c", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_an_interrupt_is_one_line_and_128_plus_n(what, status):
    done = subprocess.run([sys.executable, "-c", COMMAND, what], capture_output=True, text=True, timeout=60)
    assert done.returncode == status and done.stderr == "prog: interrupted\n"


def test_a_closed_stdout_ends_quietly_with_141():
    proc = subprocess.Popen([sys.executable, "-c", COMMAND, "print"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_usage_errors_and_help_keep_their_status(capsys):
    @click.command()
    @click.option("--n", type=int)
    def cmd(n):
        pass

    assert run_click(cmd, ["--help"], "prog") == 0
    assert run_click(cmd, ["--n", "x"], "prog") == 2


def test_handlers_are_taken_only_where_default_and_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with signals_as_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
    assert exit_status(caught.value) == 143 and signal.getsignal(signal.SIGTERM) == before
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        with signals_as_interrupts():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, ignored)
