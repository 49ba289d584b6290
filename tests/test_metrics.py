"""Multilabel metrics against scikit-learn's own functions on the same input."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier

from skclipxray.metrics import (
    SUMMARY_METRICS,
    apply_thresholds,
    bootstrap_ci,
    multilabel_report,
    multilabel_scorers,
    tune_thresholds,
)
from skclipxray.metrics import _check_objective, _tune_thresholds_table

LABELS = ["Atelectasis", "Effusion", "Mass", "Pneumonia", "Hernia"]


@pytest.fixture(scope="module")
def data():
    """Truth with common and rare labels, and informative, imperfect scores."""
    rng = np.random.RandomState(0)
    prevalence = np.array([0.4, 0.25, 0.1, 0.05, 0.03])
    y = (rng.rand(400, len(LABELS)) < prevalence).astype(int)
    y[:2, -1] = 1  # the rare label has positives
    scores = 1 / (1 + np.exp(-(2.0 * y - 1.5 + rng.randn(*y.shape))))
    return pd.DataFrame(y, columns=LABELS), pd.DataFrame(scores, columns=LABELS)


def test_per_label_metrics_equal_sklearn(data):
    Y, S = data
    per_label, _ = multilabel_report(Y, S, threshold=0.5)

    assert per_label.index.tolist() == LABELS
    for label in LABELS:
        y, s = Y[label], S[label]
        pred = (s >= 0.5).astype(int)
        row = per_label.loc[label]
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, s))
        assert row["average_precision"] == pytest.approx(average_precision_score(y, s))
        assert row["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
        assert row["recall"] == pytest.approx(recall_score(y, pred))
        assert row["f1"] == pytest.approx(f1_score(y, pred))
        assert row["support"] == y.sum()
        assert row["threshold"] == 0.5


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_summary_metrics_equal_sklearn(data, threshold):
    Y, S = data
    _, summary = multilabel_report(Y, S, threshold=threshold)
    pred = (S >= threshold).astype(int)

    expected = {
        "exact_match": accuracy_score(Y, pred),
        "hamming_loss": hamming_loss(Y, pred),
        "precision_macro": precision_score(Y, pred, average="macro", zero_division=0),
        "recall_macro": recall_score(Y, pred, average="macro", zero_division=0),
        "f1_macro": f1_score(Y, pred, average="macro", zero_division=0),
        "precision_micro": precision_score(Y, pred, average="micro", zero_division=0),
        "recall_micro": recall_score(Y, pred, average="micro", zero_division=0),
        "f1_micro": f1_score(Y, pred, average="micro", zero_division=0),
        "roc_auc_macro": roc_auc_score(Y, S, average="macro"),
        "average_precision_macro": average_precision_score(Y, S, average="macro"),
    }
    assert summary.index.tolist() == list(SUMMARY_METRICS) == list(expected)
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value), name


def test_labels_are_matched_by_name(data):
    Y, S = data
    per_label, summary = multilabel_report(Y, S)
    shuffled = S[LABELS[::-1]]
    per_label_shuffled, summary_shuffled = multilabel_report(Y, shuffled)
    pd.testing.assert_frame_equal(per_label, per_label_shuffled)
    pd.testing.assert_series_equal(summary, summary_shuffled)

    from_arrays, _ = multilabel_report(Y.to_numpy(), S.to_numpy(), labels=LABELS)
    pd.testing.assert_frame_equal(per_label, from_arrays)
    unnamed, _ = multilabel_report(Y.to_numpy(), S.to_numpy())
    assert unnamed.index.tolist() == [f"label_{j}" for j in range(len(LABELS))]


def test_per_label_thresholds(data):
    Y, S = data
    thresholds = pd.Series([0.2, 0.3, 0.4, 0.5, 0.6], index=LABELS)
    per_label, summary = multilabel_report(Y, S, threshold=thresholds[::-1].to_dict())
    pred = (S.to_numpy() >= thresholds.to_numpy()).astype(int)

    assert per_label["threshold"].tolist() == thresholds.tolist()
    assert summary["f1_macro"] == pytest.approx(
        f1_score(Y, pred, average="macro", zero_division=0)
    )
    np.testing.assert_array_equal(apply_thresholds(S, thresholds).to_numpy(), pred)
    with pytest.raises(ValueError, match=r"no value for the label\(s\) \['Hernia'\]"):
        multilabel_report(Y, S, threshold=thresholds.drop("Hernia"))
    with pytest.raises(ValueError, match="one per label"):
        multilabel_report(Y, S, threshold=[0.5, 0.5])


def test_single_class_label_is_nan_and_left_out_of_macro_auc(data):
    Y, S = data
    Y = Y.copy()
    Y["Hernia"] = 0

    match = r"undefined \(NaN\) for 1 of 5 labels: Y_true has no positive example of Hernia\."
    with pytest.warns(UndefinedMetricWarning, match=match):
        per_label, summary = multilabel_report(Y, S)

    assert np.isnan(per_label.loc["Hernia", "roc_auc"])
    assert np.isnan(per_label.loc["Hernia", "average_precision"])
    defined = LABELS[:-1]
    assert summary["roc_auc_macro"] == pytest.approx(
        roc_auc_score(Y[defined], S[defined], average="macro")
    )
    assert summary["average_precision_macro"] == pytest.approx(
        average_precision_score(Y[defined], S[defined], average="macro")
    )


def test_bad_input_is_named(data):
    Y, S = data
    bad = Y.to_numpy().copy()
    bad[3, 1] = 2
    with pytest.raises(ValueError, match=r"Y_true\[3, 'Effusion'\] is 2"):
        multilabel_report(bad, S.to_numpy(), labels=LABELS)
    with pytest.raises(ValueError, match=r"Y_score has shape \(399, 5\); expected \(400, 5\)"):
        multilabel_report(Y, S.to_numpy()[1:])
    with pytest.raises(ValueError, match="are not the labels"):
        multilabel_report(Y, S.rename(columns={"Mass": "Nodule"}))
    with pytest.raises(ValueError, match="differ from the columns"):
        multilabel_report(Y, S, labels=LABELS[::-1])


# ---- bootstrap --------------------------------------------------------------


def test_bootstrap_resamples_whole_patients(data):
    Y, S = data
    groups = np.arange(len(Y)) // 4  # four images per patient
    row_ids = np.tile(np.arange(len(Y))[:, None], (1, len(LABELS))).astype(float)
    seen = []

    def record_rows(y_true, y_score):
        seen.append(y_score[:, 0].astype(int))
        return 0.0

    bootstrap_ci(Y, row_ids, record_rows, n_boot=20, groups=groups, random_state=0)

    assert len(seen) == 21  # the full data, then the replicates
    np.testing.assert_array_equal(seen[0], np.arange(len(Y)))
    for rows in seen[1:]:
        drawn = np.bincount(rows, minlength=len(Y)).reshape(-1, 4)
        # All images of a patient are drawn the same number of times.
        assert (drawn == drawn[:, :1]).all()
        assert drawn.sum() == len(Y)
        assert (drawn[:, 0] == 0).any() and (drawn[:, 0] > 1).any()


def test_bootstrap_interval_is_the_percentile_of_the_replicates(data):
    Y, S = data
    values = []

    def macro_auc(y_true, y_score):
        value = roc_auc_score(y_true, y_score, average="macro")
        values.append(value)
        return value

    ci = bootstrap_ci(Y, S, macro_auc, n_boot=100, confidence=0.9, random_state=0)

    replicates = np.array(values[1:])
    assert ci.loc["macro_auc", "value"] == pytest.approx(roc_auc_score(Y, S, average="macro"))
    assert ci.loc["macro_auc", "ci_low"] == pytest.approx(np.quantile(replicates, 0.05))
    assert ci.loc["macro_auc", "ci_high"] == pytest.approx(np.quantile(replicates, 0.95))
    assert ci.loc["macro_auc", "n_valid"] == 100
    again = bootstrap_ci(Y, S, macro_auc, n_boot=100, confidence=0.9, random_state=0)
    pd.testing.assert_frame_equal(ci, again)


def test_bootstrap_of_the_report_summary(data):
    Y, S = data
    groups = np.arange(len(Y)) // 2
    thresholds = dict(zip(LABELS, [0.3, 0.4, 0.5, 0.5, 0.2]))
    _, summary = multilabel_report(Y, S, threshold=thresholds)

    ci = bootstrap_ci(
        Y, S, SUMMARY_METRICS, threshold=thresholds, n_boot=15, groups=groups, random_state=0
    )

    assert ci.columns.tolist() == ["value", "ci_low", "ci_high", "n_valid"]
    pd.testing.assert_series_equal(ci["value"], summary, check_names=False)
    assert (ci["ci_low"] <= ci["ci_high"]).all() and (ci["n_valid"] == 15).all()
    with pytest.raises(ValueError, match="Unknown metric"):
        bootstrap_ci(Y, S, "accuracy")
    with pytest.raises(ValueError, match=r"groups has shape \(3,\)"):
        bootstrap_ci(Y, S, groups=[1, 2, 3])


# ---- scorers ----------------------------------------------------------------


class ProbaPerLabel(ClassifierMixin, BaseEstimator):
    """A head like the library's: predict_proba of shape (n_samples, n_labels)."""

    def __init__(self, classes="list"):
        self.classes = classes

    def fit(self, X, y):
        y = np.asarray(y)
        rng = np.random.RandomState(0)
        self.coef_ = rng.randn(X.shape[1], y.shape[1])
        # Two conventions of scikit-learn multilabel classifiers for classes_.
        self.classes_ = (
            [np.array([0, 1])] * y.shape[1] if self.classes == "list" else np.arange(y.shape[1])
        )
        return self

    def predict_proba(self, X):
        return 1 / (1 + np.exp(-np.asarray(X) @ self.coef_))

    def predict(self, X):
        return (self.predict_proba(X) >= 0.5).astype(int)


@pytest.fixture(scope="module")
def xy():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 6)
    Y = (X[:, :4] + 0.5 * rng.randn(120, 4) > 0.3).astype(int)
    return X, Y


def _expected_scores(estimator, X, Y):
    pred, proba = estimator.predict(X), estimator.predict_proba(X)
    if isinstance(proba, list):
        proba = np.column_stack([p[:, 1] for p in proba])
    return {
        "exact_match": accuracy_score(Y, pred),
        "neg_hamming_loss": -hamming_loss(Y, pred),
        "f1_macro": f1_score(Y, pred, average="macro", zero_division=0),
        "f1_micro": f1_score(Y, pred, average="micro", zero_division=0),
        "precision_macro": precision_score(Y, pred, average="macro", zero_division=0),
        "recall_macro": recall_score(Y, pred, average="macro", zero_division=0),
        "roc_auc_macro": roc_auc_score(Y, proba, average="macro"),
        "average_precision_macro": average_precision_score(Y, proba, average="macro"),
    }


@pytest.mark.parametrize(
    "estimator",
    [
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        KNeighborsClassifier(5),  # predict_proba: a list of (n, 2) arrays
        ProbaPerLabel(classes="list"),
        ProbaPerLabel(classes="range"),
    ],
    ids=["MLPClassifier", "KNeighbors", "head-classes-list", "head-classes-range"],
)
def test_scorers_in_cross_validate_equal_sklearn(xy, estimator):
    X, Y = xy
    cv = KFold(3, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence
        result = cross_validate(
            estimator, X, Y, cv=cv, scoring=multilabel_scorers(), return_estimator=True,
            return_indices=True, error_score="raise",
        )
    for fold, (fitted, test) in enumerate(zip(result["estimator"], result["indices"]["test"])):
        expected = _expected_scores(fitted, X[test], Y[test])
        assert set(expected) == set(multilabel_scorers())
        for name, value in expected.items():
            assert result[f"test_{name}"][fold] == pytest.approx(value), name
    assert (result["test_neg_hamming_loss"] <= 0).all()


def test_scorers_in_grid_search(xy):
    X, Y = xy
    search = GridSearchCV(
        KNeighborsClassifier(), {"n_neighbors": [3, 9]}, cv=3,
        scoring=multilabel_scorers(), refit="neg_hamming_loss",
    ).fit(X, Y)
    results = search.cv_results_
    best = np.argmax(results["mean_test_neg_hamming_loss"])
    assert search.best_params_ == results["params"][best]
    assert -search.best_score_ == pytest.approx(
        np.mean([-results[f"split{k}_test_neg_hamming_loss"][best] for k in range(3)])
    )


def test_roc_auc_scorer_skips_labels_with_one_class(xy):
    X, Y = xy
    Y = Y.copy()
    Y[:, 2] = 0
    head = ProbaPerLabel().fit(X, Y)
    proba = head.predict_proba(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = multilabel_scorers()["roc_auc_macro"](head, X, Y)
    assert score == pytest.approx(roc_auc_score(Y[:, [0, 1, 3]], proba[:, [0, 1, 3]]))


# ---- thresholds -------------------------------------------------------------


@pytest.fixture(scope="module")
def validation(data):
    """A smaller validation set: the references try every distinct score."""
    Y, S = data
    return Y.iloc[:120, [0, 2, 4]], S.iloc[:120, [0, 2, 4]]


def test_tuned_f1_is_the_best_over_candidate_thresholds(validation):
    Y, S = validation
    thresholds = tune_thresholds(Y, S)

    assert thresholds.index.tolist() == Y.columns.tolist()
    for label in Y.columns:
        y, s = Y[label].to_numpy(), S[label].to_numpy()
        candidates = np.unique(s)
        f1s = [f1_score(y, s >= t, zero_division=0) for t in candidates]
        tuned = f1_score(y, s >= thresholds[label], zero_division=0)
        assert thresholds[label] in candidates
        assert tuned == pytest.approx(max(f1s))
        assert tuned >= f1_score(y, s >= 0.5, zero_division=0)
    # Rare labels: 0.5 misses positives that the tuned threshold finds.
    assert (thresholds < 0.5).any()
    per_label, _ = multilabel_report(Y, S, threshold=thresholds)
    assert (per_label["f1"] >= multilabel_report(Y, S)[0]["f1"]).all()


def test_tune_thresholds_with_a_callable_metric(validation):
    Y, S = validation
    thresholds = tune_thresholds(
        Y.to_numpy(), S.to_numpy(), objective=balanced_accuracy_score, max_candidates=None
    )
    assert thresholds.index.tolist() == ["label_0", "label_1", "label_2"]
    for j, t in enumerate(thresholds):
        y, s = Y.iloc[:, j], S.iloc[:, j]
        best = max(balanced_accuracy_score(y, s >= c) for c in np.unique(s))
        assert balanced_accuracy_score(y, s >= t) == pytest.approx(best)


def test_tune_thresholds_limits_the_calls_of_a_callable_metric(validation):
    Y, S = validation
    tried = []

    def record(y_true, y_pred):
        tried.append(int(y_pred.sum()))
        return -abs(int(y_pred.sum()) - 30)  # best: 30 predicted positives

    thresholds = tune_thresholds(
        Y.iloc[:, :1], S.iloc[:, :1], objective=record, max_candidates=11
    )
    assert len(tried) <= 11
    candidates = np.quantile(np.unique(S.iloc[:, 0]), np.linspace(0, 1, 11), method="nearest")
    assert thresholds.iloc[0] in candidates


def test_tune_thresholds_without_positives_uses_the_default(validation):
    Y, S = validation
    Y = Y.copy()
    Y["Hernia"] = 0
    with pytest.warns(UndefinedMetricWarning, match=r"No positive in Y_true for \['Hernia'\]"):
        thresholds = tune_thresholds(Y, S, default=0.7)
    assert thresholds["Hernia"] == 0.7


def _best_threshold(candidates, values):
    """The highest candidate whose value is the maximum (up to rounding)."""
    values = np.asarray(values, dtype=float)
    return max(c for c, v in zip(candidates, values) if v >= values.max() - 1e-12)


def _brute_force(y, s, level, constrained, maximised):
    """The best ``maximised`` among the distinct scores where ``constrained`` >= level."""
    feasible = [t for t in np.unique(s) if constrained(y, s >= t) >= level]
    return max(maximised(y, s >= t) for t in feasible)


def _specificity(y, pred):
    tn, fp, _, _ = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return tn / (tn + fp)


def test_the_metric_alias_warns_and_still_works(validation):
    Y, S = validation
    with pytest.warns(FutureWarning, match="`metric` was renamed `objective`"):
        aliased = tune_thresholds(Y, S, metric=balanced_accuracy_score)
    pd.testing.assert_series_equal(
        aliased, tune_thresholds(Y, S, objective=balanced_accuracy_score)
    )
    with pytest.raises(ValueError, match="Pass objective= only"):
        tune_thresholds(Y, S, objective="youden", metric="f1")


def test_youden_is_the_argmax_of_tpr_minus_fpr(validation):
    Y, S = validation
    thresholds = tune_thresholds(Y, S, objective="youden")
    for label in Y.columns:
        fpr, tpr, candidates = roc_curve(Y[label], S[label], drop_intermediate=False)
        assert thresholds[label] == _best_threshold(candidates, tpr - fpr)


def test_balanced_accuracy_is_the_brute_force_maximum_and_youden_threshold(validation):
    Y, S = validation
    thresholds = tune_thresholds(Y, S, objective="balanced_accuracy")
    for label in Y.columns:
        y, s = Y[label], S[label]
        candidates = np.unique(s)
        values = [balanced_accuracy_score(y, s >= t) for t in candidates]
        assert balanced_accuracy_score(y, s >= thresholds[label]) == pytest.approx(max(values))
        assert thresholds[label] == _best_threshold(candidates, values)
    pd.testing.assert_series_equal(thresholds, tune_thresholds(Y, S, objective="youden"))


def test_ties_go_to_the_higher_threshold(validation):
    Y, S = validation
    thresholds = tune_thresholds(Y, S, objective=lambda y_true, y_pred: 1.0)
    pd.testing.assert_series_equal(thresholds, S.max().rename_axis("label"), check_names=False)


def _gaussian(n, seed):
    """Positives score one standard deviation above negatives; 30% prevalence."""
    rng = np.random.RandomState(seed)
    y = (rng.rand(n, 1) < 0.3).astype(int)
    return y, y + rng.randn(n, 1)


def test_min_sensitivity_holds_on_held_out_data():
    y, s = _gaussian(20000, seed=0)
    threshold = tune_thresholds(y, s, objective=("min_sensitivity", 0.9)).iloc[0]

    y, s = y[:, 0], s[:, 0]
    assert recall_score(y, s >= threshold) >= 0.9
    positives, negatives = np.sort(s[y == 1]), np.sort(s[y == 0])
    candidates = np.unique(s)
    # Counting, per candidate, the positives and negatives on either side.
    sensitivity = 1 - np.searchsorted(positives, candidates, side="left") / len(positives)
    specificity = np.searchsorted(negatives, candidates, side="left") / len(negatives)
    assert _specificity(y, s >= threshold) == pytest.approx(
        specificity[sensitivity >= 0.9].max()
    )
    y_new, s_new = _gaussian(20000, seed=1)
    assert recall_score(y_new[:, 0], s_new[:, 0] >= threshold) == pytest.approx(0.9, abs=0.05)


@pytest.mark.parametrize(
    "objective, constrained, maximised",
    [
        (("min_sensitivity", 0.8), recall_score, _specificity),
        (("min_specificity", 0.8), _specificity, recall_score),
        (["min_specificity", 0.95], _specificity, recall_score),
        (("min_precision", 0.5), precision_score, recall_score),
        (("min_precision", 0.3), precision_score, recall_score),
    ],
)
def test_constrained_objectives_equal_brute_force(validation, objective, constrained, maximised):
    Y, S = validation
    table = _tune_thresholds_table(
        Y.to_numpy(), S.to_numpy(), _check_objective(objective), Y.columns.tolist()
    )
    assert table.columns.tolist() == [
        "threshold", "objective_value", "sensitivity", "specificity", "precision", "reached",
    ]
    assert table.index.name == "label"
    pd.testing.assert_series_equal(
        table["threshold"], tune_thresholds(Y, S, objective=objective)
    )
    for label in Y.columns:
        y, s = Y[label].to_numpy(), S[label].to_numpy()
        row = table.loc[label]
        pred = s >= row["threshold"]
        assert row["reached"]
        assert constrained(y, pred) >= objective[1]
        best = _brute_force(y, s, objective[1], constrained, maximised)
        assert maximised(y, pred) == pytest.approx(best)
        assert row["objective_value"] == pytest.approx(best)
        assert row["sensitivity"] == pytest.approx(recall_score(y, pred))
        assert row["specificity"] == pytest.approx(_specificity(y, pred))
        assert row["precision"] == pytest.approx(precision_score(y, pred))


def test_objective_values_of_the_table(validation):
    Y, S = validation
    y_true, y_score, labels = Y.to_numpy(), S.to_numpy(), Y.columns.tolist()
    for objective, reference in [
        ("f1", f1_score),
        ("balanced_accuracy", balanced_accuracy_score),
        ("youden", lambda y, pred: recall_score(y, pred) + _specificity(y, pred) - 1),
    ]:
        table = _tune_thresholds_table(y_true, y_score, objective, labels)
        for j, label in enumerate(labels):
            pred = y_score[:, j] >= table.loc[label, "threshold"]
            assert table.loc[label, "objective_value"] == pytest.approx(
                reference(y_true[:, j], pred)
            ), objective
        assert table["reached"].all()


def test_unreachable_min_precision_warns_and_uses_the_closest_threshold(validation):
    Y, S = validation
    Y, S = Y.copy(), S.copy()
    # The two highest Hernia scores are a negative and a positive: precision <= 1/2.
    top = S["Hernia"].nlargest(2).index
    Y.loc[top, "Hernia"] = [0, 1]
    y, s = Y["Hernia"].to_numpy(), S["Hernia"].to_numpy()
    candidates = np.unique(s)
    precisions = [precision_score(y, s >= t) for t in candidates]
    highest = max(precisions)
    assert highest < 0.99

    match = (
        rf"min_precision 0\.99 cannot be reached for 'Hernia' on these scores: the highest "
        rf"precision at any threshold is {highest:.3g} \(recall "
    )
    with pytest.warns(UserWarning, match=match) as record:
        table = _tune_thresholds_table(
            Y.to_numpy(), S.to_numpy(), ("min_precision", 0.99), Y.columns.tolist()
        )
    assert table.loc["Hernia", "threshold"] == _best_threshold(candidates, precisions)
    assert not table.loc["Hernia", "reached"]
    for label in ("Atelectasis", "Mass"):
        if table.loc[label, "reached"]:
            assert table.loc[label, "precision"] >= 0.99
        else:
            assert any(f"for {label!r}" in str(w.message) for w in record)


def test_labels_without_a_negative_keep_the_default_for_specificity_objectives(validation):
    Y, S = validation
    Y = Y.copy()
    Y["Mass"] = 1
    for objective in ["youden", ("min_specificity", 0.9)]:
        with pytest.warns(UndefinedMetricWarning, match=r"No negative in Y_true for \['Mass'\]"):
            table = _tune_thresholds_table(
                Y.to_numpy(), S.to_numpy(), objective, Y.columns.tolist(), default=0.4
            )
        assert table.loc["Mass", "threshold"] == 0.4
        assert not table.loc["Mass", "reached"]
        assert np.isnan(table.loc["Mass", "objective_value"])
        assert np.isnan(table.loc["Mass", "specificity"])
        assert table.loc[["Atelectasis", "Hernia"], "reached"].all()


@pytest.mark.parametrize(
    "objective, message",
    [
        ("auc", "unknown objective 'auc'"),
        ("min_precision", r"'min_precision' needs a level, e\.g\. \('min_precision', 0\.9\)"),
        (("min_precision", 0),
         r"the level of 'min_precision' must be a number in \(0, 1\], got 0"),
        (("min_sensitivity", 1.5), "the level of 'min_sensitivity' must be .* got 1.5"),
        (("min_specificity", "0.9"), "the level of 'min_specificity' must be .* got '0.9'"),
        (("min_specificity", True), "the level of 'min_specificity' must be .* got True"),
        (("min_specificity", np.nan), "the level of 'min_specificity' must be .* got nan"),
        (("youden", 0.9), r"'youden' takes no level"),
        (("max_recall", 0.9), "unknown objective 'max_recall'"),
        (("min_precision",), r"got \('min_precision',\)"),
        (0.9, "got 0.9"),
    ],
)
def test_bad_objectives_are_named(validation, objective, message):
    Y, S = validation
    spellings = r"Use 'f1', 'youden', 'balanced_accuracy', \('min_sensitivity', x\)"
    with pytest.raises(ValueError, match=f"Invalid objective: {message}"):
        tune_thresholds(Y, S, objective=objective)
    with pytest.raises(ValueError, match=spellings):
        _check_objective(objective)


def test_check_objective_normalises():
    assert _check_objective(["min_sensitivity", 1]) == ("min_sensitivity", 1.0)
    assert _check_objective("youden") == "youden"
    assert _check_objective(f1_score) is f1_score


def test_undefined_labels_are_named_with_the_reason():
    Y = pd.DataFrame({"Mass": [1, 0, 1], "Hernia": [0, 0, 0], "Edema": [1, 1, 1],
                      "Nodule": [0, 1, 0]})
    with pytest.warns(UndefinedMetricWarning) as record:
        per_label, summary = multilabel_report(Y, np.full((3, 4), 0.5))
    assert [str(w.message) for w in record] == [
        "ROC AUC is undefined (NaN) for 2 of 4 labels: Y_true has no positive example "
        "of Hernia and no negative example of Edema. So is average precision for the labels "
        "without a positive. Macro averages leave them out (ROC AUC: mean of 2 labels)."
    ]
    assert per_label["roc_auc"].isna().tolist() == [False, True, True, False]
    assert per_label["average_precision"].isna().tolist() == [False, True, False, False]

    match = r"for 1 of 1 labels: .* Macro ROC AUC is NaN\.$"
    with pytest.warns(UndefinedMetricWarning, match=match):
        _, summary = multilabel_report(Y[["Edema"]], np.full((3, 1), 0.5))
    assert np.isnan(summary["roc_auc_macro"])


# Calibration ----------------------------------------------------------------------------


def _ece_reference(y, p, n_bins):
    """The expected calibration error, bin by bin, as its definition reads."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for j in range(n_bins):
        last = j == n_bins - 1
        in_bin = (p >= edges[j]) & ((p <= edges[j + 1]) if last else (p < edges[j + 1]))
        if in_bin.any():
            total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
    return total / len(p)


def test_report_gives_brier_score_and_expected_calibration_error():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    p = rng.random((500, 3))
    p[:5, 0] = [0.0, 1.0, 0.1, 0.2, 0.999]  # bin edges
    # Label 0 calibrated, label 1 over-confident, label 2 scores always 0.5.
    y = np.column_stack([
        rng.random(500) < p[:, 0], rng.random(500) < 0.5, rng.random(500) < 0.3,
    ]).astype(int)
    p[:, 2] = 0.5
    per_label, _ = multilabel_report(y, p, labels=["a", "b", "c"], n_bins=10)
    for k in range(3):
        assert per_label["brier"].iloc[k] == pytest.approx(brier_score_loss(y[:, k], p[:, k]))
        assert per_label["ece"].iloc[k] == pytest.approx(_ece_reference(y[:, k], p[:, k], 10))
    assert per_label["ece"].iloc[2] == pytest.approx(abs(y[:, 2].mean() - 0.5))
    assert per_label["ece"]["a"] < per_label["ece"]["b"]


def test_calibration_is_nan_for_scores_that_are_not_probabilities():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = np.array([[2.0, -1.0], [-3.0, 0.5], [1.0, 2.0], [-1.0, -2.0]])
    per_label, _ = multilabel_report(y, logits, threshold=0.0)
    assert per_label["brier"].isna().all() and per_label["ece"].isna().all()
    assert per_label["roc_auc"].notna().all()


def test_n_bins_must_be_a_positive_int():
    with pytest.raises(ValueError, match="n_bins must be a positive int, got 0"):
        multilabel_report([[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], n_bins=0)


# Sensitivity and specificity ----------------------------------------------------------


def test_report_sensitivity_and_specificity_equal_sklearn(data):
    Y, S = data
    thresholds = dict(zip(LABELS, [0.3, 0.4, 0.5, 0.5, 0.2]))
    per_label, _ = multilabel_report(Y, S, threshold=thresholds)
    for label in LABELS:
        y, pred = Y[label], S[label] >= thresholds[label]
        tn, fp, _, _ = confusion_matrix(y, pred).ravel()
        assert per_label.loc[label, "sensitivity"] == pytest.approx(recall_score(y, pred))
        assert per_label.loc[label, "specificity"] == pytest.approx(tn / (tn + fp))
    assert "sensitivity_ci_low" not in per_label

    all_positive = Y.assign(Hernia=1)
    with pytest.warns(UndefinedMetricWarning, match="no negative example of Hernia"):
        per_label, _ = multilabel_report(all_positive, S, zero_division=1.0)
    assert per_label.loc["Hernia", "specificity"] == 1.0


def test_report_of_a_single_label_scores_its_positive_class(data):
    Y, S = data
    full, _ = multilabel_report(Y, S)
    single, summary = multilabel_report(Y[["Mass"]], S[["Mass"]])
    pd.testing.assert_frame_equal(single, full.loc[["Mass"]])
    pred = S["Mass"] >= 0.5
    for average in ("macro", "micro"):
        assert summary[f"precision_{average}"] == pytest.approx(precision_score(Y["Mass"], pred))
        assert summary[f"recall_{average}"] == pytest.approx(recall_score(Y["Mass"], pred))
        assert summary[f"f1_{average}"] == pytest.approx(f1_score(Y["Mass"], pred))


def test_report_intervals_equal_the_bootstrap_of_the_rates(data):
    Y, S = data
    groups = np.arange(len(Y)) // 3
    per_label, _ = multilabel_report(
        Y, S, n_boot=200, groups=groups, confidence=0.9, random_state=0
    )
    columns = ["sensitivity_ci_low", "sensitivity_ci_high", "specificity_ci_low",
               "specificity_ci_high"]
    assert per_label.columns[-4:].tolist() == columns

    def rates(y_true, y_score):
        pred = y_score >= 0.5
        positives = y_true.sum(axis=0)
        negatives = len(y_true) - positives
        sensitivity = np.where(positives > 0, (pred & (y_true == 1)).sum(axis=0), np.nan)
        specificity = np.where(negatives > 0, (~pred & (y_true == 0)).sum(axis=0), np.nan)
        return {
            **{f"sensitivity {label}": v for label, v in zip(LABELS, sensitivity / positives)},
            **{f"specificity {label}": v for label, v in zip(LABELS, specificity / negatives)},
        }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 in replicates without Hernia
        ci = bootstrap_ci(Y, S, rates, n_boot=200, groups=groups, confidence=0.9,
                          random_state=0)
    for label in LABELS:
        for rate in ("sensitivity", "specificity"):
            row = ci.loc[f"{rate} {label}"]
            assert per_label.loc[label, f"{rate}_ci_low"] == pytest.approx(row["ci_low"])
            assert per_label.loc[label, f"{rate}_ci_high"] == pytest.approx(row["ci_high"])
            value = per_label.loc[label, rate]
            assert value == pytest.approx(row["value"])
            assert row["ci_low"] <= value <= row["ci_high"]


def test_report_intervals_resample_whole_patients():
    # Each patient: a found and a missed positive, a true and a false alarm.
    n_patients = 30
    y = np.tile([1, 1, 0, 0], n_patients)[:, None]
    s = np.tile([0.9, 0.1, 0.1, 0.9], n_patients)[:, None]
    groups = np.repeat(np.arange(n_patients), 4)

    by_patient, _ = multilabel_report(y, s, n_boot=100, groups=groups, random_state=0)
    by_image, _ = multilabel_report(y, s, n_boot=100, random_state=0)

    for rate in ("sensitivity", "specificity"):
        assert by_patient.loc["label_0", rate] == 0.5
        # Every patient replicate finds half of the positives and half of the negatives.
        assert by_patient.loc["label_0", f"{rate}_ci_low"] == 0.5
        assert by_patient.loc["label_0", f"{rate}_ci_high"] == 0.5
        assert by_image.loc["label_0", f"{rate}_ci_low"] < 0.5
        assert by_image.loc["label_0", f"{rate}_ci_high"] > 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_boot": -1}, "n_boot must be a non-negative int, got -1"),
        ({"n_boot": 2.0}, "n_boot must be a non-negative int, got 2.0"),
        ({"n_boot": 10, "confidence": 1.5}, r"confidence must be in \(0, 1\), got 1.5"),
        ({"n_boot": 10, "groups": [0, 1]}, r"groups has shape \(2,\); expected \(400,\)"),
    ],
)
def test_report_bootstrap_parameters_are_checked(data, kwargs, message):
    Y, S = data
    with pytest.raises(ValueError, match=message):
        multilabel_report(Y, S, **kwargs)
