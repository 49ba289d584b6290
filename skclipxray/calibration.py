"""Per-label calibration of a multilabel classifier's probabilities.

scikit-learn's :class:`~sklearn.calibration.CalibratedClassifierCV` takes
binary and multiclass targets: :class:`MultilabelCalibratedClassifierCV`
calibrates each label of a multilabel classifier, on probabilities the
classifier gave for images it was not trained on, with the folds split by
patient when groups are given.
"""

import warnings
from numbers import Integral

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.isotonic import IsotonicRegression
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import HasMethods, StrOptions

from ._out_of_fold import OutOfFoldClassifier, positive_logits

__all__ = ["MultilabelCalibratedClassifierCV"]

#: Bounds of the scale of temperature scaling: a finite logit stays finite.
_SCALE_BOUNDS = (1e-6, 1e6)


def _platt_targets(y):
    """Platt's (1999) targets: a separable label gets a finite scale, not an infinite one."""
    n_positive = y.sum()
    n_negative = len(y) - n_positive
    return np.where(y == 1, (n_positive + 1) / (n_positive + 2), 1 / (n_negative + 2))


def fit_sigmoid(z, y, *, intercept):
    """``(a, b)`` minimising the log loss of ``sigmoid(a z + b)`` against Platt's targets.

    Without ``intercept``, ``b = 0`` and ``a > 0`` (temperature scaling,
    which keeps the ranking); with it, Platt scaling (``a`` of either sign).
    """
    targets = _platt_targets(y)

    def loss(params):
        scale = np.exp(params[0]) if not intercept else params[0]
        x = scale * z + (params[1] if intercept else 0.0)
        value = -np.mean(targets * log_expit(x) + (1 - targets) * log_expit(-x))
        residual = expit(x) - targets
        d_scale = np.mean(residual * z)
        if not intercept:
            return value, np.array([d_scale * scale])
        return value, np.array([d_scale, np.mean(residual)])

    if intercept:
        result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        return float(result.x[0]), float(result.x[1])
    bounds = [tuple(np.log(_SCALE_BOUNDS))]
    result = minimize(loss, np.array([0.0]), jac=True, method="L-BFGS-B", bounds=bounds)
    return float(np.exp(result.x[0])), 0.0


class MultilabelCalibratedClassifierCV(OutOfFoldClassifier):
    """Calibrate each label's probability on out-of-fold predictions.

    A probability of 0.8 should mean that 8 in 10 such images have the
    finding. Heads trained on few images, and zero-shot SigLIP scores, are
    often far from it. ``fit`` fits a clone of ``estimator`` on each
    cross-validation fold and collects its probabilities for the images left
    out: with ``groups`` (patient ids) and an int ``cv``, the folds are
    :class:`~sklearn.model_selection.GroupKFold`'s, so no patient's images
    are on both sides. A map from those probabilities to calibrated ones is
    then fitted per label, and ``estimator`` refitted on all the data (as
    scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` does).

    The maps work on a logit ``z`` per label: the estimator's
    ``decision_function`` where it has one (every skclipxray head does: its
    logits), else the logit of its probability, taken within
    ``1e-7`` of 0 and 1 (about float32's resolution, beyond which a
    probability carries no information):

    - ``"temperature"``: ``sigmoid(z / T)``, one temperature ``T > 0`` per
      label. It changes how sure the probabilities are, not their order:
      every label's ROC AUC and average precision stay as they were (up to
      float64 saturation: probabilities within about ``1e-16`` of 0 or 1
      tie; :meth:`decision_function` gives the calibrated logits, which
      never do).
    - ``"sigmoid"``: Platt scaling, ``sigmoid(a z + b)``: also moves the
      probabilities up or down (a model that says "too low", as zero-shot
      SigLIP does), so it also keeps the order, unless ``a < 0``. It is the
      map for a CLIP checkpoint's zero-shot scores, which have no bias.
    - ``"isotonic"``: :class:`~sklearn.isotonic.IsotonicRegression`, any
      increasing map. It needs more data (hundreds of positives), and its
      steps tie images, which can change ROC AUC.

    Temperature and Platt scaling minimise the log loss against Platt's
    targets ``(n⁺ + 1) / (n⁺ + 2)`` and ``1 / (n⁻ + 2)``, as scikit-learn's
    sigmoid calibration does, so that a label the estimator separates
    perfectly gets a finite scale.

    A label's out-of-fold probabilities from a fold whose training part had
    no positive (or no negative) of it are left out of its map, with a
    warning naming the label and the folds: that clone could not have
    learnt it. A label left without both classes keeps the estimator's own
    probabilities, with a warning.

    Parameters
    ----------
    estimator : classifier
        A classifier with ``predict_proba``, for a multilabel ``y`` (or a
        binary one): any skclipxray head, a Pipeline ending in one, or a
        multilabel scikit-learn classifier. With ``cv="prefit"`` and a
        DataFrame ``y``, its columns must be in the order of the estimator's
        ``labels_``.
    method : {"temperature", "sigmoid", "isotonic"}, default="temperature"
        The map, see above.
    cv : int, cross-validation generator, iterable or "prefit", default=5
        The folds. An int is :class:`~sklearn.model_selection.KFold`, or
        :class:`~sklearn.model_selection.GroupKFold` when ``groups`` are
        given. ``"prefit"``: ``estimator`` is already fitted, and ``fit(X,
        y)`` calibrates it on this validation data, without refitting it.
    n_jobs : int, default=None
        Folds fitted in parallel (joblib).

    Attributes
    ----------
    estimator_ : classifier
        ``estimator`` refitted on all the data (``estimator`` itself with
        ``cv="prefit"``).
    labels_ : ndarray
        The labels: ``y``'s column names, or their positions; for a binary
        ``y``, its classes.
    classes_ : list of ndarray or ndarray
        ``[array([0, 1])] * n_labels`` for a multilabel ``y``, as for
        scikit-learn's multilabel classifiers; the two classes of a binary ``y``.
    task_ : {"multilabel", "binary"}
    coef_, intercept_ : ndarray of shape (n_labels,)
        With ``"temperature"`` and ``"sigmoid"``: the calibrated logit is
        ``coef_ * z + intercept_``; ``coef_`` is ``1 / T`` for temperature
        scaling, whose intercept is 0. A label kept as it was has 1 and 0.
    isotonic_regressions_ : list of IsotonicRegression or None
        With ``"isotonic"``: the map of each label; ``None`` for a label
        kept as it was.
    uncalibrated_labels_ : list of str
        The labels that kept the estimator's probabilities.
    n_features_in_ : int
        From ``estimator_``, when it has it.

    See Also
    --------
    MultilabelTunedThresholdClassifierCV : Per-label decision thresholds, e.g.
        at a sensitivity of 0.9.
    skclipxray.metrics.multilabel_report : Brier score and expected calibration
        error per label.

    Examples
    --------
    >>> import numpy as np
    >>> from skclipxray import TextAnchoredClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(300, 4))
    >>> Y = (X[:, :2] + rng.normal(size=(300, 2)) > 0).astype(int)
    >>> calibrated = MultilabelCalibratedClassifierCV(
    ...     TextAnchoredClassifier(device="cpu"), cv=3
    ... ).fit(X, Y)
    >>> calibrated.predict_proba(X[:2]).shape
    (2, 2)
    >>> bool((calibrated.coef_ > 0).all())
    True
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "method": [StrOptions({"temperature", "sigmoid", "isotonic"})],
        "cv": ["cv_object", StrOptions({"prefit"})],
        "n_jobs": [Integral, None],
    }

    # What the maps are fitted on: one logit per label.
    _response = staticmethod(positive_logits)

    def __init__(self, estimator, *, method="temperature", cv=5, n_jobs=None):
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.n_jobs = n_jobs

    def _fit_labels(self, Y, out_of_fold, settings):
        n_labels = Y.shape[1]
        self.uncalibrated_labels_ = []
        if self.method == "isotonic":
            self.isotonic_regressions_ = []
        else:
            self.coef_, self.intercept_ = np.ones(n_labels), np.zeros(n_labels)
        for k, name in enumerate(self._label_names):
            rows = out_of_fold.usable[:, k]
            y, z = Y[rows, k], out_of_fold.scores[rows, k]
            if y.min(initial=1) == y.max(initial=0):
                self.uncalibrated_labels_.append(name)
                if self.method == "isotonic":
                    self.isotonic_regressions_.append(None)
                continue
            if self.method == "isotonic":
                self.isotonic_regressions_.append(
                    IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, y)
                )
            else:
                self.coef_[k], self.intercept_[k] = fit_sigmoid(
                    z, y, intercept=self.method == "sigmoid"
                )
        if self.uncalibrated_labels_:
            warnings.warn(
                f"No positive or no negative to calibrate {self.uncalibrated_labels_} "
                "on, in the usable out-of-fold probabilities: these labels keep the "
                "estimator's own probabilities.",
                UserWarning,
                stacklevel=4,
            )

    def _is_linear(self):
        return self.method != "isotonic"

    @available_if(_is_linear)
    def decision_function(self, X):
        """Calibrated logits, ``coef_ * z + intercept_`` (temperature and Platt scaling).

        Their order is the estimator's, exactly: where probabilities near 0
        or 1 tie in float64, the logits do not.

        Parameters
        ----------
        X : array-like or list of images

        Returns
        -------
        ndarray of shape (n_samples, n_labels), or (n_samples,) for a binary y
        """
        z = self._positive_logits(X)
        logits = self.coef_ * z + self.intercept_
        return logits[:, 0] if self.task_ == "binary" else logits

    def predict_proba(self, X):
        """Calibrated probabilities.

        Parameters
        ----------
        X : array-like or list of images

        Returns
        -------
        ndarray of shape (n_samples, n_labels), or (n_samples, 2) for a binary y
        """
        z = self._positive_logits(X)
        if self.method != "isotonic":
            calibrated = expit(self.coef_ * z + self.intercept_)
        else:
            calibrated = np.empty_like(z)
            for k, regression in enumerate(self.isotonic_regressions_):
                if regression is not None:
                    calibrated[:, k] = regression.predict(z[:, k])
        kept = [k for k, name in enumerate(self._label_names) if name in self.uncalibrated_labels_]
        if kept:
            calibrated[:, kept] = self._positive_probabilities(X)[:, kept]
        return self._as_output(calibrated)

    def predict(self, X):
        """0/1 labels where the calibrated probability reaches 0.5 (the class for a binary y).

        For other operating points, wrap this estimator in
        :class:`~skclipxray.thresholds.MultilabelTunedThresholdClassifierCV`.

        Parameters
        ----------
        X : array-like or list of images

        Returns
        -------
        ndarray of shape (n_samples, n_labels), or (n_samples,) for a binary y
        """
        proba = self.predict_proba(X)
        positive = proba[:, 1:] if self.task_ == "binary" else proba
        return self._as_labels(positive >= 0.5)
