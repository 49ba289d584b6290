"""Multilabel metrics: a per-label report, bootstrap intervals, scorers, thresholds.

Every number comes from a scikit-learn metric function. Label matrices may be
DataFrames (their columns name the labels) or arrays with ``labels=`` names.
A prediction is positive when its score is ``>= threshold``.

ROC AUC and average precision are undefined for a label whose ``Y_true`` column
has only one class (common for Hernia, 0.2% of ChestX-ray14, in a small split);
such labels get NaN, with a warning naming them, and macro averages are taken
over the labels where the metric is defined.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    hamming_loss,
    make_scorer,
    precision_recall_curve,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.utils import check_array, check_random_state

from ._validation import check_label_matrix, check_scores, check_threshold

__all__ = [
    "SUMMARY_METRICS",
    "apply_thresholds",
    "bootstrap_ci",
    "multilabel_report",
    "multilabel_scorers",
    "tune_thresholds",
]


def _check_thresholds(threshold, labels):
    """One threshold per label; scores may be of any scale, so no range."""
    return check_threshold(threshold, labels, where="Y_score", bounds=None)


def _defined(y_true, *, need_negatives=True):
    """Columns where a ranking metric is defined (both classes, or any positive)."""
    has_positive = y_true.max(axis=0) == 1
    return has_positive & (y_true.min(axis=0) == 0) if need_negatives else has_positive


def _per_label_ranking(metric, y_true, y_score, defined):
    """``metric`` per label, NaN where it is undefined; one scikit-learn call."""
    values = np.full(y_true.shape[1], np.nan)
    columns = np.flatnonzero(defined)
    if columns.size == 1:
        values[columns] = metric(y_true[:, columns[0]], y_score[:, columns[0]])
    elif columns.size > 1:
        values[columns] = metric(y_true[:, columns], y_score[:, columns], average=None)
    return values


def _nanmean(values):
    return float(np.mean(values[~np.isnan(values)])) if not np.isnan(values).all() else np.nan


def _roc_auc_macro(y_true, y_score):
    """Mean ROC AUC over the labels whose column has both classes."""
    y_true = np.asarray(y_true)
    per_label = _per_label_ranking(roc_auc_score, y_true, np.asarray(y_score), _defined(y_true))
    return _nanmean(per_label)


def _average_precision_macro(y_true, y_score):
    """Mean average precision over the labels with at least one positive."""
    y_true = np.asarray(y_true)
    defined = _defined(y_true, need_negatives=False)
    per_label = _per_label_ranking(average_precision_score, y_true, np.asarray(y_score), defined)
    return _nanmean(per_label)


#: Names of the summary metrics of :func:`multilabel_report`, in report order.
SUMMARY_METRICS = (
    "exact_match",
    "hamming_loss",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "roc_auc_macro",
    "average_precision_macro",
)


def _precision_recall_f1(y_true, y_pred, average, zero_division):
    """scikit-learn's ``precision_recall_fscore_support`` over the label columns.

    scikit-learn reads a single column as a binary target (classes 0 and 1),
    not as one label: score its positive class alone.
    """
    kwargs = {}
    if y_true.shape[1] == 1:
        y_true, y_pred, kwargs = y_true[:, 0], y_pred[:, 0], {"labels": [1]}
    return precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=zero_division, **kwargs
    )


def _summary(y_true, y_score, y_pred, zero_division, names=SUMMARY_METRICS):
    """The summary metrics in ``names``, each from scikit-learn's function."""
    values = {}
    if "exact_match" in names:
        values["exact_match"] = accuracy_score(y_true, y_pred)
    if "hamming_loss" in names:
        values["hamming_loss"] = hamming_loss(y_true, y_pred)
    for average in ("macro", "micro"):
        wanted = [f"{m}_{average}" for m in ("precision", "recall", "f1")]
        if any(name in names for name in wanted):
            # One call gives precision, recall and F1 (bootstraps call this often).
            prf = _precision_recall_f1(y_true, y_pred, average, zero_division)
            values.update(zip(wanted, (float(v) for v in prf[:3])))
    if "roc_auc_macro" in names:
        values["roc_auc_macro"] = _roc_auc_macro(y_true, y_score)
    if "average_precision_macro" in names:
        values["average_precision_macro"] = _average_precision_macro(y_true, y_score)
    return {name: float(values[name]) for name in names}


def _undefined_message(y_true, labels, where="Y_true"):
    """Say which labels have no ROC AUC and why, or return None when all have one.

    A label with no positive or no negative in ``y_true`` has no ROC AUC; one
    with no positive has no average precision either.
    """
    no_positive = [labels[j] for j in np.flatnonzero(y_true.max(axis=0) == 0)]
    no_negative = [labels[j] for j in np.flatnonzero(y_true.min(axis=0) == 1)]
    n_undefined = len(no_positive) + len(no_negative)
    if not n_undefined:
        return None
    reasons = [
        f"no {kind} example of {', '.join(names)}"
        for kind, names in (("positive", no_positive), ("negative", no_negative))
        if names
    ]
    message = (
        f"ROC AUC is undefined (NaN) for {n_undefined} of {len(labels)} labels: "
        f"{where} has {' and '.join(reasons)}."
    )
    if no_positive:
        message += " So is average precision for the labels without a positive."
    n_defined = len(labels) - n_undefined
    if n_defined:
        return message + f" Macro averages leave them out (ROC AUC: mean of {n_defined} labels)."
    return message + " Macro ROC AUC is NaN."


def _warn_undefined(y_true, labels):
    message = _undefined_message(y_true, labels)
    if message:
        warnings.warn(message, UndefinedMetricWarning, stacklevel=3)


def multilabel_report(
    Y_true,
    Y_score,
    *,
    threshold=0.5,
    labels=None,
    zero_division=0.0,
    n_bins=10,
    n_boot=0,
    groups=None,
    confidence=0.95,
    random_state=None,
):
    """Per-label and summary metrics of a multilabel classifier.

    Parameters
    ----------
    Y_true : array-like or DataFrame of shape (n_samples, n_labels)
        0/1 truth; a DataFrame's columns name the labels.
    Y_score : array-like or DataFrame of shape (n_samples, n_labels)
        Scores or probabilities, e.g. ``predict_proba``; a DataFrame is
        matched to ``Y_true`` by column name.
    threshold : float, array-like of shape (n_labels,), Series or dict, default=0.5
        A prediction is positive when ``score >= threshold``; per-label values
        (e.g. from :func:`tune_thresholds`) are matched by name when given as
        a Series or dict.
    labels : sequence of str, optional
        Label names when ``Y_true`` is not a DataFrame.
    zero_division : float, default=0.0
        Precision, recall, F1 or specificity of a label with nothing predicted,
        nothing to find or no negative; passed to scikit-learn.
    n_bins : int, default=10
        Bins of the expected calibration error: equal widths over [0, 1].
    n_boot : int, default=0
        Bootstrap replicates of the per-label sensitivity and specificity
        intervals; 0 gives none.
    groups : array-like of shape (n_samples,), optional
        Patient ids. When given, each replicate draws patients with
        replacement and takes all their images, as in :func:`bootstrap_ci`.
    confidence : float, default=0.95
        Level of the percentile intervals.
    random_state : int, RandomState instance or None, default=None
        Seed of the resampling.

    Returns
    -------
    per_label : pandas.DataFrame
        Indexed by label: ``threshold``, ``support`` (positives), ``roc_auc``,
        ``average_precision``, ``precision``, ``recall``, ``f1``,
        ``sensitivity`` (the recall, under its clinical name), ``specificity``
        (TN / (TN + FP)), and, when the scores are probabilities (all in
        [0, 1]; NaN otherwise), how well they are calibrated: ``brier``
        (scikit-learn's Brier score, lower is better) and ``ece``, the
        expected calibration error: over ``n_bins`` equal-width bins of the
        predicted probability, the mean over images of ``|fraction of
        positives - mean probability|`` of their bin. With ``n_boot > 0``,
        last: ``sensitivity_ci_low``, ``sensitivity_ci_high``,
        ``specificity_ci_low`` and ``specificity_ci_high``, percentile
        bootstrap intervals over the replicates where the rate is defined
        (NaN where it is in none).
    summary : pandas.Series
        Indexed by metric, in the order of :data:`SUMMARY_METRICS`:
        ``exact_match``, ``hamming_loss`` (lower is better), macro and micro
        ``precision``, ``recall``, ``f1`` (e.g. ``f1_macro``), ``roc_auc_macro``
        and ``average_precision_macro``. The names are those of the scorers of
        :func:`multilabel_scorers`.

    See Also
    --------
    bootstrap_ci : Confidence intervals of the same metrics, by image or by patient.

    Examples
    --------
    >>> import pandas as pd
    >>> Y = pd.DataFrame({"Mass": [1, 0, 1, 0], "Effusion": [0, 0, 1, 1]})
    >>> scores = [[0.9, 0.2], [0.3, 0.1], [0.6, 0.7], [0.2, 0.4]]
    >>> per_label, summary = multilabel_report(Y, scores)
    >>> per_label["roc_auc"].tolist()
    [1.0, 1.0]
    >>> float(summary["hamming_loss"])
    0.125
    >>> per_label[["sensitivity", "specificity"]].to_numpy().tolist()
    [[1.0, 1.0], [0.5, 1.0]]

    Intervals that resample whole patients (two images each here: the second
    patient has the two Effusion positives, one found, so every replicate with
    a positive finds half of them):

    >>> per_label, _ = multilabel_report(Y, scores, n_boot=200, groups=[0, 0, 1, 1],
    ...                                  random_state=0)
    >>> per_label.loc["Effusion", ["sensitivity_ci_low", "sensitivity_ci_high"]].tolist()
    [0.5, 0.5]
    """
    y_true, labels = check_label_matrix(Y_true, labels)
    y_score = check_scores(Y_score, labels, len(y_true))
    thresholds = _check_thresholds(threshold, labels)
    groups = _check_bootstrap(n_boot, groups, confidence, len(y_true), minimum=0)
    y_pred = (y_score >= thresholds).astype(np.uint8)
    _warn_undefined(y_true, labels)
    rates = _rates(y_true, y_pred, zero_division)

    precision, recall, f1, support = _precision_recall_f1(y_true, y_pred, None, zero_division)
    per_label = pd.DataFrame(
        {
            "threshold": thresholds,
            "support": support,
            "roc_auc": _per_label_ranking(roc_auc_score, y_true, y_score, _defined(y_true)),
            "average_precision": _per_label_ranking(
                average_precision_score, y_true, y_score, _defined(y_true, need_negatives=False)
            ),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "sensitivity": recall,
            "specificity": rates["specificity"],
            **_calibration(y_true, y_score, n_bins),
        },
        index=pd.Index(labels, name="label"),
    )
    if n_boot:
        per_label = per_label.assign(
            **_rate_intervals(y_true, y_pred, n_boot, groups, confidence, random_state)
        )
    summary = pd.Series(
        _summary(y_true, y_score, y_pred, zero_division), name="value", dtype=float
    ).rename_axis("metric")
    return per_label, summary


def _calibration_bins(y_score, n_bins):
    """Bin of each probability: bin j holds [j/n_bins, (j+1)/n_bins); 1 goes to the last."""
    return np.minimum((y_score * n_bins).astype(int), n_bins - 1)


def _calibration(y_true, y_score, n_bins):
    """Per-label Brier score and expected calibration error (NaN unless probabilities)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}.")
    n_labels = y_true.shape[1]
    if not ((y_score >= 0) & (y_score <= 1)).all():
        return {"brier": np.full(n_labels, np.nan), "ece": np.full(n_labels, np.nan)}
    bins = _calibration_bins(y_score, n_bins)
    ece = np.empty(n_labels)
    for k in range(n_labels):
        count = np.bincount(bins[:, k], minlength=n_bins)
        gap = np.abs(
            np.bincount(bins[:, k], weights=y_true[:, k], minlength=n_bins)
            - np.bincount(bins[:, k], weights=y_score[:, k], minlength=n_bins)
        )
        ece[k] = gap.sum() / count.sum()
    brier = [brier_score_loss(y_true[:, k], y_score[:, k]) for k in range(n_labels)]
    return {"brier": np.asarray(brier), "ece": ece}


def _rate_intervals(y_true, y_pred, n_boot, groups, confidence, random_state):
    """Bootstrap intervals of the per-label sensitivity and specificity: column -> values.

    A replicate without a positive (negative) of a label leaves its
    sensitivity (specificity) out, rather than counting ``zero_division``.
    """

    def rates(y_true, y_pred):
        values = _rates(y_true, y_pred, np.nan)
        return np.stack([values["sensitivity"], values["specificity"]])

    replicates = _bootstrap_replicates(rates, y_true, y_pred, n_boot, groups, random_state)
    low, high = _percentile_interval(np.stack(replicates), confidence)
    return {
        f"{rate}_ci_{side}": bound[k]
        for k, rate in enumerate(("sensitivity", "specificity"))
        for side, bound in (("low", low), ("high", high))
    }


def _bootstrap_indices(n_samples, groups, rng):
    """Row indices of one bootstrap replicate; whole groups when groups are given."""
    if groups is None:
        return rng.randint(0, n_samples, n_samples)
    codes, uniques = pd.factorize(groups)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.cumsum(counts) - counts
    chosen = rng.randint(0, len(uniques), len(uniques))
    lengths = counts[chosen]
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return order[np.repeat(starts[chosen], lengths) + offsets]


def bootstrap_ci(
    Y_true,
    Y_score,
    metric="roc_auc_macro",
    *,
    threshold=0.5,
    labels=None,
    zero_division=0.0,
    n_boot=1000,
    groups=None,
    confidence=0.95,
    random_state=None,
):
    """Percentile bootstrap confidence intervals of multilabel metrics.

    Parameters
    ----------
    Y_true, Y_score : array-like or DataFrame of shape (n_samples, n_labels)
        As in :func:`multilabel_report`.
    metric : str, list of str or callable, default="roc_auc_macro"
        Names from :data:`SUMMARY_METRICS` (``SUMMARY_METRICS`` itself for all
        of :func:`multilabel_report`'s summary), or ``f(y_true, y_score)``
        returning a float or a dict of floats (arrays with labels in
        ``Y_true`` order).
    threshold : float, array-like, Series or dict, default=0.5
        Decision threshold(s) for the metrics that need predictions.
    labels : sequence of str, optional
        Label names when ``Y_true`` is not a DataFrame.
    zero_division : float, default=0.0
        Passed to scikit-learn's precision, recall and F1.
    n_boot : int, default=1000
        Number of replicates.
    groups : array-like of shape (n_samples,), optional
        Patient ids. When given, each replicate draws patients with
        replacement and takes all their images, so images of one patient
        never count as independent evidence.
    confidence : float, default=0.95
        Level of the interval.
    random_state : int, RandomState instance or None, default=None
        Seed of the resampling.

    Returns
    -------
    pandas.DataFrame
        Indexed by metric: ``value`` (on all the data), ``ci_low``,
        ``ci_high`` and ``n_valid`` (replicates where the metric is defined).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> Y = rng.randint(0, 2, size=(60, 3))
    >>> scores = Y * 0.5 + rng.rand(60, 3) * 0.6
    >>> ci = bootstrap_ci(Y, scores, "roc_auc_macro", n_boot=50, random_state=0)
    >>> bool(ci.loc["roc_auc_macro", "ci_low"] <= ci.loc["roc_auc_macro", "ci_high"])
    True
    """
    y_true, labels = check_label_matrix(Y_true, labels)
    y_score = check_scores(Y_score, labels, len(y_true))
    groups = _check_bootstrap(n_boot, groups, confidence, len(y_true))
    compute = _metric_function(metric, _check_thresholds(threshold, labels), zero_division)

    value = compute(y_true, y_score)
    replicates = _bootstrap_replicates(compute, y_true, y_score, n_boot, groups, random_state)
    replicates = pd.DataFrame(replicates, columns=list(value), dtype=float)
    low, high = _percentile_interval(replicates.to_numpy(), confidence)
    return pd.DataFrame(
        {
            "value": pd.Series(value, dtype=float),
            "ci_low": pd.Series(low, index=replicates.columns),
            "ci_high": pd.Series(high, index=replicates.columns),
            "n_valid": replicates.notna().sum(),
        }
    ).rename_axis("metric")


def _check_bootstrap(n_boot, groups, confidence, n_samples, *, minimum=1):
    """Validate the bootstrap parameters; return ``groups`` as an array (or None)."""
    if not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    kind = "a positive" if minimum == 1 else "a non-negative"
    if (
        isinstance(n_boot, bool)
        or not isinstance(n_boot, (int, np.integer))
        or n_boot < minimum
    ):
        raise ValueError(f"n_boot must be {kind} int, got {n_boot!r}.")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups has shape {groups.shape}; expected ({n_samples},).")
    return groups


def _bootstrap_replicates(compute, y_true, y_score, n_boot, groups, random_state):
    """``compute(y_true, y_score)`` on ``n_boot`` resamples (of whole groups if given).

    Warnings of undefined metrics are silenced: a replicate may lack a class.
    """
    rng = check_random_state(random_state)
    replicates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(n_boot):
            rows = _bootstrap_indices(len(y_true), groups, rng)
            replicates.append(compute(y_true[rows], y_score[rows]))
    return replicates


def _percentile_interval(replicates, confidence):
    """Percentile interval per column of ``replicates`` (rows), ignoring NaN."""
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column that is all NaN
        return np.nanquantile(replicates, [alpha, 1 - alpha], axis=0)


def _metric_function(metric, thresholds, zero_division):
    """Wrap ``metric`` as ``f(y_true, y_score) -> dict``."""
    if callable(metric):
        name = getattr(metric, "__name__", "metric")

        def compute(y_true, y_score):
            result = metric(y_true, y_score)
            return dict(result) if isinstance(result, (dict, pd.Series)) else {name: result}

        return compute
    names = [metric] if isinstance(metric, str) else list(metric)
    unknown = [name for name in names if name not in SUMMARY_METRICS]
    if unknown or not names:
        raise ValueError(
            f"Unknown metric(s) {unknown}; use a callable or one of {list(SUMMARY_METRICS)}."
        )

    def compute(y_true, y_score):
        y_pred = (y_score >= thresholds).astype(np.uint8)
        return _summary(y_true, y_score, y_pred, zero_division, names)

    return compute


def multilabel_scorers(zero_division=0.0):
    """Scorers for ``GridSearchCV(scoring=...)`` and ``cross_validate(scoring=...)``.

    GridSearchCV's default score on multilabel targets is the exact match
    ratio, near 0 for 14 labels: pass these instead. All are "greater is
    better"; Hamming loss is negated (``neg_hamming_loss``), as scikit-learn
    does for its losses. The ranking scores use ``predict_proba`` (or
    ``decision_function``) of shape ``(n_samples, n_labels)``, or
    scikit-learn's list of ``(n_samples, 2)`` arrays, and average over the
    labels where they are defined, so a fold without Hernia still scores.

    Parameters
    ----------
    zero_division : float, default=0.0
        Passed to scikit-learn's precision, recall and F1.

    Returns
    -------
    dict of str to scorer
        ``exact_match``, ``neg_hamming_loss``, ``f1_macro``, ``f1_micro``,
        ``precision_macro``, ``recall_macro``, ``roc_auc_macro``,
        ``average_precision_macro``.

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(40, 3)
    >>> Y = (X[:, :2] > 0.5).astype(int)
    >>> scores = cross_validate(KNeighborsClassifier(3), X, Y, cv=2,
    ...                         scoring=multilabel_scorers())
    >>> sorted(k for k in scores if k.startswith("test_"))[:3]
    ['test_average_precision_macro', 'test_exact_match', 'test_f1_macro']
    """
    ranking = ("predict_proba", "decision_function")
    return {
        "exact_match": make_scorer(accuracy_score),
        "neg_hamming_loss": make_scorer(hamming_loss, greater_is_better=False),
        "f1_macro": make_scorer(f1_score, average="macro", zero_division=zero_division),
        "f1_micro": make_scorer(f1_score, average="micro", zero_division=zero_division),
        "precision_macro": make_scorer(
            precision_score, average="macro", zero_division=zero_division
        ),
        "recall_macro": make_scorer(recall_score, average="macro", zero_division=zero_division),
        "roc_auc_macro": make_scorer(_roc_auc_macro, response_method=ranking),
        "average_precision_macro": make_scorer(_average_precision_macro, response_method=ranking),
    }


#: Objectives of :func:`tune_thresholds` that take no level.
_OBJECTIVES = ("f1", "youden", "balanced_accuracy")

#: Constrained objectives: name -> (the constrained quantity, the one maximised).
_CONSTRAINTS = {
    "min_sensitivity": ("sensitivity", "specificity"),
    "min_specificity": ("specificity", "sensitivity"),
    "min_precision": ("precision", "recall"),
}

#: Objectives read from the ROC curve, which need both classes.
_ROC_OBJECTIVES = ("youden", "balanced_accuracy", "min_sensitivity", "min_specificity")

_OBJECTIVE_SPELLINGS = (
    "'f1', 'youden', 'balanced_accuracy', ('min_sensitivity', x), ('min_specificity', x), "
    "('min_precision', x) with x in (0, 1], or a callable f(y_true, y_pred) -> float"
)


def _check_objective(objective):
    """Validate a threshold objective; return it normalised.

    Returns the name (str), ``(name, float level)`` for a constrained
    objective (a list, as JSON gives back, becomes a tuple), or the callable.
    """
    if callable(objective):
        return objective
    if isinstance(objective, str):
        if objective in _OBJECTIVES:
            return objective
        if objective in _CONSTRAINTS:
            reason = f"{objective!r} needs a level, e.g. ({objective!r}, 0.9)"
        else:
            reason = f"unknown objective {objective!r}"
    elif (
        isinstance(objective, (tuple, list))
        and len(objective) == 2
        and isinstance(objective[0], str)
    ):
        name, level = objective
        if name in _CONSTRAINTS:
            if isinstance(level, numbers.Real) and not isinstance(level, bool) and 0 < level <= 1:
                return (name, float(level))
            reason = f"the level of {name!r} must be a number in (0, 1], got {level!r}"
        elif name in _OBJECTIVES:
            reason = f"{name!r} takes no level, got {objective!r}"
        else:
            reason = f"unknown objective {name!r}"
    else:
        reason = f"got {objective!r}"
    raise ValueError(f"Invalid objective: {reason}. Use {_OBJECTIVE_SPELLINGS}.")


def _objective_name(objective):
    """How messages name a normalised objective: 'f1', 'min_precision 0.99', a function's name."""
    if callable(objective):
        return getattr(objective, "__name__", repr(objective))
    if isinstance(objective, tuple):
        return f"{objective[0]} {objective[1]:g}"
    return objective


#: Objective values closer than this are equal: it absorbs floating-point rounding.
_TIE_TOLERANCE = 1e-12


def _last_argmax(*keys):
    """Index of the lexicographic maximum of ``keys`` (first key first); ties go last.

    Values within :data:`_TIE_TOLERANCE` of a maximum tie. The candidate
    thresholds are ascending, so a tie goes to the higher threshold.
    """
    keep = np.ones(len(keys[0]), dtype=bool)
    for key in keys:
        key = np.where(keep, key, -np.inf)
        keep &= key >= key.max() - _TIE_TOLERANCE
    return np.flatnonzero(keep)[-1]


def _rates(y_true, y_pred, zero_division):
    """Per-label sensitivity, specificity and precision; ``zero_division`` where undefined."""
    positive, predicted = y_true == 1, y_pred == 1
    true_positives = (positive & predicted).sum(axis=0)
    counts = {
        "sensitivity": (true_positives, positive.sum(axis=0)),
        "specificity": ((~positive & ~predicted).sum(axis=0), (~positive).sum(axis=0)),
        "precision": (true_positives, predicted.sum(axis=0)),
    }
    zero_division = 0.0 if isinstance(zero_division, str) else float(zero_division)  # "warn"
    return {
        name: np.divide(
            numerator, denominator, out=np.full(numerator.shape, zero_division),
            where=denominator > 0,
        )
        for name, (numerator, denominator) in counts.items()
    }


def _tune_thresholds_table(
    y_true, y_score, objective, labels, *, default=0.5, max_candidates=256
):
    """Tune one threshold per label; the engine of :func:`tune_thresholds`.

    Parameters
    ----------
    y_true, y_score : ndarray of shape (n_samples, n_labels)
        Checked 0/1 truth and float scores.
    objective : str, (str, float) or callable
        As in :func:`tune_thresholds`.
    labels : list of str
        Label names, one per column.
    default : float, default=0.5
        Threshold of a label where the objective is undefined.
    max_candidates : int or None, default=256
        The most thresholds a callable objective is evaluated at, per label.

    Returns
    -------
    pandas.DataFrame
        Indexed by label (index name ``"label"``): ``threshold``;
        ``objective_value``, the objective there (for a constrained objective,
        the quantity it maximises; NaN where ``default`` was kept);
        ``sensitivity``, ``specificity`` and ``precision`` at the threshold on
        this data (NaN where undefined); ``reached``, False where a constraint
        could not be met or ``default`` was kept.
    """
    objective = _check_objective(objective)
    if max_candidates is not None and (
        isinstance(max_candidates, bool)
        or not isinstance(max_candidates, (int, np.integer))
        or max_candidates < 1
    ):
        raise ValueError(f"max_candidates must be a positive int or None, got {max_candidates!r}.")
    name, level = objective if isinstance(objective, tuple) else (objective, None)
    n_labels = len(labels)
    thresholds = np.full(n_labels, float(default))
    values = np.full(n_labels, np.nan)
    reached = np.zeros(n_labels, dtype=bool)
    no_positive, no_negative = [], []
    for j, label in enumerate(labels):
        y, s = y_true[:, j], y_score[:, j]
        if not y.any():
            no_positive.append(label)
            continue
        if name in _ROC_OBJECTIVES and y.all():
            no_negative.append(label)
            continue
        reached[j] = True
        if callable(name):
            candidates = np.unique(s)
            if max_candidates is not None and len(candidates) > max_candidates:
                candidates = np.unique(
                    np.quantile(candidates, np.linspace(0, 1, max_candidates), method="nearest")
                )
            value = np.array(
                [name(y, (s >= t).astype(np.uint8)) for t in candidates], dtype=float
            )
            best = _last_argmax(np.where(np.isnan(value), -np.inf, value))
        else:
            if name in _ROC_OBJECTIVES:
                fpr, tpr, roc_thresholds = roc_curve(y, s, drop_intermediate=False)
                # Descending from +inf (nothing predicted): keep the scores, ascending.
                candidates, tpr, fpr = roc_thresholds[:0:-1], tpr[:0:-1], fpr[:0:-1]
                rates = {"sensitivity": tpr, "specificity": 1 - fpr}
            else:
                precision, recall, candidates = precision_recall_curve(y, s)
                # The last point (precision 1, recall 0) has no threshold.
                rates = {"precision": precision[:-1], "recall": recall[:-1]}
            if name == "f1":
                total = rates["precision"] + rates["recall"]
                value = np.divide(
                    2 * rates["precision"] * rates["recall"], total,
                    out=np.zeros_like(total), where=total > 0,
                )
                best = _last_argmax(value)
            elif name in ("youden", "balanced_accuracy"):
                youden = tpr - fpr
                # Balanced accuracy is (1 + J) / 2: choose on J so both pick one threshold.
                best = _last_argmax(youden)
                value = youden if name == "youden" else (1 + youden) / 2
            else:
                constrained, maximised = (rates[q] for q in _CONSTRAINTS[name])
                feasible = constrained >= level - _TIE_TOLERANCE
                if feasible.any():
                    best = _last_argmax(np.where(feasible, maximised, -np.inf))
                else:
                    # Closest to the constraint; among those, the best of the rest.
                    best = _last_argmax(constrained, maximised)
                    reached[j] = False
                    what, other = _CONSTRAINTS[name]
                    warnings.warn(
                        f"{_objective_name(objective)} cannot be reached for {label!r} on "
                        f"these scores: the highest {what} at any threshold is "
                        f"{constrained[best]:.3g} ({other} {maximised[best]:.3g}); "
                        "that threshold is used.",
                        UserWarning,
                        stacklevel=3,
                    )
                value = maximised
        thresholds[j], values[j] = candidates[best], value[best]
    if no_positive:
        warnings.warn(
            f"No positive in Y_true for {no_positive}; their threshold is {default}.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    if no_negative:
        warnings.warn(
            f"No negative in Y_true for {no_negative}, so {_objective_name(objective)} is "
            f"undefined; their threshold is {default}.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    y_pred = y_score >= thresholds
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "objective_value": values,
            **_rates(y_true, y_pred, np.nan),
            "reached": reached,
        },
        index=pd.Index(labels, name="label"),
    )


def tune_thresholds(
    Y_true,
    Y_score,
    *,
    objective="f1",
    labels=None,
    default=0.5,
    max_candidates=256,
    metric="deprecated",
):
    """Per-label decision thresholds that optimise an objective on validation data.

    A 0.5 threshold almost never predicts a rare label (Hernia is 0.2% of
    ChestX-ray14); tune on a validation set, then pass the result as
    ``threshold=`` to :func:`multilabel_report` or :func:`apply_thresholds`.
    The candidates are the label's distinct scores, so the validation
    predictions ``score >= threshold`` are the best any threshold gives.
    Where several candidates are equally good (within 1e-12, which absorbs
    rounding), the highest is chosen: fewer positive predictions for the same
    objective.

    Parameters
    ----------
    Y_true, Y_score : array-like or DataFrame of shape (n_samples, n_labels)
        Validation truth and scores.
    objective : str, (str, float) or callable, default="f1"
        What the threshold optimises, per label:

        - ``"f1"``: F1, for all candidates at once from
          :func:`sklearn.metrics.precision_recall_curve`.
        - ``"youden"``: Youden's J, sensitivity + specificity - 1, from
          :func:`sklearn.metrics.roc_curve` (all thresholds kept).
        - ``"balanced_accuracy"``: (sensitivity + specificity) / 2. It is
          (1 + J) / 2, so it picks Youden's threshold.
        - ``("min_sensitivity", x)``: the best specificity among the
          thresholds with sensitivity >= x (a screening rule: miss at most
          ``1 - x`` of the findings).
        - ``("min_specificity", x)``: the best sensitivity with
          specificity >= x.
        - ``("min_precision", x)``: the best recall with precision >= x
          (from the precision-recall curve).
        - a callable ``f(y_true, y_pred) -> float`` (higher is better),
          evaluated at every distinct score, or at ``max_candidates``
          quantiles of them.

        ``x`` is in (0, 1]; a list ``["min_sensitivity", 0.9]`` (as JSON
        gives back) is accepted too. Where no threshold meets a constraint,
        a warning names the label and what was reached, and the threshold
        closest to the constraint is used.
    labels : sequence of str, optional
        Label names when ``Y_true`` is not a DataFrame.
    default : float, default=0.5
        Threshold of a label where the objective is undefined (with a
        warning): without any positive in ``Y_true``, or without any negative
        for the objectives that involve specificity.
    max_candidates : int or None, default=256
        With a callable ``objective``, the most thresholds tried per label
        (evenly spaced quantiles of the distinct scores); ``None`` tries them
        all. Each try is one call of ``objective``.
    metric : "f1" or callable
        Deprecated alias of ``objective``.

        .. deprecated:: 0.2
           ``metric`` was renamed ``objective`` and will be removed in 0.4.

    Returns
    -------
    pandas.Series
        Threshold per label, indexed by label name, named ``"threshold"``.

    Examples
    --------
    >>> Y = [[1], [1], [0], [0]]
    >>> scores = [[0.30], [0.20], [0.10], [0.05]]
    >>> tune_thresholds(Y, scores, labels=["Hernia"]).tolist()
    [0.2]

    Youden's J is 2/3 at both 0.3 and 0.6 here; the higher threshold wins.
    Sensitivity 1 needs a threshold at most 0.3, the lowest positive score:

    >>> Y = [[1], [1], [1], [0], [0], [0]]
    >>> scores = [[0.9], [0.6], [0.3], [0.5], [0.2], [0.1]]
    >>> tune_thresholds(Y, scores, objective="youden").tolist()
    [0.6]
    >>> tune_thresholds(Y, scores, objective=("min_sensitivity", 1.0)).tolist()
    [0.3]
    """
    if not isinstance(metric, str) or metric != "deprecated":
        if not isinstance(objective, str) or objective != "f1":
            raise ValueError(
                "Pass objective= only: metric= is its deprecated alias, "
                f"got metric={metric!r} and objective={objective!r}."
            )
        warnings.warn(
            "`metric` was renamed `objective` in version 0.2 and will be removed in 0.4. "
            "Use `objective` instead.",
            FutureWarning,
            stacklevel=2,
        )
        objective = metric
    objective = _check_objective(objective)
    y_true, labels = check_label_matrix(Y_true, labels)
    y_score = check_scores(Y_score, labels, len(y_true))
    table = _tune_thresholds_table(
        y_true, y_score, objective, labels, default=default, max_candidates=max_candidates
    )
    return table["threshold"]


def apply_thresholds(Y_score, thresholds, *, labels=None):
    """Turn scores into 0/1 predictions with per-label thresholds.

    Parameters
    ----------
    Y_score : array-like or DataFrame of shape (n_samples, n_labels)
        Scores; a DataFrame's columns name the labels.
    thresholds : float, array-like, Series or dict
        Positive when ``score >= threshold``; a Series or dict is matched by name.
    labels : sequence of str, optional
        Label names when ``Y_score`` is not a DataFrame (needed to match a
        Series or dict).

    Returns
    -------
    ndarray or DataFrame of uint8
        A DataFrame (same index and columns) when ``Y_score`` is one.

    Examples
    --------
    >>> apply_thresholds([[0.3, 0.6], [0.1, 0.4]], [0.2, 0.5])
    array([[1, 1],
           [0, 0]], dtype=uint8)
    """
    if isinstance(Y_score, pd.DataFrame):
        labels = [str(c) for c in Y_score.columns]
    scores = check_array(Y_score, dtype=np.float64, input_name="Y_score")
    if labels is None:
        labels = [f"label_{j}" for j in range(scores.shape[1])]
    if len(labels) != scores.shape[1]:
        raise ValueError(
            f"Y_score has {scores.shape[1]} columns but {len(labels)} labels were given."
        )
    predictions = (scores >= _check_thresholds(thresholds, list(labels))).astype(np.uint8)
    if isinstance(Y_score, pd.DataFrame):
        return pd.DataFrame(predictions, index=Y_score.index, columns=Y_score.columns)
    return predictions
