"""Per-label decision thresholds, tuned on out-of-fold predictions, carried by an estimator.

scikit-learn's :class:`~sklearn.model_selection.TunedThresholdClassifierCV`
tunes the threshold of a binary classifier:
:class:`MultilabelTunedThresholdClassifierCV` tunes one per label of a
multilabel classifier, to an objective a clinician can read ("a sensitivity
of at least 0.9"), and keeps them through a Pipeline, GridSearchCV and a
saved file.
"""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import HasMethods, StrOptions

from ._out_of_fold import OutOfFoldClassifier, positive_probabilities
from .metrics import _check_objective, _tune_thresholds_table

__all__ = ["MultilabelTunedThresholdClassifierCV"]


class MultilabelTunedThresholdClassifierCV(OutOfFoldClassifier):
    """Tune one decision threshold per label on out-of-fold probabilities.

    A probability threshold of 0.5 rarely is the operating point a reader
    wants: a rare finding is then almost never flagged, and thresholds do
    not transfer between data sets. ``fit`` fits a clone of ``estimator`` on
    each cross-validation fold (patient-grouped with ``groups``), collects
    its probabilities for the images left out, and picks each label's
    threshold on those, for ``objective``; then it refits ``estimator`` on
    all the data. ``predict`` says yes where a label's probability reaches
    its threshold.

    The threshold is chosen among the distinct out-of-fold probabilities of
    the label (see :func:`~skclipxray.metrics.tune_thresholds`, which does
    the same on given scores). Where a constraint such as a minimum
    sensitivity cannot be met for a label, a warning names it and says what
    was achieved. Out-of-fold probabilities from a fold whose training part
    had no positive (or no negative) of a label are left out of its tuning,
    with a warning naming the label and the folds; a label left without a
    positive keeps a threshold of 0.5.

    Parameters
    ----------
    estimator : classifier
        A classifier with ``predict_proba``, for a multilabel (or binary)
        ``y``: any skclipxray head, a Pipeline ending in one, a
        :class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV`.
        With ``cv="prefit"`` and a DataFrame ``y``, its columns must be in
        the order of the estimator's ``labels_``.
    objective : str, tuple or callable, default="f1"
        What each label's threshold maximises on the out-of-fold data:

        - ``"f1"``; ``"youden"`` (sensitivity + specificity - 1);
          ``"balanced_accuracy"`` (which picks Youden's threshold);
        - ``("min_sensitivity", x)``: the best specificity with a sensitivity
          of at least ``x``; ``("min_specificity", x)``: the best sensitivity
          with a specificity of at least ``x``; ``("min_precision", x)``: the
          best sensitivity with a precision of at least ``x``;
        - a callable ``f(y_true, y_pred) -> float`` on one label's 0/1
          truth and predictions (higher is better), e.g.
          ``functools.partial(sklearn.metrics.fbeta_score, beta=2)``. A
          callable is saved with the estimator, as its parameter: loading
          the file with :func:`skclipxray.persistence.load` then needs it in
          ``trusted=``, since building it could run code.
    cv : int, cross-validation generator, iterable or "prefit", default=5
        The folds. An int is :class:`~sklearn.model_selection.KFold`, or
        :class:`~sklearn.model_selection.GroupKFold` when ``groups`` are
        given. ``"prefit"``: ``estimator`` is already fitted, and ``fit(X,
        y)`` tunes its thresholds on this validation data, without
        refitting it.
    n_jobs : int, default=None
        Folds fitted in parallel (joblib).

    Attributes
    ----------
    estimator_ : classifier
        ``estimator`` refitted on all the data (``estimator`` itself with
        ``cv="prefit"``).
    best_thresholds_ : ndarray of shape (n_labels,)
        The probability from which each label is predicted.
    best_scores_ : ndarray of shape (n_labels,)
        The objective at that threshold, on the out-of-fold data: the F1,
        Youden's J, the balanced accuracy, the optimised quantity of a
        constraint (specificity for ``"min_sensitivity"``, sensitivity
        otherwise) or the callable's value.
    tuning_results_ : dict of str to ndarray
        Per label, on the out-of-fold data at the chosen threshold:
        ``"threshold"``, ``"objective_value"``, ``"sensitivity"``,
        ``"specificity"``, ``"precision"`` and ``"reached"`` (False where a
        constraint could not be met or the label kept 0.5).
        ``pandas.DataFrame(tuning_results_, index=labels_)`` shows it.
    labels_, classes_, task_
        As for :class:`~skclipxray.calibration.MultilabelCalibratedClassifierCV`.
    n_features_in_ : int
        From ``estimator_``, when it has it.

    See Also
    --------
    skclipxray.metrics.tune_thresholds : The same choice on given scores.
    skclipxray.metrics.multilabel_report : Sensitivity and specificity at the
        thresholds, with patient-bootstrap intervals.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray import TextAnchoredClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(400, 4))
    >>> Y = (X[:, :2] + rng.normal(size=(400, 2)) > 0).astype(int)
    >>> tuned = MultilabelTunedThresholdClassifierCV(
    ...     TextAnchoredClassifier(device="cpu"),
    ...     objective=("min_sensitivity", 0.9), cv=3,
    ... ).fit(X, Y)
    >>> bool((tuned.tuning_results_["sensitivity"] >= 0.9).all())
    True
    >>> tuned.predict(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        # A name, a (constraint, value) pair or a callable: _check_objective says which.
        "objective": "no_validation",
        "cv": ["cv_object", StrOptions({"prefit"})],
        "n_jobs": [Integral, None],
    }

    # Thresholds are probabilities: they are tuned on probabilities.
    _response = staticmethod(positive_probabilities)

    def __init__(self, estimator, *, objective="f1", cv=5, n_jobs=None):
        self.estimator = estimator
        self.objective = objective
        self.cv = cv
        self.n_jobs = n_jobs

    def _check_settings(self):
        return _check_objective(self.objective)

    def _fit_labels(self, Y, out_of_fold, objective):
        tables = []
        for k, name in enumerate(self._label_names):
            rows = out_of_fold.usable[:, k]
            tables.append(
                _tune_thresholds_table(
                    Y[rows, k : k + 1], out_of_fold.scores[rows, k : k + 1],
                    objective, [name],
                )
            )
        self.tuning_results_ = {
            column: np.concatenate([table[column].to_numpy() for table in tables])
            for column in tables[0].columns
        }
        self.best_thresholds_ = self.tuning_results_["threshold"].astype(np.float64)
        self.best_scores_ = self.tuning_results_["objective_value"].astype(np.float64)

    def predict_proba(self, X):
        """The estimator's probabilities (thresholds do not change them).

        Parameters
        ----------
        X : array-like or list of images

        Returns
        -------
        ndarray of shape (n_samples, n_labels), or (n_samples, 2) for a binary y
        """
        return self._as_output(self._positive_probabilities(X))

    def predict(self, X):
        """0/1 labels where each label's probability reaches its threshold.

        Parameters
        ----------
        X : array-like or list of images

        Returns
        -------
        ndarray of shape (n_samples, n_labels), or (n_samples,) for a binary y
        """
        return self._as_labels(self._positive_probabilities(X) >= self.best_thresholds_)
