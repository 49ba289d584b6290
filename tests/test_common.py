"""scikit-learn's common estimator checks, run on every public estimator.

To cover a new estimator, add a (small, fast) instance to ``ESTIMATORS`` and,
only for checks that genuinely cannot apply, an entry with the reason to
``EXPECTED_FAILED_CHECKS``.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skclipxray.classifiers import (
    BaselineClassifier,
    ConcatFusionClassifier,
    WeightedSumClassifier,
)
from skclipxray.testing import HashPromptEmbedder


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


# Small networks: extra torch threads only add synchronisation cost.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
