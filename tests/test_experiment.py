"""run_experiment on a test set too small for some metrics: said once, plainly."""

import warnings

import pandas as pd
import pytest
from sklearn.exceptions import UndefinedMetricWarning

from skclipxray.experiment import ExperimentConfig, run_experiment
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.metrics import multilabel_report
from skclipxray.testing import make_synthetic_nih


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model_dir):
    """An experiment whose test set is too small to define every ROC AUC.

    Its training-set curve evaluates every model again on the same test set.
    """
    root = tmp_path_factory.mktemp("nih")
    make_synthetic_nih(root, n_images=60, image_size=32, prevalence=0.15)
    out_dir = root / "results"
    config = ExperimentConfig(
        nih_root=str(root), out_dir=str(out_dir), model=str(tiny_model_dir),
        n_per_label=6, train_sizes=[10], hidden_sizes=(16,), max_epochs=2,
        device="cpu",
    )
    messages = []
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(config, log=messages.append)
        warnings.warn("a warning of the user's own code", UserWarning)
    assert warnings.filters == filters
    subset = pd.read_csv(out_dir / "subset.csv")
    return messages, caught, subset[subset["split"] == "test"], out_dir


def test_undefined_roc_auc_is_said_once_with_the_labels_and_why(small_run):
    messages, caught, test, _ = small_run
    no_positive = [label for label in NIH_PATHOLOGIES if test[label].max() == 0]
    no_negative = [label for label in NIH_PATHOLOGIES if test[label].min() == 1]
    n_undefined = len(no_positive) + len(no_negative)
    assert n_undefined > 0  # the case this test is about

    said = [m for m in messages if "undefined" in m]
    assert len(said) == 1
    expected = f"ROC AUC is undefined (NaN) for {n_undefined} of 14 labels: "
    expected += f"the test set ({len(test)} images) has "
    expected += " and ".join(
        f"no {kind} example of {', '.join(names)}"
        for kind, names in (("positive", no_positive), ("negative", no_negative)) if names
    )
    assert said[0].startswith(expected + ".")
    assert said[0].endswith(f"(ROC AUC: mean of {14 - n_undefined} labels).")
    assert not [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]


def test_warnings_outside_the_metrics_are_left_alone(small_run):
    _, caught, test, _ = small_run
    assert "a warning of the user's own code" in [str(w.message) for w in caught]
    # The user's own calls still warn.
    with pytest.warns(UndefinedMetricWarning, match="ROC AUC is undefined"):
        multilabel_report(test[list(NIH_PATHOLOGIES)], test[list(NIH_PATHOLOGIES)] * 0.5)
