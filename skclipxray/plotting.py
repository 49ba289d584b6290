"""Plots of multilabel results and label distributions (needs matplotlib).

matplotlib is an optional extra (``pip install 'skclipxray[plot]'``), imported
only when a plot is drawn. The functions follow scikit-learn's display
conventions (:class:`sklearn.metrics.RocCurveDisplay`):

- ``ax=`` draws into existing axes. :func:`plot_roc_curves` and
  :func:`plot_reliability_diagrams`, which draw one panel per label, take a
  sequence of axes (one per label) or a figure to fill with panels.
- Without ``ax`` or ``path``, the figure is made with :mod:`matplotlib.pyplot`,
  so that ``plt.show()`` shows it and notebooks and sphinx-gallery display it.
- Every function returns the figure it drew in.

``path=`` saves the figure (format from the suffix). With ``path`` and no
``ax``, the figure is only written to the file: it is made without pyplot, so
that no window opens and a script or a loop that writes its plots to files
keeps no figure open. It is still returned, to save again or to display in a
notebook. To save a figure and show it too, call ``figure.savefig(path)`` on
the returned figure instead of passing ``path``.

A model has one colour in every plot: the models that ``skclipxray
experiment`` compares (:data:`MODEL_ORDER`) always take the same colours of
matplotlib's colour cycle, and other names the remaining colours, in
alphabetical order.
"""

import itertools

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ._validation import check_label_matrix, check_scores
from .metrics import _calibration, _calibration_bins

__all__ = [
    "CHANCE_GID",
    "plot_backbone_comparison",
    "MODEL_ORDER",
    "PERFECT_CALIBRATION_GID",
    "plot_label_cooccurrence",
    "plot_label_efficiency",
    "plot_label_frequency",
    "plot_reliability_diagrams",
    "plot_roc_curves",
    "plot_train_size_curves",
]

#: ``gid`` of the chance diagonal in ROC panels, to tell it from the model curves.
CHANCE_GID = "chance"

#: ``gid`` of the diagonal of perfect calibration in reliability diagrams.
PERFECT_CALIBRATION_GID = "perfect calibration"

#: Model names with a fixed colour: the i-th takes the i-th colour of the cycle.
MODEL_ORDER = (
    "zero-shot",
    "baseline",
    "concat-fusion",
    "concat-fusion (random prompts)",
    "weighted-sum",
    "weighted-sum (random prompts)",
    "text-anchored",
    "text-anchored (random prompts)",
    "tip-adapter",
    "tip-adapter (random prompts)",
    "linear probe",
)


_LEGEND_SIZE = "x-small"
_AXIS_LABEL_SIZE = "small"


def _new_figure(path, figsize):
    """A pyplot figure; one without pyplot when it is only saved to ``path``."""
    try:
        if path is None:
            from matplotlib.pyplot import figure as new_figure
        else:
            from matplotlib.figure import Figure as new_figure
    except ImportError as exc:
        raise ImportError(
            "skclipxray's plots need matplotlib; install the 'plot' extra: "
            "pip install 'skclipxray[plot]'"
        ) from exc
    return new_figure(figsize=figsize, layout="constrained")


def _model_colors(names):
    """``{name: colour}``: fixed slots for :data:`MODEL_ORDER`, then the free ones."""
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    names = [str(name) for name in names]
    slots = {name: MODEL_ORDER.index(name) for name in names if name in MODEL_ORDER}
    free = (i for i in itertools.count() if i not in slots.values())
    for name in sorted(set(names) - set(slots)):
        slots[name] = next(free)
    return {name: cycle[slot % len(cycle)] for name, slot in slots.items()}


def _figure_and_axes(ax, path, figsize):
    """The axes to draw in (``ax`` or new ones) and their figure."""
    if ax is not None:
        return ax.figure, ax
    figure = _new_figure(path, figsize)
    return figure, figure.add_subplot()


def _panel_axes(ax, path, n_panels, ncols, figsize):
    """``n_panels`` axes: new ones, those of ``ax``, or new ones in figure ``ax``."""
    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    if ax is None:
        ax = _new_figure(path, figsize(nrows, ncols))
    from matplotlib.axes import Axes
    from matplotlib.figure import FigureBase

    if not isinstance(ax, FigureBase):
        axes = np.asarray(ax, dtype=object).ravel()
        bad = [i for i, a in enumerate(axes) if not isinstance(a, Axes)]
        if bad:
            raise TypeError(
                f"ax[{bad[0]}] is a {type(axes[bad[0]]).__name__}; pass matplotlib "
                "axes, one per label, or a figure."
            )
        if len(axes) < n_panels:
            raise ValueError(
                f"ax holds {len(axes)} axes for {n_panels} labels; pass one axes per "
                "label, or a figure to fill with panels."
            )
        return axes[0].figure, list(axes[:n_panels])
    grid = ax.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in grid[n_panels:]:
        extra.remove()
    return ax, list(grid[:n_panels])


def _points(size):
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=size).get_size_in_points()


def _below_axis_label():
    """Points from the bottom of an axes to below its x axis label."""
    from matplotlib import rcParams

    return (
        max(rcParams["xtick.major.size"], 0) + rcParams["xtick.major.pad"]
        + _points(rcParams["xtick.labelsize"]) + rcParams["axes.labelpad"]
        + 1.4 * _points(_AXIS_LABEL_SIZE) + 2
    )


def _legend_height(n_entries):
    """Points taken by a legend of ``n_entries`` and a title, in ``_LEGEND_SIZE``."""
    from matplotlib import rcParams

    line = _points(_LEGEND_SIZE) * (1 + rcParams["legend.labelspacing"])
    return (n_entries + 1) * line + 2 * rcParams["legend.borderpad"] * _points(_LEGEND_SIZE)


def _legend_below(ax, **kwargs):
    """A legend under the x axis label of ``ax``, clear of its data."""
    from matplotlib.transforms import offset_copy

    below = offset_copy(ax.transAxes, fig=ax.figure, y=-_below_axis_label(), units="points")
    return ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
        borderaxespad=0, fontsize=_LEGEND_SIZE, title_fontsize=_LEGEND_SIZE, **kwargs,
    )


def _scores_by_model(Y_scores, labels, n_samples):
    """``{name: (n_samples, n_labels) float array}``; one array is the model "model"."""
    if not isinstance(Y_scores, dict):
        Y_scores = {"model": Y_scores}
    if not Y_scores:
        raise ValueError("Y_scores is empty; pass {model_name: scores}.")
    return {
        name: check_scores(s, labels, n_samples, name=f"Y_scores[{name!r}]")
        for name, s in Y_scores.items()
    }


def _panel_figsize(panel_size, n_models):
    """``figsize(nrows, ncols)`` of panels whose rows grow by their legends."""
    # Each row of panels grows by its legends, so that the panels keep their size.
    extra = (_below_axis_label() + _legend_height(n_models)) / 72

    def figsize(nrows, ncols):
        return panel_size * ncols, (panel_size + extra) * nrows

    return figsize


def _save(figure, path, dpi):
    if path is not None:
        figure.savefig(path, dpi=dpi)
    return figure


def plot_roc_curves(
    Y_true, Y_scores, *, labels=None, path=None, ax=None, ncols=4, panel_size=3.0,
    dpi=120,
):
    """ROC curves, one panel per label, several models overlaid.

    Parameters
    ----------
    Y_true : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 truth; a DataFrame's columns name the labels.
    Y_scores : dict of str to array-like, or array-like
        Scores of each model, ``{name: (n_samples, n_labels)}``; a single
        array is one model named "model".
    labels : sequence of str, optional
        Label names when ``Y_true`` is not a DataFrame.
    path : str or path-like, optional
        Where to save the figure (format from the suffix, e.g. ``.png``).
        Without ``ax``, the figure is then made without pyplot.
    ax : array-like of matplotlib.axes.Axes, or matplotlib.figure.Figure, optional
        Axes to draw the panels into, one per label in order (a single axes
        for a single label), or a figure (or subfigure) to add the panels to.
        By default, a new figure.
    ncols : int, default=4
        Panels per row, when the panels are created.
    panel_size : float, default=3.0
        Width and height of a panel in inches, when the figure is created.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per label. Each holds one line per model, labelled with its
        AUC, the chance diagonal (``gid`` :data:`CHANCE_GID`) and, under the
        axis labels, a legend. A label with one class only in ``Y_true`` has
        no model line and says so.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> Y = rng.randint(0, 2, size=(50, 3))
    >>> fig = plot_roc_curves(Y, {"a": rng.rand(50, 3), "b": Y + rng.rand(50, 3)},
    ...                       labels=["Mass", "Nodule", "Hernia"])
    >>> len(fig.axes)
    3
    """
    y_true, labels = check_label_matrix(Y_true, labels)
    scores = _scores_by_model(Y_scores, labels, len(y_true))
    figsize = _panel_figsize(panel_size, len(scores))
    figure, axes = _panel_axes(ax, path, len(labels), ncols, figsize)
    colors = _model_colors(scores)
    for j, (label, ax) in enumerate(zip(labels, axes)):
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, gid=CHANCE_GID)
        y = y_true[:, j]
        if y.min() == y.max():
            ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center")
        else:
            for name, s in scores.items():
                fpr, tpr, _ = roc_curve(y, s[:, j])
                auc = roc_auc_score(y, s[:, j])
                ax.plot(
                    fpr, tpr, linewidth=1.5, color=colors[str(name)],
                    label=f"{name} ({auc:.3f})", gid=name,
                )
            _legend_below(ax, title="AUC")
        ax.set(title=f"{label} (n+={int(y.sum())})", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.set_xlabel("false positive rate", fontsize=_AXIS_LABEL_SIZE)
        ax.set_ylabel("true positive rate", fontsize=_AXIS_LABEL_SIZE)
    return _save(figure, path, dpi)


def plot_reliability_diagrams(
    Y_true, Y_scores, *, labels=None, n_bins=10, path=None, ax=None, ncols=4,
    panel_size=3.0, dpi=120,
):
    """Reliability diagrams, one panel per label, several models overlaid.

    A reliability diagram shows whether predicted probabilities can be read as
    frequencies: of the images given a probability near 0.3, about 30% should
    have the label. The probabilities of a label are put in ``n_bins``
    equal-width bins, [j/n_bins, (j+1)/n_bins) (a probability of 1 in the
    last), and each non-empty bin is one point: the mean predicted probability
    against the fraction of positives. Points on the diagonal are perfectly
    calibrated; points below it are over-confident. These are the bins of the
    expected calibration error (ECE) of
    :func:`skclipxray.metrics.multilabel_report`, which the legend gives.

    Parameters
    ----------
    Y_true : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 truth; a DataFrame's columns name the labels.
    Y_scores : dict of str to array-like, or array-like
        Probabilities of each model, ``{name: (n_samples, n_labels)}``, e.g.
        from ``predict_proba``; a single array is one model named "model".
    labels : sequence of str, optional
        Label names when ``Y_true`` is not a DataFrame.
    n_bins : int, default=10
        Number of equal-width bins over [0, 1], as ``n_bins`` of
        :func:`~skclipxray.metrics.multilabel_report`.
    path : str or path-like, optional
        Where to save the figure (format from the suffix, e.g. ``.png``).
        Without ``ax``, the figure is then made without pyplot.
    ax : array-like of matplotlib.axes.Axes, or matplotlib.figure.Figure, optional
        Axes to draw the panels into, one per label in order (a single axes
        for a single label), or a figure (or subfigure) to add the panels to.
        By default, a new figure.
    ncols : int, default=4
        Panels per row, when the panels are created.
    panel_size : float, default=3.0
        Width and height of a panel in inches, when the figure is created.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per label. Each holds one line with markers per model
        (``gid`` the model's name), labelled with its ECE, the diagonal of
        perfect calibration (``gid`` :data:`PERFECT_CALIBRATION_GID`) and,
        under the axis labels, a legend. A label with one class only in
        ``Y_true`` still has its curves: calibration is defined without
        positives (or without negatives), unlike the ROC curve.

    Raises
    ------
    ValueError
        When the scores of a model are not all in [0, 1]: calibration needs
        probabilities (``predict_proba``, not ``decision_function``).

    See Also
    --------
    sklearn.calibration.CalibrationDisplay : One model and one label; its bins
        hold (j/n_bins, (j+1)/n_bins], which may differ at the edges.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> proba = rng.rand(200, 2)
    >>> Y = (rng.rand(200, 2) < proba).astype(int)
    >>> fig = plot_reliability_diagrams(Y, {"calibrated": proba, "overconfident": proba ** 3},
    ...                                 labels=["Mass", "Hernia"], n_bins=5)
    >>> len(fig.axes)
    2
    >>> [line.get_gid() for line in fig.axes[0].get_lines()]
    ['perfect calibration', 'calibrated', 'overconfident']
    """
    y_true, labels = check_label_matrix(Y_true, labels)
    scores = _scores_by_model(Y_scores, labels, len(y_true))
    ece = {}
    for name, s in scores.items():
        if not ((s >= 0) & (s <= 1)).all():
            raise ValueError(
                f"Y_scores[{name!r}] holds values from {s.min():.3g} to {s.max():.3g}, "
                "outside [0, 1]; calibration needs probabilities: pass predict_proba, "
                "not decision_function."
            )
        ece[name] = _calibration(y_true, s, n_bins)["ece"]  # validates n_bins too
    figsize = _panel_figsize(panel_size, len(scores))
    figure, axes = _panel_axes(ax, path, len(labels), ncols, figsize)
    colors = _model_colors(scores)
    for j, (label, ax) in enumerate(zip(labels, axes)):
        ax.plot(
            [0, 1], [0, 1], linestyle=":", color="grey", linewidth=1,
            gid=PERFECT_CALIBRATION_GID,
        )
        y = y_true[:, j]
        for name, s in scores.items():
            bins = _calibration_bins(s[:, j], n_bins)
            count = np.bincount(bins, minlength=n_bins)
            filled = count > 0
            mean_score = np.bincount(bins, weights=s[:, j], minlength=n_bins)[filled]
            positives = np.bincount(bins, weights=y, minlength=n_bins)[filled]
            ax.plot(
                mean_score / count[filled], positives / count[filled], marker="o",
                markersize=4, linewidth=1.5, color=colors[str(name)], clip_on=False,
                label=f"{name} (ECE {ece[name][j]:.3f})", gid=name,
            )
        _legend_below(ax)
        ax.set(title=f"{label} (n+={int(y.sum())})", xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.set_xlabel("mean predicted probability", fontsize=_AXIS_LABEL_SIZE)
        ax.set_ylabel("fraction of positives", fontsize=_AXIS_LABEL_SIZE)
    return _save(figure, path, dpi)


def plot_label_frequency(
    Y, *, labels=None, include_no_finding=True, normalize=False, path=None, ax=None, dpi=120
):
    """Horizontal bars of the number of images per label, most frequent on top.

    Parameters
    ----------
    Y : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 label matrix; a DataFrame's columns name the labels.
    labels : sequence of str, optional
        Label names when ``Y`` is not a DataFrame.
    include_no_finding : bool, default=True
        Add a "No Finding" bar: images without any label.
    normalize : bool, default=False
        Plot fractions of all images instead of counts.
    path : str or path-like, optional
        Where to save the figure. Without ``ax``, the figure is then made
        without pyplot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. By default, a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_label_frequency([[1, 0], [1, 1], [0, 0]], labels=["Mass", "Hernia"])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['Hernia', 'No Finding', 'Mass']
    """
    y, labels = check_label_matrix(Y, labels, name="Y")
    counts = y.sum(axis=0).astype(float)
    if include_no_finding:
        counts = np.append(counts, (y.sum(axis=1) == 0).sum())
        labels = labels + ["No Finding"]
    if normalize:
        counts = counts / max(len(y), 1)
    order = np.argsort(counts, kind="stable")
    figure, ax = _figure_and_axes(ax, path, (6, 0.35 * len(labels) + 1.2))
    bars = ax.barh([labels[i] for i in order], counts[order], color="tab:blue")
    ax.bar_label(bars, fmt="{:.1%}" if normalize else "{:,.0f}", fontsize="small", padding=2)
    ax.set_xlabel("fraction of images" if normalize else "images")
    ax.set_title(f"Label frequency ({len(y):,} images)")
    ax.margins(x=0.15)
    return _save(figure, path, dpi)


def plot_label_cooccurrence(
    Y, *, labels=None, normalize=False, annotate=True, path=None, ax=None, dpi=120
):
    """Heat map of how often two labels are found on the same image.

    Parameters
    ----------
    Y : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 label matrix; a DataFrame's columns name the labels.
    labels : sequence of str, optional
        Label names when ``Y`` is not a DataFrame.
    normalize : bool, default=False
        Divide each row by its diagonal: cell ``(i, j)`` is then the fraction
        of the images with label ``i`` that also have label ``j``.
    annotate : bool, default=True
        Write the value in each cell.
    path : str or path-like, optional
        Where to save the figure. Without ``ax``, the figure is then made
        without pyplot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. By default, a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        The image of the axes holds the matrix ``Y.T @ Y`` (normalised or not).

    Examples
    --------
    >>> fig = plot_label_cooccurrence([[1, 1], [1, 0], [0, 1]], labels=["Mass", "Nodule"])
    >>> fig.axes[0].images[0].get_array().tolist()
    [[2, 1], [1, 2]]
    """
    y, labels = check_label_matrix(Y, labels, name="Y")
    matrix = y.T.astype(np.int64) @ y.astype(np.int64)
    if normalize:
        diagonal = np.diag(matrix).astype(float)
        matrix = np.divide(
            matrix, diagonal[:, None], out=np.zeros(matrix.shape), where=diagonal[:, None] > 0
        )
    size = 0.45 * len(labels) + 2
    figure, ax = _figure_and_axes(ax, path, (size + 1, size))
    image = ax.imshow(matrix, cmap="viridis")
    figure.colorbar(image, ax=ax, label="fraction of row label" if normalize else "images")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title("Label co-occurrence")
    if annotate:
        threshold = matrix.max() / 2
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j, i, f"{value:.2f}" if normalize else f"{value:,}",
                ha="center", va="center", fontsize="x-small",
                color="black" if value > threshold else "white",
            )
    return _save(figure, path, dpi)


def plot_train_size_curves(
    table, *, metric="ROC AUC (macro, held-out patients)", path=None, ax=None, dpi=120
):
    """One line per model: a score against the number of training images.

    Parameters
    ----------
    table : pandas.DataFrame
        Indexed by training-set size, one column of scores per model.
    metric : str
        Label of the y axis.
    path : str or path-like, optional
        Where to save the figure. Without ``ax``, the figure is then made
        without pyplot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. By default, a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        One line per column, in the model's colour, and a legend to the right
        of the axes.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"baseline": [0.6, 0.7]}, index=[100, 1000])
    >>> fig = plot_train_size_curves(table)
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['baseline']
    """
    figure, ax = _figure_and_axes(ax, path, (8, 4.5))
    colors = _model_colors(table.columns)
    for name, column in table.items():
        ax.plot(
            column.index, column.to_numpy(), marker="o", label=str(name),
            color=colors[str(name)],
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(table.index, [f"{size:,}" for size in table.index])
    ax.set_xlabel("training images")
    ax.set_ylabel(metric)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), borderaxespad=0, fontsize="small")
    return _save(figure, path, dpi)


#: Columns :func:`plot_label_efficiency` needs; the interval and
#: ``positives_per_label_mean`` are drawn or used when present.
_LABEL_EFFICIENCY_COLUMNS = ("n_positives_per_label", "model", "roc_auc_macro_mean")


def plot_label_efficiency(
    table, *, metric="ROC AUC (macro, held-out patients)", path=None, ax=None, dpi=120
):
    """One line per model: mean score against positives per label, with its interval.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per number of positives and model, as ``label_efficiency.csv``
        of ``skclipxray experiment``: ``n_positives_per_label`` (an int, or
        ``"all"`` for the whole training set), ``model`` and
        ``roc_auc_macro_mean``; with ``roc_auc_macro_ci95_low`` and
        ``roc_auc_macro_ci95_high``, the interval is drawn as a band (none
        where it is NaN). ``"all"`` is placed at its
        ``positives_per_label_mean`` when that column is there and lies right
        of the other points, else at twice the largest number.
    metric : str
        Label of the y axis.
    path : str or path-like, optional
        Where to save the figure. Without ``ax``, the figure is then made
        without pyplot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. By default, a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        A log x axis, ticked at the numbers of positives (and "all"); one
        line per model in the model's colour (dashed for a random-prompt
        control, whose line often lies on its head's), its band in the same
        colour, and a legend to the right of the axes.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"n_positives_per_label": [1, 4, "all"],
    ...                       "model": ["baseline"] * 3,
    ...                       "roc_auc_macro_mean": [0.55, 0.62, 0.71]})
    >>> fig = plot_label_efficiency(table)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['1', '4', 'all']
    """
    missing = [c for c in _LABEL_EFFICIENCY_COLUMNS if c not in getattr(table, "columns", ())]
    if missing:
        raise ValueError(
            f"table has no column {', '.join(map(repr, missing))}; pass the table of "
            "label_efficiency.csv (columns n_positives_per_label, model, "
            "roc_auc_macro_mean)."
        )
    shots = table["n_positives_per_label"].astype(str)
    is_all = (shots == "all").to_numpy()
    try:
        numbers = shots[~is_all].astype(int)
    except ValueError as exc:
        raise ValueError(
            "table['n_positives_per_label'] must hold positive ints and 'all'; "
            f"{exc}"
        ) from None
    if (numbers < 1).any():
        raise ValueError("table['n_positives_per_label'] must hold positive ints and 'all'.")
    x = np.zeros(len(table))
    x[~is_all] = numbers
    largest = numbers.max() if len(numbers) else 1
    if is_all.any():
        at = 2.0 * largest
        if "positives_per_label_mean" in table:
            actual = float(table["positives_per_label_mean"][is_all].mean())
            at = actual if actual > largest or not len(numbers) else at
        x[is_all] = at
    has_band = {"roc_auc_macro_ci95_low", "roc_auc_macro_ci95_high"} <= set(table.columns)

    figure, ax = _figure_and_axes(ax, path, (8, 4.5))
    models = list(dict.fromkeys(table["model"].astype(str)))
    colors = _model_colors(models)
    names = table["model"].astype(str).to_numpy()
    for name in models:
        rows = np.flatnonzero(names == name)
        rows = rows[np.argsort(x[rows], kind="stable")]
        ax.plot(
            x[rows], table["roc_auc_macro_mean"].to_numpy(float)[rows], marker="o",
            label=name, color=colors[name],
            linestyle="--" if name.endswith("(random prompts)") else "-",
        )
        if has_band:
            ax.fill_between(
                x[rows], table["roc_auc_macro_ci95_low"].to_numpy(float)[rows],
                table["roc_auc_macro_ci95_high"].to_numpy(float)[rows],
                color=colors[name], alpha=0.15, linewidth=0, label="_nolegend_",
            )
    ax.set_xscale("log")
    ax.minorticks_off()
    ticks = sorted(set(x[~is_all].tolist()))
    labels = [f"{int(tick):,}" for tick in ticks]
    if is_all.any():
        ticks.append(x[is_all][0])
        labels.append("all")
    ax.set_xticks(ticks, labels)
    ax.set_xlabel("positives per label in the training set")
    ax.set_ylabel(metric)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), borderaxespad=0, fontsize="small")
    return _save(figure, path, dpi)


def plot_backbone_comparison(table, *, metric, path=None, ax=None, dpi=120):
    """One metric of several models on several backbones, as grouped horizontal bars.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per model, one column per backbone (e.g. the tables of
        ``skclipxray experiment --model A --model B``). NaN (a model a
        backbone cannot run, such as zero-shot on an image-only one) draws
        no bar.
    metric : str
        What the values are, for the axis label.
    path : str or path-like, optional
        Where to save the figure; without ``ax``, it is then made without pyplot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; by default, a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        One bar per model and backbone (``gid`` the backbone's name), the
        backbones in the colours of matplotlib's cycle, in column order, and
        a legend of the backbones under the axis.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"XraySigLIP": [0.81, 0.78], "RAD-DINO": [0.83, None]},
    ...                      index=["baseline", "zero-shot"])
    >>> fig = plot_backbone_comparison(table, metric="macro ROC AUC")
    >>> len(fig.axes[0].patches)  # the missing value draws no bar
    3
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ValueError("table must be a non-empty DataFrame: one row per model, one "
                         "column per backbone.")
    from matplotlib import rcParams

    n_models, n_backbones = table.shape
    height = 0.8 / n_backbones
    figsize = (6.0, 0.6 + 0.3 * n_models * n_backbones + _legend_height(n_backbones) / 72)
    figure, ax = _figure_and_axes(ax, path, figsize)
    cycle = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    positions = np.arange(n_models)
    for b, backbone in enumerate(table.columns):
        values = table[backbone].to_numpy(dtype=float)
        shown = ~np.isnan(values)
        bars = ax.barh(
            positions[shown] - 0.4 + height * (b + 0.5), values[shown], height=height,
            color=cycle[b % len(cycle)], label=str(backbone),
        )
        for bar in bars:
            bar.set_gid(str(backbone))
    ax.set_yticks(positions, [str(name) for name in table.index])
    ax.invert_yaxis()  # the first model on top
    ax.set_xlabel(metric, fontsize=_AXIS_LABEL_SIZE)
    _legend_below(ax, title="backbone", ncols=min(n_backbones, 3))
    return _save(figure, path, dpi)
