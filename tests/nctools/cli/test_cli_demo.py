"""``nctools demo``: the bundled real dump, analysed end to end."""
from __future__ import annotations

import json

import nctools
from nctools.cli.demo import demo_dump_path
from tests.helpers.cli import invoke, pdf_pages


def test_shipped_dump_is_small_real_and_long_tailed():
    path = demo_dump_path()
    assert path.is_file() and path.stat().st_size < 3 * 2**20
    dump = nctools.load_dump(path)
    assert dump.dataset == "cifar10" and dump.split == "train" and dump.imbalance_ratio == 100
    counts = dump.class_counts.tolist()
    assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] >= 50
    assert dump.weight is not None and dump.class_names[0] == "airplane"


def test_demo_writes_the_report_where_it_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    out = tmp_path / "nctools-demo"
    assert "The full report is in nctools-demo/" in result.stdout and "ICPA" in result.stdout
    assert pdf_pages(out / "report.pdf") == 4  # the front page and the three figures
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["num_classes"] == 10 and metrics["options"]["demo"] is True
    assert metrics["summary"]["tail_icpa_mean_deg_means"] is not None  # a real tail group
