"""NCResult in a terminal and a notebook: its repr (the grouped table), its HTML, ``plot`` and ``save``."""
from __future__ import annotations

import json

import pytest
import torch
from matplotlib.figure import Figure

import nctools
from nctools.core.result import PLOT_KINDS
from nctools.report import analysis_figures, format_summary
from tests.helpers.cli import COUNTS, NAMES, invoke, make_dump


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    path = make_dump(tmp_path_factory.mktemp("d") / "d.safetensors")
    dump = nctools.load_dump(path)
    result = nctools.analyze(dump.features, dump.labels, dump.weight, dump.bias, device="cpu")
    return path, dump, result


def test_repr_is_the_grouped_table(dumped):
    _, _, result = dumped
    text = repr(result)
    assert text == format_summary(result)
    assert "NC1  within-class variability" in text and "Tail classes  minority collapse" in text
    assert f"verdict: {result.verdict['status'].replace('_', ' ')}" in text


def test_html_has_a_table_per_section_and_escapes(dumped):
    _, _, result = dumped
    html = result._repr_html_()
    assert html.count("<table>") == 6 and "NC2  simplex ETF" in html and "<li>" in html  # notes and reasons
    odd = nctools.analyze(torch.eye(3), torch.arange(3))  # no classifier: notes say what is missing
    odd.notes.append("<script>alert(1)</script>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in odd._repr_html_()


def test_plot_gives_each_report_figure(dumped):
    _, dump, result = dumped
    assert set(PLOT_KINDS) == set(analysis_figures(result))  # every figure of the report, and no other
    for kind in PLOT_KINDS:
        fig = result.plot(kind, class_names=dump.class_names)
        assert isinstance(fig, Figure) and fig.axes
    labels = [t.get_text() for t in result.plot("icpa", class_names=dump.class_names).axes[0].get_xticklabels()]
    assert set(labels) <= set(NAMES) and labels


@pytest.mark.parametrize("kind, names, message", [
    ("heatmaps", None, "kind must be one of 'icpa', 'per_class', 'cosines', got 'heatmaps'"),
    ("icpa", ["a", "b"], f"class_names must be {len(COUNTS)} strings, one per class"),
    ("icpa", "abcdef", f"class_names must be {len(COUNTS)} strings"),
])
def test_plot_refuses_bad_arguments(dumped, kind, names, message):
    with pytest.raises(ValueError, match=message):
        dumped[2].plot(kind, class_names=names)


def test_save_writes_what_the_command_writes(dumped, tmp_path):
    path, dump, result = dumped
    written = result.save(tmp_path / "py", class_names=dump.class_names, png=True)
    cli = invoke("analyze", path, "--out", tmp_path / "cli", "--png", "--device", "cpu", "--quiet")
    assert cli.exit_code == 0, cli.output
    assert sorted(written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert sorted(written) == sorted(p.name for p in (tmp_path / "py").iterdir())
    mine, theirs = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("py", "cli"))
    assert mine["summary"] == theirs["summary"] and mine["verdict"] == theirs["verdict"]
    assert (tmp_path / "py" / "per_class.csv").read_text() == (tmp_path / "cli" / "per_class.csv").read_text()


def test_save_without_figures_writes_the_tables(dumped, tmp_path):
    result = dumped[2]
    assert result.save(tmp_path / "t", figures=False) == ["metrics.json", "per_class.csv"]
    summary = json.loads((tmp_path / "t" / "metrics.json").read_text())["summary"]
    assert summary["nc1"] == pytest.approx(result.summary["nc1"])
    with pytest.raises(ValueError, match="png=True asks for figures and figures=False for none"):
        result.save(tmp_path / "u", png=True, figures=False)
    assert not (tmp_path / "u").exists()


def test_save_refuses_a_file_as_the_folder(dumped, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(OSError, match="taken"):
        dumped[2].save(tmp_path / "taken")
