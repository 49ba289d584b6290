"""Plots of multilabel results and label distributions (needs matplotlib).

matplotlib is an optional extra (``pip install 'skclipxray[plot]'``), imported
only when a plot is drawn. The functions build a standalone
:class:`matplotlib.figure.Figure` (no pyplot state, so loops of plots do not
leak figures), save it when ``path`` is given and return it.
"""

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .metrics import _check_label_matrix, _check_scores

__all__ = ["CHANCE_GID", "plot_label_cooccurrence", "plot_label_frequency", "plot_roc_curves"]

#: ``gid`` of the chance diagonal in ROC panels, to tell it from the model curves.
CHANCE_GID = "chance"


def _new_figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "skclipxray's plots need matplotlib; install the 'plot' extra: "
            "pip install 'skclipxray[plot]'"
        ) from exc
    return Figure(**kwargs)


def _figure_and_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    figure = _new_figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure, path, dpi):
    if path is not None:
        figure.savefig(path, dpi=dpi)
    return figure


def plot_roc_curves(
    Y_true, Y_scores, *, labels=None, path=None, ncols=4, panel_size=3.0, dpi=120
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
    ncols : int, default=4
        Panels per row.
    panel_size : float, default=3.0
        Width and height of a panel in inches.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per label. Each holds one line per model, labelled with its
        AUC, and the chance diagonal (``gid`` :data:`CHANCE_GID`). A label
        with one class only in ``Y_true`` has no model line and says so.

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
    y_true, labels = _check_label_matrix(Y_true, labels)
    if not isinstance(Y_scores, dict):
        Y_scores = {"model": Y_scores}
    if not Y_scores:
        raise ValueError("Y_scores is empty; pass {model_name: scores}.")
    scores = {
        name: _check_scores(s, labels, len(y_true), name=f"Y_scores[{name!r}]")
        for name, s in Y_scores.items()
    }
    ncols = max(1, min(ncols, len(labels)))
    nrows = -(-len(labels) // ncols)
    figure = _new_figure(
        figsize=(panel_size * ncols, panel_size * nrows), layout="constrained"
    )
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(labels):]:
        figure.delaxes(ax)
    for j, (label, ax) in enumerate(zip(labels, axes)):
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, gid=CHANCE_GID)
        y = y_true[:, j]
        if y.min() == y.max():
            ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center")
        else:
            for name, s in scores.items():
                fpr, tpr, _ = roc_curve(y, s[:, j])
                auc = roc_auc_score(y, s[:, j])
                ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} ({auc:.3f})", gid=name)
            ax.legend(loc="lower right", fontsize="x-small", title="AUC", title_fontsize="x-small")
        ax.set(title=f"{label} (n+={int(y.sum())})", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.set_xlabel("false positive rate", fontsize="small")
        ax.set_ylabel("true positive rate", fontsize="small")
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
        Where to save the figure.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
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
    y, labels = _check_label_matrix(Y, labels, name="Y")
    counts = y.sum(axis=0).astype(float)
    if include_no_finding:
        counts = np.append(counts, (y.sum(axis=1) == 0).sum())
        labels = labels + ["No Finding"]
    if normalize:
        counts = counts / max(len(y), 1)
    order = np.argsort(counts, kind="stable")
    figure, ax = _figure_and_axes(ax, (6, 0.35 * len(labels) + 1.2))
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
        Where to save the figure.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
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
    y, labels = _check_label_matrix(Y, labels, name="Y")
    matrix = y.T.astype(np.int64) @ y.astype(np.int64)
    if normalize:
        diagonal = np.diag(matrix).astype(float)
        matrix = np.divide(
            matrix, diagonal[:, None], out=np.zeros(matrix.shape), where=diagonal[:, None] > 0
        )
    size = 0.45 * len(labels) + 2
    figure, ax = _figure_and_axes(ax, (size + 1, size))
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
        Where to save the figure.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    dpi : int, default=120
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"baseline": [0.6, 0.7]}, index=[100, 1000])
    >>> fig = plot_train_size_curves(table)
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['baseline']
    """
    figure, ax = _figure_and_axes(ax, (7, 4.5))
    for name, column in table.items():
        ax.plot(column.index, column.to_numpy(), marker="o", label=str(name))
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(table.index, [f"{size:,}" for size in table.index])
    ax.set_xlabel("training images")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return _save(figure, path, dpi)
