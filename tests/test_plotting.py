"""Plots: saved files, panels, curves against scikit-learn's roc_curve and a
NumPy binning, pyplot figures, drawing into given axes, colours and legends."""

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score, roc_curve

from skclipxray.metrics import multilabel_report

import matplotlib  # the 'plot' extra, installed with the test extras

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from skclipxray.plotting import (  # noqa: E402
    CHANCE_GID,
    MODEL_ORDER,
    PERFECT_CALIBRATION_GID,
    plot_backbone_comparison,
    plot_label_cooccurrence,
    plot_label_efficiency,
    plot_label_frequency,
    plot_reliability_diagrams,
    plot_roc_curves,
    plot_train_size_curves,
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


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def sizes():
    """A train-size table as the experiment builds it: columns in alphabetical order."""
    names = ["zero-shot", "baseline", "concat-fusion", "weighted-sum", "mine"]
    rows = [{"train_size": n, "model": m, "roc_auc_macro": 0.5 + 0.01 * i + n / 1e4}
            for n in (50, 100, 300) for i, m in enumerate(names)]
    return pd.DataFrame(rows).pivot(index="train_size", columns="model", values="roc_auc_macro")


@pytest.fixture(scope="module")
def efficiency():
    """A label-efficiency table as the experiment writes it, "all" drawn once."""
    names = ["baseline", "tip-adapter", "text-anchored (random prompts)", "mine"]
    rows = []
    for k in (1, 4, 16, "all"):
        for i, name in enumerate(names):
            mean = 0.6 + 0.01 * i + (0.2 if k == "all" else k / 100)
            half = np.nan if k == "all" else 0.05 / (1 + i)
            rows.append({"n_positives_per_label": k, "model": name,
                         "n_draws": 1 if k == "all" else 3, "roc_auc_macro_mean": mean,
                         "roc_auc_macro_ci95_low": mean - half,
                         "roc_auc_macro_ci95_high": mean + half,
                         "positives_per_label_mean": 40.5 if k == "all" else k + 0.5})
    return pd.DataFrame(rows)


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()


def _model_lines(ax):
    diagonals = (CHANCE_GID, PERFECT_CALIBRATION_GID)
    return [line for line in ax.lines if line.get_gid() not in diagonals]


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


def _colour(artist):
    getter = getattr(artist, "get_color", None) or artist.get_facecolor
    return matplotlib.colors.to_hex(np.atleast_2d(getter())[0], keep_alpha=False)


def _cycle():
    return [matplotlib.colors.to_hex(c) for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]


def test_label_efficiency_log_axis_all_point_colours_and_bands(tmp_path, efficiency):
    path = tmp_path / "efficiency.png"

    figure = plot_label_efficiency(efficiency, path=path)

    _assert_png(path)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16", "all"]
    np.testing.assert_allclose(ax.get_xticks(), [1, 4, 16, 40.5])  # "all" at its positives
    models = list(dict.fromkeys(efficiency["model"]))
    assert [line.get_label() for line in ax.get_lines()] == models
    cycle = _cycle()
    for line, band in zip(ax.get_lines(), ax.collections):
        rows = efficiency[efficiency["model"] == line.get_label()]
        np.testing.assert_allclose(line.get_xdata(), [1, 4, 16, 40.5])
        np.testing.assert_allclose(line.get_ydata(), rows["roc_auc_macro_mean"])
        assert _colour(band) == _colour(line)
        # The band spans the interval where it is defined ("all" has one draw: none).
        y = band.get_paths()[0].vertices[:, 1]
        finite = rows["roc_auc_macro_ci95_low"].notna()
        np.testing.assert_allclose(
            [y.min(), y.max()],
            [rows["roc_auc_macro_ci95_low"][finite].min(),
             rows["roc_auc_macro_ci95_high"][finite].max()],
        )
    colours = {line.get_label(): _colour(line) for line in ax.get_lines()}
    for name in ("baseline", "tip-adapter", "text-anchored (random prompts)"):
        assert colours[name] == cycle[MODEL_ORDER.index(name)], name
    assert colours["mine"] == cycle[0]  # the first colour no model of the plot has by name
    dashed = [line.get_label() for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed == ["text-anchored (random prompts)"]


def test_label_efficiency_from_the_csv_and_without_the_positives_column(tmp_path, efficiency):
    path = tmp_path / "efficiency.csv"
    efficiency.to_csv(path, index=False)
    read = pd.read_csv(path)  # "all" makes the column strings
    figure = plot_label_efficiency(read)
    np.testing.assert_allclose(figure.axes[0].get_xticks(), [1, 4, 16, 40.5])

    bare = read.drop(columns=["positives_per_label_mean", "roc_auc_macro_ci95_low",
                              "roc_auc_macro_ci95_high"])
    ax = plot_label_efficiency(bare).axes[0]
    np.testing.assert_allclose(ax.get_xticks(), [1, 4, 16, 32])  # "all" at the right end
    assert not ax.collections

    # "all" fewer positives than the largest number: at the right end too.
    few = read.assign(positives_per_label_mean=10.0)
    np.testing.assert_allclose(plot_label_efficiency(few).axes[0].get_xticks(), [1, 4, 16, 32])


def test_label_efficiency_names_what_is_wrong(efficiency):
    with pytest.raises(ValueError, match="table has no column 'roc_auc_macro_mean'"):
        plot_label_efficiency(efficiency.drop(columns="roc_auc_macro_mean"))
    with pytest.raises(ValueError, match=r"table\['n_positives_per_label'\] must hold positive "
                       "ints and 'all'"):
        plot_label_efficiency(efficiency.replace({"n_positives_per_label": {"all": "ALL"}}))
    with pytest.raises(ValueError, match="must hold positive ints"):
        plot_label_efficiency(efficiency.replace({"n_positives_per_label": {1: 0}}))


def _every_plot(data, sizes, efficiency, **kwargs):
    Y, scores = data
    return [
        plot_roc_curves(Y, scores, **kwargs),
        plot_label_frequency(Y, **kwargs),
        plot_label_cooccurrence(Y, annotate=False, **kwargs),
        plot_train_size_curves(sizes, **kwargs),
        plot_label_efficiency(efficiency, **kwargs),
        plot_reliability_diagrams(Y, scores["baseline"], **kwargs),  # probabilities
        plot_backbone_comparison(sizes.T, metric="macro ROC AUC", **kwargs),
    ]


def test_plots_are_pyplot_figures(data, sizes, efficiency):
    figures = _every_plot(data, sizes, efficiency)

    assert plt.get_fignums() == [figure.number for figure in figures]
    assert all(figure.get_layout_engine() is not None for figure in figures)


def test_plots_draw_into_given_axes(data, sizes, efficiency):
    from matplotlib.figure import Figure

    Y, scores = data
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert plot_label_frequency(Y, ax=left) is figure
    assert plot_label_cooccurrence(Y, ax=right, annotate=False) is figure
    assert len(left.patches) == len(LABELS) + 1 and len(right.images) == 1

    figure, axes = plt.subplots(3, 3)
    opened = plt.get_fignums()
    assert plot_roc_curves(Y, scores, ax=axes[:2]) is figure  # a 2x3 array, 5 used
    assert plot_train_size_curves(sizes, ax=axes[2, 2]) is figure
    assert plot_label_efficiency(efficiency, ax=axes[2, 1]) is figure
    assert plt.get_fignums() == opened
    lines = [len(_model_lines(ax)) for ax in axes.ravel()]
    assert lines == [3] * 5 + [0] * 2 + [efficiency["model"].nunique(), len(sizes.columns)]
    assert axes[0, 0].get_title().startswith(LABELS[0])
    one = plot_roc_curves(Y[["Mass"]], scores["fusion"][["Mass"]], ax=axes[2, 0])
    assert one is figure and len(_model_lines(axes[2, 0])) == 1

    panels = Figure()
    assert plot_roc_curves(Y, scores, ax=panels, ncols=2) is panels
    assert len(panels.axes) == len(LABELS)
    assert plt.get_fignums() == opened

    with pytest.raises(ValueError, match="ax holds 3 axes for 5 labels"):
        plot_roc_curves(Y, scores, ax=axes[0])
    with pytest.raises(TypeError, match=r"ax\[1\] is a str"):
        plot_roc_curves(Y, scores, ax=[axes[0, 0], "axes"])


def test_a_model_has_one_colour_in_every_plot(data, sizes):
    Y, _ = data
    rng = np.random.RandomState(1)
    scores = {name: Y + rng.rand(*Y.shape) for name in ["zero-shot", "baseline", "mine",
                                                        "weighted-sum", "concat-fusion"]}
    roc = plot_roc_curves(Y, scores)
    curves = plot_train_size_curves(sizes)  # the same models, in another order

    def colours(ax):
        return {line.get_label().split(" (")[0]: matplotlib.colors.to_hex(line.get_color())
                for line in _model_lines(ax)}

    expected = colours(curves.axes[0])
    assert len(set(expected.values())) == len(expected)
    for ax in roc.axes:
        assert colours(ax) == expected
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cycle = [matplotlib.colors.to_hex(colour) for colour in cycle]
    assert expected["baseline"] == cycle[MODEL_ORDER.index("baseline")]
    # "mine" takes the first colour that no model of the plot has by name.
    assert expected["mine"] == cycle[1 + MODEL_ORDER.index("concat-fusion")]
    alone = plot_roc_curves(Y, scores["mine"])
    assert colours(alone.axes[0]) == {"model": cycle[0]}


def _extent(artist, figure):
    return artist.get_window_extent(figure.canvas.get_renderer())


def test_legends_leave_the_curves_and_axis_labels_clear(data, sizes):
    Y, scores = data
    for figure in [plot_roc_curves(Y, scores), plot_roc_curves(Y, scores, panel_size=2)]:
        figure.canvas.draw()
        for ax in figure.axes:
            legend = _extent(ax.get_legend(), figure)
            assert not legend.overlaps(_extent(ax, figure))
            assert not legend.overlaps(_extent(ax.xaxis.label, figure))
            assert legend.y1 < _extent(ax.xaxis.label, figure).y0  # below the axis
            assert legend.y0 >= 0  # inside the figure

    figure = plot_train_size_curves(sizes)
    figure.canvas.draw()
    ax = figure.axes[0]
    legend = _extent(ax.get_legend(), figure)
    assert not legend.overlaps(_extent(ax, figure))
    assert legend.x1 <= figure.bbox.x1


def test_saving_to_a_file_leaves_no_figure_open(tmp_path, data, sizes, efficiency):
    Y, scores = data
    for i in range(21):  # pyplot warns beyond 20 open figures
        plot_roc_curves(Y, scores, path=tmp_path / f"roc{i}.png")
        plot_train_size_curves(sizes, path=tmp_path / f"sizes{i}.png")
    _every_plot(data, sizes, efficiency, path=tmp_path / "every.png")
    assert plt.get_fignums() == []
    _assert_png(tmp_path / "roc20.png")
    _assert_png(tmp_path / "sizes20.png")

    figure, ax = plt.subplots()
    assert plot_train_size_curves(sizes, ax=ax, path=tmp_path / "mine.png") is figure
    assert plt.get_fignums() == [figure.number]
    _assert_png(tmp_path / "mine.png")


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, data):
    Y, _ = data
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"skclipxray\[plot\]"):
        plot_label_frequency(Y)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"skclipxray\[plot\]"):
        plot_roc_curves(Y, Y, path="never-written.png")


@pytest.fixture(scope="module")
def probabilities(data):
    """Probabilities of three models; 0, 1/2 and 1 exactly, to try the bin edges."""
    Y, scores = data
    proba = {
        "baseline": scores["baseline"].copy(),
        "fusion": scores["fusion"].clip(upper=1.0),  # many exact 1s: the last bin
        "weighted": scores["weighted"].copy(),
    }
    proba["baseline"].iloc[:3] = np.array([0.0, 0.5, 1.0])[:, None]
    return Y, proba


def _reliability_reference(y, p, n_bins):
    """Mean probability and fraction of positives of each non-empty bin, in NumPy."""
    # Bin j holds [j/n_bins, (j+1)/n_bins): digitize's edges are closed on the left.
    bins = np.digitize(p, np.linspace(0, 1, n_bins + 1)[1:-1])
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    return (np.bincount(bins, weights=p, minlength=n_bins)[filled] / count[filled],
            np.bincount(bins, weights=y, minlength=n_bins)[filled] / count[filled])


def _ece_of_legend(line):
    name, ece = line.get_label().rsplit(" (ECE ", 1)
    return name, float(ece.rstrip(")"))


@pytest.mark.parametrize("n_bins", [10, 4])
def test_reliability_diagrams_points_against_numpy_and_ece_of_the_report(
        tmp_path, probabilities, n_bins):
    Y, proba = probabilities
    path = tmp_path / "reliability.png"

    figure = plot_reliability_diagrams(Y, proba, n_bins=n_bins, path=path, ncols=2)

    _assert_png(path)
    assert len(figure.axes) == len(LABELS)  # the sixth grid cell is removed
    reports = {name: multilabel_report(Y, p, n_bins=n_bins)[0] for name, p in proba.items()}
    for ax, label in zip(figure.axes, LABELS):
        assert ax.get_title() == f"{label} (n+={Y[label].sum()})"
        assert ax.get_xlabel() == "mean predicted probability"
        assert ax.get_ylabel() == "fraction of positives"
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        assert ax.get_aspect() == 1
        diagonal = [line for line in ax.lines if line.get_gid() == PERFECT_CALIBRATION_GID]
        assert len(diagonal) == 1 and diagonal[0].get_linestyle() == ":"
        lines = _model_lines(ax)
        assert [line.get_gid() for line in lines] == list(proba)
        for line, (name, p) in zip(lines, proba.items()):
            mean, fraction = _reliability_reference(Y[label].to_numpy(), p[label].to_numpy(),
                                                    n_bins)
            np.testing.assert_allclose(line.get_xdata(), mean)
            np.testing.assert_allclose(line.get_ydata(), fraction)
            assert line.get_marker() == "o"
            legend_name, ece = _ece_of_legend(line)
            assert legend_name == name
            assert ece == pytest.approx(reports[name]["ece"][label], abs=5e-4)  # 3 decimals
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts == [line.get_label() for line in lines]


def test_reliability_diagrams_of_a_single_array_and_a_label_with_one_class(probabilities):
    Y, proba = probabilities
    Y = Y.copy()
    Y["Hernia"] = 0
    p = proba["fusion"].to_numpy()

    figure = plot_reliability_diagrams(Y.to_numpy(), p, labels=LABELS)

    assert [len(_model_lines(ax)) for ax in figure.axes] == [1] * len(LABELS)
    hernia = _model_lines(figure.axes[-1])[0]
    assert hernia.get_gid() == "model"
    np.testing.assert_array_equal(hernia.get_ydata(), 0.0)  # no positives in any bin
    mean, _ = _reliability_reference(np.zeros(len(p)), p[:, -1], 10)
    np.testing.assert_allclose(hernia.get_xdata(), mean)
    _, ece = _ece_of_legend(hernia)
    with pytest.warns(UndefinedMetricWarning, match="Hernia"):  # its ROC AUC, not its ECE
        report, _ = multilabel_report(Y, p)
    assert ece == pytest.approx(report["ece"]["Hernia"], abs=5e-4)


def test_reliability_diagrams_refuse_what_is_not_probabilities(data, probabilities):
    Y, scores = data
    _, proba = probabilities
    with pytest.raises(ValueError, match=r"Y_scores\['fusion'\] holds values from .* outside "
                       r"\[0, 1\]; calibration needs probabilities: pass predict_proba"):
        plot_reliability_diagrams(Y, {"baseline": proba["baseline"], "fusion": scores["fusion"]})
    with pytest.raises(ValueError, match=r"Y_scores\['model'\] holds values from -0.5"):
        plot_reliability_diagrams(Y, proba["baseline"] - 0.5)
    with pytest.raises(ValueError, match=r"Y_scores\['fusion'\] has shape \(150, 4\)"):
        plot_reliability_diagrams(Y, {"fusion": proba["fusion"].to_numpy()[:, :4]})
    with pytest.raises(ValueError, match="n_bins must be a positive int, got 0"):
        plot_reliability_diagrams(Y, proba, n_bins=0)
    with pytest.raises(ValueError, match="Y_scores is empty"):
        plot_reliability_diagrams(Y, {})
    assert plt.get_fignums() == []  # refused before any figure is made


def test_reliability_diagrams_draw_into_given_axes_or_a_figure(probabilities):
    from matplotlib.figure import Figure

    Y, proba = probabilities
    figure, axes = plt.subplots(2, 3)
    opened = plt.get_fignums()
    assert plot_reliability_diagrams(Y, proba, ax=axes) is figure  # a 2x3 array, 5 used
    assert plot_reliability_diagrams(Y, proba, ax=list(axes.ravel())) is figure
    assert plt.get_fignums() == opened
    assert [len(_model_lines(ax)) for ax in axes.ravel()] == [2 * len(proba)] * 5 + [0]
    assert axes[0, 0].get_title().startswith(LABELS[0])
    one = plot_reliability_diagrams(Y[["Mass"]], proba["fusion"][["Mass"]], ax=axes[1, 2])
    assert one is figure and len(_model_lines(axes[1, 2])) == 1

    panels = Figure()
    assert plot_reliability_diagrams(Y, proba, ax=panels, ncols=3) is panels
    assert len(panels.axes) == len(LABELS)
    assert [ax.get_title().split(" (")[0] for ax in panels.axes] == LABELS
    assert plt.get_fignums() == opened

    with pytest.raises(ValueError, match="ax holds 3 axes for 5 labels"):
        plot_reliability_diagrams(Y, proba, ax=axes[0])


def test_reliability_diagrams_saved_to_files_leave_no_figure_open(tmp_path, probabilities):
    Y, proba = probabilities
    for i in range(21):  # pyplot warns beyond 20 open figures
        figure = plot_reliability_diagrams(Y, proba, path=tmp_path / f"reliability{i}.png")
    assert plt.get_fignums() == []
    assert len(figure.axes) == len(LABELS)  # still returned
    _assert_png(tmp_path / "reliability20.png")

    shown = plot_reliability_diagrams(Y, proba)
    assert plt.get_fignums() == [shown.number]


def test_reliability_diagrams_colours_are_those_of_the_other_plots(data, sizes):
    Y, _ = data
    rng = np.random.RandomState(2)
    proba = {name: rng.rand(*Y.shape) for name in ["zero-shot", "baseline", "mine",
                                                   "weighted-sum", "concat-fusion"]}
    reliability = plot_reliability_diagrams(Y, proba)
    roc = plot_roc_curves(Y, proba)
    curves = plot_train_size_curves(sizes)  # the same models, in another order

    def colours(ax):
        return {line.get_gid(): matplotlib.colors.to_hex(line.get_color())
                for line in _model_lines(ax)}

    expected = {line.get_label(): matplotlib.colors.to_hex(line.get_color())
                for line in curves.axes[0].get_lines()}
    assert len(set(expected.values())) == len(expected)
    for ax, roc_ax in zip(reliability.axes, roc.axes):
        assert colours(ax) == expected == colours(roc_ax)


def test_reliability_legends_leave_the_curves_and_axis_labels_clear(probabilities):
    Y, proba = probabilities
    for figure in [plot_reliability_diagrams(Y, proba),
                   plot_reliability_diagrams(Y, proba, panel_size=2)]:
        figure.canvas.draw()
        for ax in figure.axes:
            legend = _extent(ax.get_legend(), figure)
            assert not legend.overlaps(_extent(ax, figure))
            assert legend.y1 < _extent(ax.xaxis.label, figure).y0  # below the axis label
            assert legend.y0 >= 0  # inside the figure


def test_backbone_bars_show_the_table(tmp_path):
    table = pd.DataFrame(
        {"XraySigLIP": [0.81, 0.78], "XrayCLIP": [0.80, 0.75], "RAD-DINO": [0.83, np.nan]},
        index=["baseline", "zero-shot"],
    )
    figure = plot_backbone_comparison(table, metric="macro ROC AUC")
    ax = figure.axes[0]
    bars = {(patch.get_gid(), round(patch.get_y() + patch.get_height() / 2)): patch.get_width()
            for patch in ax.patches}
    assert len(bars) == 5  # RAD-DINO has no zero-shot: no bar
    for model_row, model in enumerate(table.index):
        for backbone in table.columns:
            value = table.loc[model, backbone]
            if np.isnan(value):
                assert (backbone, model_row) not in bars
            else:
                assert bars[backbone, model_row] == pytest.approx(value)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(table.index)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(table.columns)
    assert ax.get_xlabel() == "macro ROC AUC"
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        plot_backbone_comparison(pd.DataFrame(), metric="x")
