"""Several processes under torch.distributed (gloo, on the CPU), for the tests that check a
computation across processes against one process."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, folder: str, threads: int | None, timeout_s: float | None, fn: Callable,
           args: tuple) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    timeout = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world, **timeout)
    try:
        result = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(folder, "rank0.json").write_text(json.dumps(result))


def run_processes(fn: Callable, *args, tmp_path: Path, world: int = 2, threads: int | None = None,
                  timeout_s: float | None = None) -> Any:
    """Call ``fn(rank, world, *args)`` in ``world`` spawned processes that share one gloo process group;
    return what rank 0 returned (through JSON).

    ``fn`` must be a module-level function (it is pickled); ``threads`` sets each process's torch
    threads; ``timeout_s`` bounds the collectives, so a rank left waiting fails instead of hanging.
    """
    mp.spawn(_entry, args=(world, str(tmp_path), threads, timeout_s, fn, args), nprocs=world, join=True)
    return json.loads((tmp_path / "rank0.json").read_text())
