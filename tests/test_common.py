"""scikit-learn's common estimator checks, run on every public estimator.

To cover a new estimator, add a (small, fast) instance to ``ESTIMATORS`` and,
only for checks that genuinely cannot apply, an entry with the reason to
``EXPECTED_FAILED_CHECKS``.
"""

import zlib

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.estimator_checks import parametrize_with_checks

from skclipxray.classifiers import (
    BaselineClassifier,
    ConcatFusionClassifier,
    WeightedSumClassifier,
)


class HashPromptEmbedder(TransformerMixin, BaseEstimator):
    """Stands in for PromptEnsembleEmbedder: a fixed random vector per label name.

    Without names (a multilabel y given as a bare array) it embeds its
    ``default_labels``; five, as in scikit-learn's multilabel checks.
    """

    def __init__(self, dim=4, default_labels=("a", "b", "c", "d", "e")):
        self.dim = dim
        self.default_labels = default_labels

    def fit(self, X=None, y=None):
        self.labels_ = list(self.default_labels if X is None else X)
        return self

    def transform(self, X=None):
        labels = self.labels_ if X is None else X
        return np.stack([
            np.random.default_rng(zlib.crc32(str(label).encode())).normal(size=self.dim)
            for label in labels
        ])


# Small networks and few epochs: the checks fit each estimator dozens of times.
_FAST_HEAD = dict(hidden_sizes=(16,), max_epochs=10, batch_size=32, lr=0.01)

ESTIMATORS = [
    BaselineClassifier(**_FAST_HEAD),
    ConcatFusionClassifier(HashPromptEmbedder(), fusion_hidden_sizes=(8,), **_FAST_HEAD),
    WeightedSumClassifier(HashPromptEmbedder(), **_FAST_HEAD),
]

#: Estimator class name -> {check name: why it cannot apply}.
EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Tiny networks: extra threads only add synchronisation cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
