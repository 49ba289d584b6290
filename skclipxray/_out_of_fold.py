"""Out-of-fold probabilities of a multilabel classifier, for the meta-estimators.

:class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV` and
:class:`~skclipxray.thresholds.MultilabelTunedThresholdClassifierCV` learn
something per label (a calibration map, a threshold) from probabilities that
the classifier gave for images it was not trained on. This module makes
those: it reads ``y`` (multilabel, or a binary y as one label), splits by
patient when groups are given, fits a clone per fold and collects
``predict_proba``. It also says, per fold, which labels had no positive (or
no negative) to learn from, so that the meta-estimators can leave those
scores out.

scikit-learn's :func:`~sklearn.model_selection.cross_val_predict` would give
the estimator a NumPy ``y`` and so lose a DataFrame's label names, which the
text-using heads need to build their prompts: the folds are fitted here,
with ``y`` sliced as it came.
"""

import warnings
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.model_selection import GroupKFold, check_cv
from sklearn.utils import _safe_indexing, get_tags, indexable
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _check_method_params, check_is_fitted

from ._validation import check_multilabel_indicator

__all__ = [
    "OutOfFold", "OutOfFoldClassifier", "check_target", "positive_logits",
    "positive_probabilities",
]

#: Probabilities closer than this to 0 or 1 are taken as this close: about
#: float32's resolution, beyond which the probabilities of heads computed in
#: float32 carry no information.
PROBABILITY_EPS = 1e-7


def check_target(y, what):
    """Read ``y`` as multilabel or binary; return the 0/1 matrix and what it means.

    Parameters
    ----------
    y : array-like or DataFrame
        A 2-D 0/1 ``y`` of more than one column, or a DataFrame of any number
        of columns, is multilabel (a DataFrame's columns name the labels); a
        1-D ``y`` of two classes is binary, one label: its second class.
    what : str
        The meta-estimator's name, for the messages.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_labels), uint8
    task : {"multilabel", "binary"}
    labels : ndarray
        The labels (the column names, or their positions), or for a binary
        y its two classes.
    """
    if y is None:
        raise ValueError(f"{what} requires y to be passed, but the target y is None.")
    if isinstance(y, pd.DataFrame):
        names = [str(c) for c in y.columns]
    else:
        names = None
    values = np.asarray(y)
    # A DataFrame names its labels, so even one column is a label; a 2-D array
    # of one column is a 1-D y, as scikit-learn reads it.
    if values.ndim == 2 and (values.shape[1] > 1 or names is not None):
        check_multilabel_indicator(values, names)
        labels = np.asarray(names, dtype=object) if names else np.arange(values.shape[1])
        return values.astype(np.uint8), "multilabel", labels
    values = values.reshape(-1) if values.ndim == 2 else values
    if values.ndim != 1:
        raise ValueError(f"y must be 1-D or 2-D, got shape {np.shape(y)}.")
    check_classification_targets(values)
    classes, encoded = np.unique(values, return_inverse=True)
    if len(classes) != 2:
        raise ValueError(
            f"Only binary classification is supported by {what}, or multilabel y (one "
            f"0/1 column per label); got a 1-D y with {len(classes)} class(es) "
            f"{classes[:5].tolist()}. For a multiclass y, use scikit-learn's "
            "CalibratedClassifierCV; a threshold has no meaning there."
        )
    return encoded.astype(np.uint8).reshape(-1, 1), "binary", classes


def positive_probabilities(estimator, X, n_labels, *, name="estimator"):
    """``predict_proba`` as one positive probability per label, ``(n, n_labels)`` float64.

    Takes the shapes scikit-learn's classifiers give: ``(n, n_labels)``
    (skclipxray's heads, ``MLPClassifier``), a list of ``(n, 2)`` arrays, one
    per label (``KNeighborsClassifier``, ``MultiOutputClassifier``), or
    ``(n, 2)`` for a binary y.
    """
    proba = estimator.predict_proba(X)
    if isinstance(proba, list):
        proba = np.stack([np.asarray(p)[:, -1] for p in proba], axis=1)
    proba = np.asarray(proba, dtype=np.float64)
    if n_labels == 1 and proba.ndim == 2 and proba.shape[1] == 2:
        proba = proba[:, 1:]
    return _checked(proba, n_labels, f"The {name}'s predict_proba", "probability")


def _checked(values, n_labels, source, what):
    """``values`` if they are finite and ``(n, n_labels)``; else a ValueError naming ``source``."""
    if values.ndim != 2 or values.shape[1] != n_labels:
        raise ValueError(
            f"{source} gives shape {values.shape}; expected ({len(values)}, {n_labels}), "
            f"one {what} per label of y."
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{source} gives NaN or infinite values.")
    return values


def positive_logits(estimator, X, n_labels, *, name="estimator"):
    """One logit per label, ``(n, n_labels)`` float64: what calibration maps act on.

    The estimator's ``decision_function`` where it has one (its logits, or
    margins), so that no two images it tells apart are tied; else the logits
    of its probabilities, taken within :data:`PROBABILITY_EPS` of 0 and 1.
    """
    if not hasattr(estimator, "decision_function"):
        from scipy.special import logit

        proba = positive_probabilities(estimator, X, n_labels, name=name)
        return logit(np.clip(proba, PROBABILITY_EPS, 1 - PROBABILITY_EPS))
    scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
    if scores.ndim == 1 and n_labels == 1:
        scores = scores[:, None]
    return _checked(scores, n_labels, f"The {name}'s decision_function", "logit")


class OutOfFold:
    """What the folds give: a score per image and label, and where to trust it.

    Attributes
    ----------
    scores : ndarray of shape (n_samples, n_labels), float64
        Each image's scores (probabilities or logits) from the clone that did
        not see it.
    usable : ndarray of shape (n_samples, n_labels), bool
        False where the image's fold was trained without a positive or
        without a negative of the label: such a clone cannot have learnt it.
    blind_folds : dict of int to list of int
        Label position -> the (0-based) folds that were.
    n_folds : int
    """

    def __init__(self, scores, usable, blind_folds, n_folds):
        self.scores = scores
        self.usable = usable
        self.blind_folds = blind_folds
        self.n_folds = n_folds

    def blind_fold_message(self, label_names):
        """One sentence per label with blind folds, or None when there are none."""
        if not self.blind_folds:
            return None
        parts = [
            f"{label_names[k]!r} in fold(s) {', '.join(str(f + 1) for f in folds)} "
            f"of {self.n_folds}"
            for k, folds in self.blind_folds.items()
        ]
        return (
            "Some training folds have no positive or no negative of a label: "
            + "; ".join(parts)
            + ". Their out-of-fold scores of that label are left out of its fit; a "
            "label left without both classes keeps the classifier's own "
            "probabilities or a threshold of 0.5."
        )


def check_folds(cv, y, groups):
    """The splitter: ``GroupKFold`` for an int ``cv`` with groups, else scikit-learn's.

    Groups given with a splitter that does not use them (its ``split`` would
    let a patient's images fall on both sides) are warned about.
    """
    if groups is not None and isinstance(cv, Integral) and not isinstance(cv, bool):
        return GroupKFold(n_splits=cv)
    # A multilabel y gets KFold: scikit-learn stratifies binary and multiclass y only.
    splitter = check_cv(cv, y, classifier=True)
    if groups is not None and "Group" not in type(splitter).__name__:
        warnings.warn(
            f"groups were given, but cv={splitter!r} does not split by group: a "
            "patient's images may fall on both sides of a fold. Pass an int cv "
            "(GroupKFold) or a group splitter.",
            UserWarning,
            stacklevel=4,
        )
    return splitter


def _fit_and_predict(estimator, X, y, train, test, fit_params, n_labels, response):
    fitted = clone(estimator).fit(
        _safe_indexing(X, train), _safe_indexing(y, train),
        **_check_method_params(X, fit_params, train),
    )
    return response(fitted, _safe_indexing(X, test), n_labels)


def out_of_fold_scores(estimator, X, y, Y, *, cv, groups, fit_params, n_jobs, response):
    """Fit a clone of ``estimator`` per fold; return an :class:`OutOfFold` of its scores.

    ``y`` is given to the clones as it came (a DataFrame keeps its label
    names); ``Y`` is its 0/1 matrix from :func:`check_target`. ``response``
    is :func:`positive_probabilities` or :func:`positive_logits`.
    """
    X, y, groups = indexable(X, y, groups)
    splitter = check_folds(cv, Y if Y.shape[1] > 1 else Y[:, 0], groups)
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and groups.shape != (len(Y),):
        raise ValueError(f"groups has shape {groups.shape}; expected ({len(Y)},).")
    folds = list(splitter.split(X, Y if Y.shape[1] > 1 else Y[:, 0], groups))
    n_labels = Y.shape[1]
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_predict)(estimator, X, y, train, test, fit_params, n_labels, response)
        for train, test in folds
    )
    scores = np.full(Y.shape, np.nan)
    usable = np.zeros(Y.shape, dtype=bool)
    blind_folds = {}
    for f, ((train, test), fold_scores) in enumerate(zip(folds, results)):
        scores[test] = fold_scores
        learnable = Y[train].any(axis=0) & ~Y[train].all(axis=0)
        usable[test] = learnable
        for k in np.flatnonzero(~learnable):
            blind_folds.setdefault(int(k), []).append(f)
    missing = np.isnan(scores).any(axis=1)
    if missing.any():
        raise ValueError(
            f"The cross-validation leaves {int(missing.sum())} image(s) out of every "
            "test fold (the first at row "
            f"{int(np.flatnonzero(missing)[0])}): out-of-fold probabilities need a "
            "partition, e.g. KFold or GroupKFold."
        )
    return OutOfFold(scores, usable, blind_folds, len(folds))


def prefit_scores(estimator, X, Y, response):
    """An already fitted ``estimator``'s scores on validation data, all usable."""
    check_is_fitted(estimator)
    return OutOfFold(response(estimator, X, Y.shape[1]), np.ones(Y.shape, dtype=bool), {}, 1)


def _check_prefit_labels(estimator, labels):
    """Refuse validation labels in another order than those the estimator was fitted on."""
    fitted = getattr(estimator, "labels_", None)
    if fitted is None or len(fitted) != len(labels):
        return
    if [str(label) for label in fitted] != [str(label) for label in labels]:
        raise ValueError(
            f"y's columns {[str(label) for label in labels]} are not in the order of "
            f"the labels the estimator was fitted on {[str(label) for label in fitted]}: "
            "each label would be tuned on another's probabilities. Reorder y's "
            "columns, e.g. y[list(estimator.labels_)]."
        )


class OutOfFoldClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Base of the meta-estimators: ``fit`` learns per label from out-of-fold probabilities.

    A subclass has the parameters ``estimator``, ``cv`` and ``n_jobs``, sets
    ``_response`` (:func:`positive_probabilities` or :func:`positive_logits`:
    what it learns from), and implements ``_fit_labels(Y, out_of_fold,
    settings)``, which learns from the usable scores of each label, and
    ``_check_settings()``, which checks what the declared constraints cannot
    and returns it for ``_fit_labels``. :meth:`fit` reads ``y``, makes the
    out-of-fold scores (or, with ``cv="prefit"``, the fitted estimator's on
    the data given), refits the estimator on all the data, and calls it.
    """

    def _check_settings(self):
        return None

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, groups=None, **fit_params):
        """Fit the folds, learn each label's map or threshold, refit ``estimator`` on all data.

        Parameters
        ----------
        X : array-like or list of images
            What ``estimator`` takes.
        y : array-like or DataFrame of shape (n_samples, n_labels), or (n_samples,)
            0/1 labels (a DataFrame's columns name them), or a binary target.
        groups : array-like of shape (n_samples,), optional
            Patient ids: an int ``cv`` then keeps each patient's images in
            one fold.
        **fit_params
            Passed to ``estimator.fit`` (per-sample ones sliced per fold).

        Returns
        -------
        self
        """
        # Checked before any fold is fitted: a typo should not cost a cross-validation.
        settings = self._check_settings()
        return self._fit(X, y, groups, fit_params, settings)

    def _fit(self, X, y, groups, fit_params, settings):
        Y, self.task_, labels = check_target(y, type(self).__name__)
        if self.task_ == "multilabel":
            self.labels_ = labels
            self.classes_ = [np.array([0, 1])] * Y.shape[1]
            self._y_dtype = np.asarray(y).dtype
        else:
            self.labels_ = self.classes_ = labels
        if self.cv == "prefit":
            if groups is not None:
                raise ValueError(
                    'groups are not used with cv="prefit": the estimator is already '
                    "fitted and the data given are the validation set."
                )
            self.estimator_ = self.estimator
            if self.task_ == "multilabel":
                _check_prefit_labels(self.estimator_, self.labels_)
            out_of_fold = prefit_scores(self.estimator_, X, Y, self._response)
        else:
            out_of_fold = out_of_fold_scores(
                self.estimator, X, y, Y, cv=self.cv, groups=groups, fit_params=fit_params,
                n_jobs=self.n_jobs, response=self._response,
            )
            self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        # Names, not positions, in the messages: a binary y has its positive class.
        self._label_names = (
            [str(label) for label in self.labels_] if self.task_ == "multilabel"
            else [str(self.classes_[1])]
        )
        message = out_of_fold.blind_fold_message(self._label_names)
        if message:
            warnings.warn(message, UserWarning, stacklevel=3)
        if hasattr(self.estimator_, "n_features_in_"):
            self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
        self._fit_labels(Y, out_of_fold, settings)
        return self

    def _positive_probabilities(self, X):
        check_is_fitted(self)
        return positive_probabilities(self.estimator_, X, len(self._label_names))

    def _positive_logits(self, X):
        check_is_fitted(self)
        return positive_logits(self.estimator_, X, len(self._label_names))

    def _as_output(self, positive):
        """``(n, n_labels)`` positive probabilities as ``predict_proba`` gives them."""
        if self.task_ == "binary":
            return np.hstack([1 - positive, positive])
        return positive

    def _as_labels(self, decided):
        """A boolean ``(n, n_labels)`` decision as ``predict`` gives it."""
        if self.task_ == "binary":
            return self.classes_[decided[:, 0].astype(int)]
        return decided.astype(self._y_dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.classifier_tags.multi_label = inner.classifier_tags.multi_label
        # Per label: a multiclass y has neither a calibration map nor a threshold.
        tags.classifier_tags.multi_class = False
        tags.input_tags = inner.input_tags
        return tags
