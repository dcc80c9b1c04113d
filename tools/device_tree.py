"""What a call of the lent GPU carries, and the committed dumps parked out of it for the call.

A call of the device tool copies this checkout's working tree (the tracked files, the untracked files git
does not ignore, and the ignored paths named in ``carry``) and refuses more than 64 MiB. The committed
dumps of docs/results/dumps alone are about 48 MiB (2026-12-07, as ``size`` measures them), and they grow
with every row, so a call that also carries a CIFAR tarball is over the limit. No device script needs them:
they are the record behind the CSV rows here, not an input of the runs. So, before the call::

    python tools/device_tree.py size .cache/cifar100-jpeg.tar.gz   # what would travel, against 64 MiB
    python tools/device_tree.py park                               # dumps out of the tree and the index
    python tools/device_tree.py size .cache/cifar100-jpeg.tar.gz   # now under the limit
    ... the call ...
    python tools/device_tree.py unpark                             # back, as committed

``park`` moves the folder into ``.git/nctools-parked/`` (inside the repository, so nothing is lost if the
session ends, and outside the working tree, so it does not travel) and drops its files from git's index
only (``git rm --cached``), so that the files are neither tracked nor present, whichever of the two the
tool reads. ``unpark`` moves every parked file back and restores its index entry from HEAD; files that
appeared in the folder meanwhile (a device study's new dumps, unpacked from its archive) stay as they
are, untracked, and a parked file whose name is taken by such a file is an error, with nothing moved.
Exit status: 0 done (``size``: under the limit), 1 over the limit, 2 refused (one line says why).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 2**20  # bytes a call of the device tool carries, all of it together
PARKED = Path(".git") / "nctools-parked"
DEFAULT = "docs/results/dumps"


class Refused(Exception):
    """The one sentence a refusal prints."""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise Refused(f"git {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def listed(root: Path, *args: str) -> list[str]:
    """The paths ``git ls-files -z ARGS`` names."""
    return [p for p in git(root, "ls-files", "-z", *args).split("\0") if p]


def tree_bytes(root: Path, carry: list[str]) -> tuple[int, list[tuple[int, str]]]:
    """(bytes that would travel, [(bytes, top folder or file)] largest first): the tracked files present on
    disk, the untracked files git does not ignore, and the carried paths."""
    by_top: dict[str, int] = {}
    for rel in listed(root, "--cached") + listed(root, "--others", "--exclude-standard"):
        path = root / rel
        if path.is_file() and not path.is_symlink():
            top = "/".join(rel.split("/")[:-1][:3]) or "(top level)"  # its folder, at most 3 deep
            by_top[top] = by_top.get(top, 0) + path.stat().st_size
    for rel in carry:
        path = root / rel
        if not path.exists():
            raise Refused(f"the carried path {rel} does not exist")
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        by_top[f"{rel} (carried)"] = sum(p.stat().st_size for p in files)
    return sum(by_top.values()), sorted(((n, top) for top, n in by_top.items()), reverse=True)


def park(root: Path, folder: str) -> str:
    source, target = root / folder, root / PARKED / folder
    if target.exists():
        raise Refused(f"{folder} is parked already ({PARKED / folder}); run unpark first")
    if not source.is_dir():
        raise Refused(f"{folder} is not a folder of this checkout")
    if git(root, "status", "--porcelain", "--", folder).strip():
        raise Refused(f"{folder} has changes that are not committed; commit them before parking it")
    n = len(listed(root, "--cached", "--", folder))
    git(root, "rm", "-r", "-q", "--cached", "--", folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))
    return f"parked {n} tracked files of {folder} in {PARKED / folder} (run unpark after the call)"


def unpark(root: Path, folder: str) -> str:
    source, target = root / PARKED / folder, root / folder
    if not source.is_dir():
        raise Refused(f"{folder} is not parked (no {PARKED / folder})")
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    taken = [str(rel) for rel in files if (target / rel).exists()]
    if taken:
        raise Refused(f"{len(taken)} parked file(s) would overwrite a file now in {folder}, e.g. {taken[0]}; "
                      "move those aside first")
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source / rel), str(target / rel))
    shutil.rmtree(source)
    for empty in source.parents:  # the folders that held it, up to and with .git/nctools-parked
        if empty == root / PARKED.parent or any(empty.iterdir()):
            break
        empty.rmdir()
    git(root, "reset", "-q", "HEAD", "--", folder)
    new = len(listed(root, "--others", "--exclude-standard", "--", folder))
    return f"unparked {len(files)} files into {folder}" + (f"; {new} new file(s) there are untracked" if new else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="device_tree.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    size = sub.add_parser("size", help="what a call would carry, against the 64 MiB limit")
    size.add_argument("carry", nargs="*", help="the ignored paths the call names in carry")
    for verb in ("park", "unpark"):
        sub.add_parser(verb, help=f"{verb} a folder (default {DEFAULT})").add_argument("folder", nargs="?",
                                                                                      default=DEFAULT)
    args = p.parse_args(argv)
    try:
        root = Path(git(Path.cwd(), "rev-parse", "--show-toplevel").strip())
        if args.verb == "size":
            total, parts = tree_bytes(root, args.carry)
            for n, top in parts[:8]:
                print(f"{n / 2**20:8.1f} MiB  {top}")
            over = total > LIMIT
            print(f"{total / 2**20:8.1f} MiB would travel: {'over' if over else 'under'} the 64 MiB a call carries")
            return 1 if over else 0
        print((park if args.verb == "park" else unpark)(root, args.folder))
        return 0
    except Refused as e:
        print(f"device_tree.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
