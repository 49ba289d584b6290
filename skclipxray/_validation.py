"""Checks shared by the estimators and the metrics.

Parameters whose check is a type or a range are declared in each
estimator's ``_parameter_constraints`` and checked by scikit-learn when
``fit`` starts. What such a declaration cannot say is checked here, once for
every caller: label matrices and scores, thresholds (one or one per label),
label names, prompt templates, layer sizes and the input names given
to ``get_feature_names_out``. Each check names the culprit:
the argument, and the row, column or item at fault.
"""

import numbers
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.utils import check_array

from .labels import NIH_PATHOLOGIES

__all__ = [
    "check_hidden_sizes",
    "check_input_features",
    "check_label_matrix",
    "check_labels",
    "check_multilabel_indicator",
    "check_scores",
    "check_templates",
    "check_threshold",
]


def check_label_matrix(Y, labels=None, *, name="Y_true"):
    """Return ``Y`` as a 0/1 uint8 array of shape (n, L) and the label names.

    Parameters
    ----------
    Y : array-like or DataFrame of shape (n_samples, n_labels)
        A DataFrame's columns name the labels.
    labels : sequence of str, optional
        Label names when ``Y`` is not a DataFrame; ``label_0``, ... if None.
    name : str, default="Y_true"
        What the messages call ``Y``.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_labels), uint8
    labels : list of str
    """
    if isinstance(Y, pd.DataFrame):
        columns = [str(c) for c in Y.columns]
        if labels is not None and list(labels) != columns:
            raise ValueError(
                f"labels={list(labels)} differ from the columns of {name} {columns}."
            )
        labels = columns
    values = check_array(Y, dtype=None, ensure_2d=True, input_name=name)
    if labels is None:
        labels = [f"label_{j}" for j in range(values.shape[1])]
    labels = [str(label) for label in labels]
    if len(labels) != values.shape[1]:
        raise ValueError(
            f"{name} has {values.shape[1]} columns but {len(labels)} labels were given."
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"Label names must be unique, got {labels}.")
    bad = np.argwhere((values != 0) & (values != 1))
    if bad.size:
        row, col = bad[0]
        raise ValueError(
            f"{name}[{row}, {labels[col]!r}] is {values[row, col].item()!r}; labels must be 0 or 1."
        )
    return values.astype(np.uint8), labels


def check_scores(Y_score, labels, n_samples, *, name="Y_score"):
    """Return scores as a float array of shape (n, L), columns in ``labels`` order.

    A DataFrame's columns are matched to ``labels`` by name.
    """
    if isinstance(Y_score, pd.DataFrame):
        columns = [str(c) for c in Y_score.columns]
        if sorted(columns) != sorted(labels):
            raise ValueError(f"The columns of {name} {columns} are not the labels {labels}.")
        Y_score = Y_score.set_axis(columns, axis=1)[labels]
    scores = check_array(Y_score, dtype=np.float64, input_name=name)
    if scores.shape != (n_samples, len(labels)):
        raise ValueError(
            f"{name} has shape {scores.shape}; expected ({n_samples}, {len(labels)}) "
            f"like Y_true."
        )
    return scores


def check_multilabel_indicator(y, label_names=None):
    """Refuse a 2-D ``y`` that is not a 0/1 (or boolean) indicator matrix.

    scikit-learn's ``type_of_target`` calls any 2-D array of two integer
    values ``"multilabel-indicator"``, {0, 2} and {-1, 1} included; a head
    trained on those would predict 0/1, which are not the labels given.

    Parameters
    ----------
    y : ndarray of shape (n_samples, n_labels)
    label_names : sequence of str, optional
        Names of y's columns, for the message; their positions otherwise.

    Raises
    ------
    ValueError
        Naming the first column that holds something other than 0 and 1.
    """
    y = np.asarray(y)
    if y.dtype == bool:
        return
    names = label_names if label_names is not None else range(y.shape[1])
    for name, column in zip(names, y.T):
        try:
            valid = np.isin(column, (0, 1)).all()
        except TypeError:  # values that do not compare with numbers
            valid = False
        if not valid:
            raise ValueError(
                "A 2-D y is taken as multilabel and must hold only 0 and 1 "
                f"(or booleans); column {name!r} holds {np.unique(column)[:5].tolist()}."
            )


def check_threshold(threshold, labels=None, *, where="y", bounds=(0.0, 1.0)):
    """Return a decision threshold: one number, or one number per label.

    Parameters
    ----------
    threshold : float, array-like of shape (n_labels,), Series or dict
        One threshold for all labels, or one per label: in the order of
        ``labels``, or, for a Series or dict, matched to them by name.
    labels : sequence, optional
        The labels a per-label threshold must cover. ``None``: only one
        number is accepted.
    where : str, default="y"
        What holds the labels, for the messages.
    bounds : tuple of float or None, default=(0.0, 1.0)
        Inclusive range of a threshold on probabilities; ``None`` for scores
        of any scale.

    Returns
    -------
    float or ndarray of shape (n_labels,)
        One number when ``labels`` is None, else one float per label.
    """
    if isinstance(threshold, (pd.Series, Mapping)) and labels is not None:
        threshold = pd.Series(threshold, dtype=float)
        missing = [label for label in labels if label not in threshold.index]
        if missing:
            raise ValueError(f"threshold has no value for the label(s) {missing}.")
        values = threshold[list(labels)].to_numpy()
    else:
        values = np.asarray(threshold, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and labels is None):
        per_label = " or one per label" if labels is not None else ""
        raise ValueError(
            f"threshold must be a number{per_label}; got an array of shape {values.shape}."
        )
    if values.ndim == 1 and values.shape[0] != len(labels):
        raise ValueError(
            f"threshold has {values.shape[0]} values but {where} has {len(labels)} "
            "labels; give a number or one per label."
        )
    if bounds is not None and not np.all((values >= bounds[0]) & (values <= bounds[1])):
        raise ValueError(
            f"threshold={threshold!r} must lie in [{bounds[0]:g}, {bounds[1]:g}]."
        )
    if labels is None:
        return float(values)
    return np.broadcast_to(values, (len(labels),)).astype(np.float64)


def check_labels(X, name="X"):
    """Return the label names in ``X`` as a list (``None``: the NIH pathologies)."""
    if X is None:
        return list(NIH_PATHOLOGIES)
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"{name} must be a list of label names, got the single string "
            f"{X!r}; wrap it in a list."
        )
    try:
        labels = np.asarray(list(X), dtype=object)
    except TypeError:
        raise TypeError(
            f"{name} must be a list of label names, got {type(X).__name__}."
        ) from None
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D list of label names, got an array of shape "
            f"{labels.shape}."
        )
    if labels.size == 0:
        raise ValueError(
            f"{name} is an empty list of label names: give at least one."
        )
    for index, label in enumerate(labels):
        if label is None or not str(label).strip():
            raise ValueError(f"{name}[{index}] = {label!r} is not a label name.")
    return labels.tolist()


def check_templates(templates, name="templates"):
    """Return ``templates`` as a tuple of format strings with one ``{}`` each."""
    if isinstance(templates, str) or not hasattr(templates, "__iter__"):
        raise TypeError(
            f"{name} must be a list of format strings such as ['signs of {{}}'], "
            f"got {templates!r}."
        )
    templates = tuple(templates)
    if not templates:
        raise ValueError(f"{name} is empty: give at least one template.")
    for index, template in enumerate(templates):
        if not isinstance(template, str):
            raise TypeError(
                f"{name}[{index}] = {template!r} is not a string."
            )
        if "{}" not in template:
            raise ValueError(
                f"{name}[{index}] = {template!r} has no '{{}}' placeholder for "
                "the label phrase."
            )
        try:
            template.format("phrase")
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{name}[{index}] = {template!r} is not a format string with "
                f"a single '{{}}' placeholder: {exc}"
            ) from exc
    return templates


def check_hidden_sizes(value, name="hidden_sizes"):
    """Return layer widths as a tuple of positive ints (one int is one layer).

    ``()`` is valid: no hidden layer.
    """
    if isinstance(value, numbers.Integral):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        raise TypeError(f"{name}={value!r} must be a tuple of ints.") from None
    if not all(isinstance(size, numbers.Integral) and size >= 1 for size in sizes):
        raise ValueError(f"{name}={value!r} must hold positive integers.")
    return tuple(int(size) for size in sizes)


def check_input_features(input_features, what="images"):
    """Check the ``input_features`` of a ``get_feature_names_out`` whose input is one column.

    The embedders take one column (of images, of label names), so that the
    names of their outputs do not depend on the input's: ``input_features``
    is ``None`` or one name, as a
    :class:`~sklearn.compose.ColumnTransformer` passes for one column.
    """
    if input_features is None:
        return
    names = np.asarray(input_features, dtype=object)
    if names.ndim != 1 or len(names) != 1:
        raise ValueError(
            f"input_features should be None or the name of the one column of "
            f"{what} transformed, got {input_features!r}."
        )
