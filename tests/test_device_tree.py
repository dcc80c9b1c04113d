"""tools/device_tree.py: the committed dumps leave the tree that a device call carries, and come back as
committed, in a throwaway git repository."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "device_tree.py"
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def sh(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=ENV)


def tool(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, str(SCRIPT), *args)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with 3 MiB of committed dumps, a small tracked file, an ignored cache and a tarball."""
    (tmp_path / "docs/results/dumps/sub").mkdir(parents=True)
    for i, name in enumerate(["a.safetensors", "b.safetensors", "sub/c.safetensors"]):
        (tmp_path / "docs/results/dumps" / name).write_bytes(bytes([i]) * 2**20)
    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / ".gitignore").write_text(".cache/\n")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache/data.tar.gz").write_bytes(b"x" * 2**19)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "init"]):
        assert sh(tmp_path, *cmd).returncode == 0
    return tmp_path


def travel_mib(repo: Path, *carry: str) -> float:
    done = tool(repo, "size", *carry)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.splitlines()[-1].split()[0])


def test_park_takes_the_dumps_out_of_the_tree_and_the_index_and_unpark_restores_them_as_committed(repo):
    committed = {p: p.read_bytes() for p in (repo / "docs/results/dumps").rglob("*") if p.is_file()}
    assert travel_mib(repo, ".cache/data.tar.gz") == pytest.approx(3.5, abs=0.05)

    done = tool(repo, "park")
    assert done.returncode == 0, done.stderr
    assert not (repo / "docs/results/dumps").exists()
    assert sh(repo, "git", "ls-files", "docs/results/dumps").stdout == ""
    assert travel_mib(repo, ".cache/data.tar.gz") == pytest.approx(0.5, abs=0.05)
    assert tool(repo, "park").returncode == 2  # parked twice would lose track of the first

    # a device study's new dump comes back while the old ones are parked
    (repo / "docs/results/dumps").mkdir(parents=True)
    (repo / "docs/results/dumps/new.safetensors").write_bytes(b"n")
    done = tool(repo, "unpark")
    assert done.returncode == 0, done.stderr
    assert "1 new file(s)" in done.stdout
    assert {p: p.read_bytes() for p in committed} == committed
    status = sh(repo, "git", "status", "--porcelain").stdout.splitlines()
    assert status == ["?? docs/results/dumps/new.safetensors"]
    assert not (repo / ".git/nctools-parked").exists()


def test_unpark_moves_nothing_when_a_parked_name_is_taken(repo):
    assert tool(repo, "park").returncode == 0
    (repo / "docs/results/dumps").mkdir(parents=True)
    (repo / "docs/results/dumps/a.safetensors").write_bytes(b"other")
    done = tool(repo, "unpark")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "a.safetensors" in done.stderr
    assert (repo / ".git/nctools-parked/docs/results/dumps/a.safetensors").stat().st_size == 2**20
    assert not (repo / "docs/results/dumps/b.safetensors").exists()


def test_size_says_over_and_exits_1_past_64_mib_and_refuses_bad_input_in_one_line(repo):
    (repo / ".cache/big.bin").write_bytes(b"\0" * (65 * 2**20))
    done = tool(repo, "size", ".cache/big.bin")
    assert done.returncode == 1 and "over the 64 MiB" in done.stdout
    for args in (["size", ".cache/missing"], ["unpark"], ["park", "README.md"]):
        done = tool(repo, *args)
        assert done.returncode == 2 and done.stderr.startswith("device_tree.py: ") and done.stderr.count("\n") == 1
    (repo / "docs/results/dumps/a.safetensors").write_bytes(b"changed")
    done = tool(repo, "park")
    assert done.returncode == 2 and "not committed" in done.stderr
