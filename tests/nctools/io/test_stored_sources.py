"""``nctools analyze`` gives the numbers it gave when tests/nctools/io/data/stored_sources was made,
for each kind of input: a dump, a shard folder, an allnc_train checkpoint, a state dict with --arch.

The files and expected.json come from ``python tests/nctools/io/data/make_stored_sources.py``; a change that
moves these numbers is a change of behaviour, not a refactoring."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from nctools.cli import cli

HERE = Path(__file__).resolve().parent / "data" / "stored_sources"
EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.mark.parametrize("case", sorted(EXPECTED["cases"]))
def test_same_numbers_as_stored(case, tmp_path, one_torch_thread):
    args = [str(HERE / a) if (HERE / a).exists() else a for a in EXPECTED["cases"][case]]
    result = CliRunner().invoke(cli, ["analyze", *args, "--out", str(tmp_path / "out"), "--format", "json", "--quiet",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    got, want = json.loads(result.stdout)["summary"], EXPECTED["summaries"][case]
    assert got.keys() == want.keys()
    # The stored numbers were measured on the CPU (--device cpu: a GPU's float32 products round
    # differently). Files read as stored agree to round-off; features computed by a network (a checkpoint,
    # a state dict) may differ in the last float32 digits with the thread count and the processor's kernels
    # (seen: NC1 of the checkpoint 4e-8 apart on another x86-64 machine).
    rel = 1e-4 if case in ("checkpoint", "state_dict") else 1e-9
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-9), key
        else:
            assert got[key] == value or (value is None and got[key] is None), key
    assert not any(isinstance(v, float) and math.isnan(v) for v in got.values())
