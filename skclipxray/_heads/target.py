"""What a classifier of this package makes of ``y``, and how it turns probabilities into labels.

Every trained classifier reads ``y`` the same way, whether it trains a
skorch net (:mod:`.base`) or solves a convex problem
(:mod:`skclipxray.text_anchored`, :mod:`skclipxray.tip_adapter`):

- a 2-D 0/1 ``y`` with more than one column is multilabel, one probability
  per label, and a DataFrame's column names become ``labels_``;
- anything else is 1-D (a single column counts as 1-D, as in
  scikit-learn): binary or multiclass, one probability per class.
"""

import numpy as np
from scipy import sparse
from scipy.special import expit, softmax
from sklearn.utils import column_or_1d
from sklearn.utils.multiclass import check_classification_targets

from .._validation import check_multilabel_indicator, check_threshold

__all__ = ["LogitsMixin", "TargetMixin"]


class TargetMixin:
    """Sets ``task_``, ``labels_`` and ``classes_`` from ``y``; predicts from ``predict_proba``.

    The estimator provides ``predict_proba`` (``(n_samples, n_labels)`` for
    multilabel y, ``(n_samples, n_classes)`` otherwise) and a ``threshold``
    parameter.
    """

    def _check_threshold(self):
        """``threshold`` as one number, or one per label for multilabel y."""
        return check_threshold(
            self.threshold, self.labels_ if self.task_ == "multilabel" else None
        )

    def _encode_target(self, y, label_names):
        """Decide the task from ``y`` and return it encoded.

        Returns a float32 ``(n_samples, n_labels)`` 0/1 matrix for multilabel
        y, a float32 ``(n_samples, 1)`` column of 0/1 for a binary y and the
        int64 class indices for a multiclass y.
        """
        if sparse.issparse(y):
            y = y.toarray()
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:
            check_multilabel_indicator(y, label_names)
            self.task_ = "multilabel"
            self.labels_ = (
                np.asarray(label_names, dtype=object)
                if label_names is not None
                else np.arange(y.shape[1])
            )
            self.classes_ = [np.array([0, 1], dtype=y.dtype)] * y.shape[1]
            self._y_dtype = y.dtype
            return y.astype(np.float32)

        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has one class only ({classes[0]!r}); a classifier needs at "
                "least 2 classes."
            )
        self.classes_ = classes
        self.labels_ = classes
        if len(classes) == 2:
            self.task_ = "binary"
            return encoded.astype(np.float32).reshape(-1, 1)
        self.task_ = "multiclass"
        return encoded.astype(np.int64)

    @property
    def _n_outputs(self):
        return 1 if self.task_ == "binary" else len(self.labels_)

    def _members(self, targets):
        """Boolean ``(n_samples, n_outputs)``: sample ``i`` has label (or is of class) ``k``.

        ``targets`` is what :meth:`_encode_target` returned.
        """
        if self.task_ == "multilabel":
            return targets.astype(bool)
        return targets.reshape(-1, 1).astype(np.int64) == np.arange(len(self.labels_))

    def _name_labels_by_prompts(self, label_names, prompt_labels):
        """A multilabel y without column names takes the prompt embedder's labels."""
        if self.task_ == "multilabel" and label_names is None and prompt_labels is not None:
            self.labels_ = np.asarray(list(prompt_labels), dtype=object)

    def _prompt_labels(self, label_names):
        """The names the label prompts are made for: y's columns (None if
        unnamed) for multilabel y, the class names for 1-D y."""
        if self.task_ == "multilabel":
            return label_names
        return [str(c) for c in self.classes_]

    def predict(self, X):
        """Predicted 0/1 labels (multilabel) or class labels (1-D y).

        A label is predicted when its probability reaches ``threshold``
        (multilabel, and the positive class of a binary y); a multiclass y
        takes the most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels) or (n_samples,)
        """
        proba = self.predict_proba(X)
        if self.task_ == "multiclass":
            return self.classes_[proba.argmax(axis=1)]
        threshold = self._check_threshold()
        if self.task_ == "binary":
            return self.classes_[(proba[:, 1] >= threshold).astype(int)]
        return (proba >= threshold).astype(self._y_dtype)


class LogitsMixin:
    """``decision_function`` and ``predict_proba`` from one logit per output.

    For the classifiers that compute ``_logits(X)``, shape ``(n_samples,
    n_labels)`` for multilabel y (a sigmoid each) or ``(n_samples,
    n_classes)`` for 1-D y (a softmax; a binary y has two classes, one
    logit each).
    """

    def decision_function(self, X):
        """Logits of each label (multilabel) or class (multiclass).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels) or (n_samples,), float64
            For a binary y, the log-odds of ``classes_[1]``, as in
            scikit-learn.
        """
        logits = self._logits(X)
        if self.task_ == "binary":
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Probability of each label (multilabel, a sigmoid each) or class (softmax).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in)
            Image embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_labels) or (n_samples, n_classes), float64
        """
        logits = self._logits(X)
        if self.task_ == "multilabel":
            return expit(logits)
        return softmax(logits, axis=1)
