"""``nctools analyze``'s verdict: in metrics.json and last in the table, withheld for a test split until
``--class-counts`` gives the training counts, and ``--squeeze-deg``."""
from __future__ import annotations

import json

import pytest

from nctools.errors import InputError
from nctools.io.class_counts import read_class_counts
from tests.helpers.cli import COUNTS, invoke, make_dump
from tests.helpers.paths import REPO


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_verdict_is_in_metrics_json_and_last_in_the_table(tmp_path):
    dump = make_dump(tmp_path / "d.safetensors")
    result = invoke("analyze", dump, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    verdict = _metrics(tmp_path / "out")["verdict"]
    assert verdict["status"] == "no_minority_collapse" and verdict["reasons"]
    tail = result.stdout.rstrip().splitlines()[-1 - len(verdict["reasons"]):]
    assert tail[0] == "verdict: no minority collapse"
    assert [line.removeprefix("  - ") for line in tail[1:]] == verdict["reasons"]


def test_a_test_split_is_withheld_until_the_training_counts_are_given(tmp_path):
    dump = make_dump(tmp_path / "test.safetensors", counts=(20,) * 6, split="test")  # a balanced test split
    result = invoke("analyze", dump, "--out", tmp_path / "a", "--quiet", "--format", "json")
    metrics = json.loads(result.stdout)
    assert metrics["verdict"]["status"] == "withheld"
    assert any("--class-counts" in r for r in metrics["verdict"]["reasons"])
    counts = ",".join(str(c) for c in COUNTS)  # the training counts: 150 ... 4
    result = invoke("analyze", dump, "--out", tmp_path / "b", "--quiet", "--format", "json", "--class-counts", counts)
    metrics = json.loads(result.stdout)
    assert metrics["verdict"]["status"] != "withheld"
    assert [row["group"] for row in metrics["per_class"]] == ["many", "medium", "medium", "few", "few", "few"]
    assert metrics["options"]["class_counts"] == counts
    (tmp_path / "counts.json").write_text(json.dumps(list(COUNTS)))  # the same counts as a file
    again = invoke("analyze", dump, "--out", tmp_path / "c", "--quiet", "--format", "json", "--class-counts",
                   tmp_path / "counts.json")
    assert json.loads(again.stdout)["per_class"] == metrics["per_class"]


def test_class_counts_of_the_wrong_length_are_one_sentence(tmp_path):
    dump = make_dump(tmp_path / "d.safetensors")
    result = invoke("analyze", dump, "--out", tmp_path / "out", "--class-counts", "5,4,3")
    assert result.exit_code == 2
    assert "--class-counts gives 3 counts, but" in result.stderr and result.stderr.count("\n") == 1


def test_squeeze_deg_moves_the_verdict(tmp_path):
    ce_lt = REPO / "docs" / "results" / "v1" / "dumps" / "cifar10_ce_b100_s0.safetensors"  # few-shot angles 80.7 / 81.2
    statuses = {}
    for deg in ("5", "16"):
        result = invoke("analyze", ce_lt, "--out", tmp_path / deg, "--quiet", "--format", "json", "--squeeze-deg", deg)
        metrics = json.loads(result.stdout)
        statuses[deg] = metrics["verdict"]["status"]
        assert metrics["options"]["squeeze_deg"] == float(deg)
    assert statuses == {"5": "complete_minority_collapse", "16": "no_minority_collapse"}
    bad = invoke("analyze", ce_lt, "--out", tmp_path / "bad", "--squeeze-deg", "-3")
    assert bad.exit_code == 2 and "--squeeze-deg" in bad.stderr


def test_class_counts_sources(tmp_path):
    assert read_class_counts("500, 100 ,5") == [500, 100, 5]
    (tmp_path / "per_class.csv").write_text("class,count,train_count\n0,20,500\n1,20,7\n")
    assert read_class_counts(str(tmp_path / "per_class.csv")) == [500, 7]
    (tmp_path / "plain.csv").write_text("class,count\n0,500\n1,7\n")
    assert read_class_counts(str(tmp_path / "plain.csv")) == [500, 7]
    (tmp_path / "run.json").write_text(json.dumps({"data": {"class_counts": [500, 50, 5]}}))
    assert read_class_counts(str(tmp_path / "run.json")) == [500, 50, 5]
    for bad, message in (("seven", "neither a file nor a comma list"), ("5,x", "whole numbers"),
                         ("5", "at least 2 classes"), ("-1,4", "a count >= 0")):
        with pytest.raises(InputError, match=message):
            read_class_counts(bad)
    (tmp_path / "other.json").write_text(json.dumps({"epochs": []}))
    with pytest.raises(InputError, match="without data.class_counts"):
        read_class_counts(str(tmp_path / "other.json"))
