"""Figure builders: each returns a Figure that saves to a one-page PDF of the size set, and the
rendered page is not blank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import nctools
from nctools.core.geometry import simplex_etf
from nctools.report import plots


@pytest.fixture(scope="module")
def result():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([80, 40, 20, 10, 5])
    means = 3 * simplex_etf(5, 6, dtype=torch.float32)
    labels = torch.arange(5).repeat_interleave(counts)
    features = means[labels] + 0.5 * torch.randn(len(labels), 6, generator=g)
    return nctools.analyze(features, labels, weight=means + 0.2 * torch.randn(5, 6, generator=g))


def _figures(result):
    s = result.summary
    lines = {"means": ([1, 2, 3], [0.5, 0.3, None]), "rows": ([1, 2, 3], [0.4, 0.2, 0.1])}
    panel = plots.Panel("cos-Std", "std", lines, hline=0.0)
    return {
        "icpa": plots.icpa_heatmaps(result.icpa_means, result.icpa_classifier, s["icpa_optimum_deg"], list("abcde")),
        "icpa_no_classifier": plots.icpa_heatmaps(result.icpa_means, None, s["icpa_optimum_deg"]),
        "per_class": plots.per_class_bars(result.per_class, list("abcde")),
        "cosines": plots.cosine_histogram(result.icpa_means, result.icpa_classifier, s["num_classes"]),
        "curves": plots.curves([panel, plots.Panel("empty", "y", {"x": ([1], [None])})], "epoch", "curves"),
        "grid": plots.icpa_grid([("run a", result.icpa_means, result.icpa_classifier),
                                 ("run b", result.icpa_means, None)], s["icpa_optimum_deg"]),
    }


def test_builders_return_figures_without_pyplot(result):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures = _figures(result)
    assert all(isinstance(f, Figure) for f in figures.values())
    assert plt.get_fignums() == before  # nothing registered with pyplot: no GUI state, no leaks


def test_pdf_opens_with_one_page_of_the_set_size(result, tmp_path):
    import pypdfium2

    for name, fig in _figures(result).items():
        path = tmp_path / f"{name}.pdf"
        fig.savefig(path)
        pdf = pypdfium2.PdfDocument(str(path))
        assert len(pdf) == 1, name
        width, height = pdf[0].get_size()  # points
        expected = fig.get_size_inches() * 72
        assert np.allclose((width, height), expected, atol=1), name
        pdf.close()


def test_rendered_page_is_not_blank_and_sized_as_set(result, tmp_path):
    import pypdfium2

    fig = _figures(result)["icpa"]
    path = tmp_path / "icpa.pdf"
    fig.savefig(path)
    pdf = pypdfium2.PdfDocument(str(path))
    image = pdf[0].render(scale=1.0).to_pil()  # scale 1: one pixel per point
    pdf.close()
    assert image.size == tuple(round(v * 72) for v in plots.PAGE_SIZE)
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not a blank page
    reds = ((pixels[..., 0] > 150) & (pixels[..., 2] < 100)).mean()
    blues = ((pixels[..., 2] > 150) & (pixels[..., 0] < 100)).mean()
    assert reds + blues > 0.001  # the diverging colour map is there


def test_icpa_colour_scale_is_centred_on_the_optimum(result):
    fig = _figures(result)["icpa"]
    image = fig.axes[0].images[0]
    lo, hi = image.norm.vmin, image.norm.vmax
    assert (lo + hi) / 2 == pytest.approx(result.summary["icpa_optimum_deg"])
    assert fig.axes[1].images[0].norm is image.norm  # means and rows share one scale
