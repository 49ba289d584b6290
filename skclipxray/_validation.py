"""Checks shared by several estimators."""

import numpy as np


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
