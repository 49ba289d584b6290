"""Plots: saved files, panels, curves against scikit-learn's roc_curve."""

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

import matplotlib  # the 'plot' extra, installed with the test extras

matplotlib.use("Agg")

from skclipxray.plotting import (  # noqa: E402
    CHANCE_GID,
    plot_label_cooccurrence,
    plot_label_frequency,
    plot_roc_curves,
)

LABELS = ["Atelectasis", "Effusion", "Mass", "Nodule", "Hernia"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    prevalence = [0.4, 0.3, 0.2, 0.1, 0.05]
    Y = pd.DataFrame((rng.rand(150, len(LABELS)) < prevalence).astype(int), columns=LABELS)
    scores = {
        "baseline": pd.DataFrame(rng.rand(150, len(LABELS)), columns=LABELS),
        "fusion": Y * 0.5 + rng.rand(150, len(LABELS)) * 0.7,
        "weighted": Y * 0.3 + rng.rand(150, len(LABELS)) * 0.7,
    }
    return Y, scores


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()


def _model_lines(ax):
    return [line for line in ax.lines if line.get_gid() != CHANCE_GID]


def test_roc_curves_one_panel_per_label_one_line_per_model(tmp_path, data):
    Y, scores = data
    path = tmp_path / "roc.png"

    figure = plot_roc_curves(Y, scores, path=path, ncols=2)

    _assert_png(path)
    assert len(figure.axes) == len(LABELS)  # the sixth grid cell is removed
    for ax, label in zip(figure.axes, LABELS):
        assert ax.get_title().startswith(label)
        lines = _model_lines(ax)
        assert [line.get_gid() for line in lines] == list(scores)
        assert sum(line.get_gid() == CHANCE_GID for line in ax.lines) == 1
        for line, (name, s) in zip(lines, scores.items()):
            fpr, tpr, _ = roc_curve(Y[label], s[label])
            np.testing.assert_allclose(line.get_xdata(), fpr)
            np.testing.assert_allclose(line.get_ydata(), tpr)
            assert line.get_label() == f"{name} ({roc_auc_score(Y[label], s[label]):.3f})"


def test_roc_curves_of_a_single_array_and_an_undefined_label(data):
    Y, scores = data
    Y = Y.copy()
    Y["Hernia"] = 0

    figure = plot_roc_curves(Y.to_numpy(), scores["fusion"].to_numpy(), labels=LABELS)

    assert [len(_model_lines(ax)) for ax in figure.axes] == [1, 1, 1, 1, 0]
    assert "one class only" in figure.axes[-1].texts[0].get_text()
    with pytest.raises(ValueError, match=r"Y_scores\['fusion'\] has shape \(150, 4\)"):
        plot_roc_curves(Y, {"fusion": scores["fusion"].to_numpy()[:, :4]})


def test_label_frequency(tmp_path, data):
    Y, _ = data
    path = tmp_path / "frequency.png"

    figure = plot_label_frequency(Y, path=path)

    _assert_png(path)
    ax = figure.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    widths = [bar.get_width() for bar in ax.patches]
    expected = {**Y.sum().to_dict(), "No Finding": int((Y.sum(axis=1) == 0).sum())}
    assert dict(zip(names, widths)) == expected
    assert widths == sorted(widths)  # the most frequent on top

    fractions = plot_label_frequency(Y, normalize=True, include_no_finding=False).axes[0]
    assert [bar.get_width() for bar in fractions.patches] == pytest.approx(
        sorted(Y.mean().tolist())
    )


def test_label_cooccurrence(tmp_path, data):
    Y, _ = data
    path = tmp_path / "cooccurrence.png"

    figure = plot_label_cooccurrence(Y, path=path)

    _assert_png(path)
    counts = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(counts, Y.T.to_numpy() @ Y.to_numpy())
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == LABELS

    normalized = plot_label_cooccurrence(Y, normalize=True, annotate=False)
    fractions = normalized.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(fractions), 1.0)
    np.testing.assert_allclose(fractions, counts / np.diag(counts)[:, None])


def test_plots_draw_into_given_axes(data):
    from matplotlib.figure import Figure

    Y, _ = data
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert plot_label_frequency(Y, ax=left) is figure
    assert plot_label_cooccurrence(Y, ax=right, annotate=False) is figure
    assert len(left.patches) == len(LABELS) + 1 and len(right.images) == 1


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, data):
    Y, _ = data
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"skclipxray\[plot\]"):
        plot_label_frequency(Y)
