"""report.pdf, the report a person reads: a first page with the verdict, the summary table, the notes
and the provenance, then the figures; the ICPA heatmaps mark the many / medium / few groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

import nctools
from nctools.core.geometry import simplex_etf
from nctools.report import plots
from nctools.report.writer import front_pages, write_analysis
from tests.helpers.cli import COUNTS, NAMES, invoke, make_dump, pdf_pages


def _analyze(noise: float = 0.3, classifier: bool = True, counts=COUNTS, **kw):
    g = torch.Generator().manual_seed(0)
    c = len(counts)
    means = 3 * simplex_etf(c, 8, dtype=torch.float32)
    labels = torch.arange(c).repeat_interleave(torch.tensor(counts))
    features = means[labels] + noise * torch.randn(len(labels), 8, generator=g)
    weight = means + 0.1 * torch.randn(c, 8, generator=g) if classifier else None
    return nctools.analyze(features, labels, weight=weight, device="cpu", progress=False, **kw)


def _words(text: str) -> str:
    """Whitespace collapsed: a wrapped sentence reads as one line again."""
    return " ".join(text.split())


def _page_text(path, page: int = 0) -> str:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return _words(pdf[page].get_textpage().get_text_range())
    finally:
        pdf.close()


def _page_size(path, page: int = 0) -> tuple[float, float]:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return pdf[page].get_size()
    finally:
        pdf.close()


def _write(tmp_path, result, header=(), name="out"):
    source = {"path": str(tmp_path / "features.safetensors"), "metadata": {"epoch": "5", "split": "train"}}
    out = tmp_path / name
    write_analysis(out, result, NAMES[:result.summary["num_classes"]], {"preprocessing": "resize 36, crop 32"},
                   source, label="features.safetensors", header=header)
    return out / "report.pdf"


def _assert_first_page_holds(text: str, result) -> None:
    assert result.verdict["status"] in text
    for reason in result.verdict["reasons"]:
        assert _words(reason) in text, reason
    for note in result.notes:
        assert _words(note) in text, note


def test_first_page_holds_verdict_table_notes_and_provenance(tmp_path):
    result = _analyze()
    header = ["nctools analyze: features.safetensors", "split train, epoch 5"]
    path = _write(tmp_path, result, header)
    assert pdf_pages(path) == 4  # the summary page, then icpa, per_class, cosines
    assert np.allclose(_page_size(path), np.array(plots.SUMMARY_PAGE_SIZE) * 72, atol=1)  # A4 portrait
    text = _page_text(path)
    _assert_first_page_holds(text, result)
    assert str(tmp_path / "features.safetensors") in text and all(_words(h) in text for h in header)
    for heading in ("NC1", "NC2", "ICPA", "NC3", "NC4 and accuracy", "Tail classes", "sample-weighted centre"):
        assert heading in text, heading
    assert f"{result.summary['nc1']:.4g}" in text
    for option in ("center: class", "groups: [100.0, 20.0]", "squeeze_deg: 5.0", "class_counts_given: False",
                   "preprocessing: resize 36, crop 32"):
        assert option in text, option
    assert "ICPA" in _page_text(path, 1)  # the figures follow


def test_without_classifier_and_withheld_verdict(tmp_path):
    result = _analyze(noise=6.0, classifier=False)
    assert result.verdict["status"] == "withheld" and result.notes
    path = _write(tmp_path, result)
    text = _page_text(path)
    _assert_first_page_holds(text, result)
    assert "Verdict withheld" in text
    assert text.split("accuracy (classifier)")[1].split()[0] == "-"  # null values as dashes
    assert "epoch: 5" in text  # no header from a command: the metadata itself


def test_long_text_wraps_inside_the_page_and_spills_onto_a_second_one():
    reasons = ["a long reason " * 30 + "end-of-reason", "short"]
    notes = [f"note {i}: " + "words that go on " * 12 + f"end {i}" for i in range(40)]
    sections = [("NC1", ("",), [("nc1", ["0.1"])])]
    pages = plots.summary_pages({"status": "withheld", "reasons": reasons}, sections, notes,
                                ["source: /" + "x" * 300], {"center": "class"})
    assert len(pages) >= 2
    for fig in pages:
        renderer = FigureCanvasAgg(fig).get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        for t in fig.texts:
            box = t.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, t.get_text()
    text = _words(" ".join(t.get_text() for fig in pages for t in fig.texts))
    for sentence in [*reasons, *notes]:
        assert _words(sentence) in text, sentence


def test_page_of_a_result_without_verdict_renders():
    result = _analyze()
    result.verdict = {}
    pages = front_pages(result, result.options, {"path": "p"})
    assert "No verdict" in [t.get_text() for t in pages[0].texts]


# --------------------------------------------------------------------------- the ICPA heatmap groups


def _boundaries(ax) -> list:
    return [line for line in ax.lines if line.get_gid() == plots.GROUP_BOUNDARY]


def _group_names(ax) -> list[str]:
    (top,) = [child for child in ax.child_axes if child.get_gid() == plots.GROUP_AXIS]
    return [label.get_text() for label in top.get_xticklabels()]


@pytest.mark.parametrize("classifier", [True, False])
def test_heatmap_orders_by_training_count_and_marks_the_groups(classifier):
    counts = (15, 150, 4, 60, 8, 30)  # shuffled: class 1 is the largest
    result = _analyze(counts=counts, classifier=classifier)
    table = result.per_class
    names = ["c0", "c1", "c2", "c3", "c4", "c5"]
    fig = plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, result.summary["icpa_optimum_deg"],
                              names, groups=table["group"].tolist(), counts=table["count"].tolist())
    axes = fig.axes[:2] if classifier else fig.axes[:1]
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] == ["c1", "c3", "c5", "c0", "c4", "c2"]
        # many (150) | medium (60, 30) | few (15, 8, 4): two group changes, each a horizontal and a vertical line
        lines = _boundaries(ax)
        assert len(lines) == 4
        assert sorted({float(np.asarray(line.get_xdata() if line.get_xdata()[0] == line.get_xdata()[1]
                                        else line.get_ydata())[0]) for line in lines}) == [0.5, 2.5]
        assert _group_names(ax) == ["many (1)", "medium (2)", "few (3)"]
    order = [1, 3, 5, 0, 4, 2]
    image = fig.axes[0].images[0].get_array()
    expected = result.icpa_means.numpy()[np.ix_(order, order)]
    off = ~np.eye(6, dtype=bool)
    assert np.allclose(np.asarray(image)[off], expected[off])  # the matrix is reordered with its labels
    assert "training count" in fig.get_supxlabel()


def test_heatmap_draws_one_boundary_per_group_change():
    result = _analyze(counts=(150, 120, 110))  # every class many-shot: one block, no line
    fig = plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, result.summary["icpa_optimum_deg"],
                              groups=result.per_class["group"].tolist(), counts=result.per_class["count"].tolist())
    assert _boundaries(fig.axes[0]) == [] and _group_names(fig.axes[0]) == ["many (3)"]
    plain = plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, result.summary["icpa_optimum_deg"])
    assert _boundaries(plain.axes[0]) == [] and plain.axes[0].child_axes == []  # no groups given: as before


def test_compare_grid_orders_and_marks_each_run_by_its_own_groups():
    """Two runs of different imbalance in compare's grid: each row of panels in its own group order,
    with its own boundaries; a run given without groups is drawn as before."""
    skewed = _analyze(counts=(15, 150, 4, 60, 8, 30))
    flat = _analyze(counts=(150, 120, 110, 130, 140, 125))
    grouping = lambda r: (r.per_class["group"].tolist(), r.per_class["count"].tolist())  # noqa: E731
    fig = plots.icpa_grid([("skewed", skewed.icpa_means, skewed.icpa_classifier, *grouping(skewed)),
                           ("flat", flat.icpa_means, flat.icpa_classifier, *grouping(flat)),
                           ("plain", flat.icpa_means, flat.icpa_classifier)],
                          skewed.summary["icpa_optimum_deg"], ["c0", "c1", "c2", "c3", "c4", "c5"])
    means_a, rows_a, means_b, _, means_c, _ = fig.axes[:6]
    for ax in (means_a, rows_a):
        assert [t.get_text() for t in ax.get_yticklabels()] == ["c1", "c3", "c5", "c0", "c4", "c2"]
        assert len(_boundaries(ax)) == 4 and _group_names(ax) == ["many (1)", "medium (2)", "few (3)"]
    assert [t.get_text() for t in means_b.get_yticklabels()] == ["c0", "c4", "c3", "c5", "c1", "c2"]
    assert _boundaries(means_b) == [] and _group_names(means_b) == ["many (6)"]
    assert _boundaries(means_c) == [] and means_c.child_axes == []
    order = [1, 3, 5, 0, 4, 2]
    off = ~np.eye(6, dtype=bool)
    image = np.asarray(means_a.images[0].get_array())
    assert np.allclose(image[off], skewed.icpa_means.numpy()[np.ix_(order, order)][off])
    assert "training count" in fig.get_supxlabel()


def test_analyze_command_report_opens_with_the_summary_page(tmp_path):
    dump = make_dump(tmp_path / "epoch_0005.safetensors", epoch=5)
    out = tmp_path / "report"
    assert invoke("analyze", dump, "--out", out, "--quiet").exit_code == 0
    text = _page_text(out / "report.pdf")
    # The source is named on the page; a path longer than a line (pytest-xdist's are) is cut at the line's end.
    assert str(dump) in "".join(text.split())
    assert "status:" in text and "Summary" in text and "Source and options" in text
