"""MultilabelTunedThresholdClassifierCV: per-label operating points on out-of-fold probabilities."""

import functools

import numpy as np
import pandas as pd
import pytest
from conftest import FixedScoreClassifier, GroupRecorder, calibration_world
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import fbeta_score, recall_score, roc_curve
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import InvalidParameterError

from skclipxray import PromptEnsembleEmbedder, SigLIPImageEmbedder
from skclipxray.calibration import MultilabelCalibratedClassifierCV
from skclipxray.metrics import apply_thresholds, multilabel_report, multilabel_scorers, tune_thresholds
from skclipxray.persistence import load, save
from skclipxray.text_anchored import TextAnchoredClassifier
from skclipxray.thresholds import MultilabelTunedThresholdClassifierCV

LABELS = ["Mass", "Nodule", "Effusion"]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    Y = pd.DataFrame((X[:, :3] + rng.normal(size=(300, 3)) > 0.5).astype(int), columns=LABELS)
    return X, Y


def _out_of_fold(estimator, X, Y, folds):
    probabilities = np.empty(Y.shape)
    for train, test in folds:
        fitted = clone(estimator).fit(X[train], Y.iloc[train])
        probabilities[test] = fitted.predict_proba(X[test])
    return probabilities


@pytest.mark.parametrize(
    "objective",
    ["f1", functools.partial(fbeta_score, beta=2, zero_division=0.0)],
    ids=["f1", "f2"],
)
def test_thresholds_equal_tune_thresholds_on_the_same_out_of_fold_scores(problem, objective):
    X, Y = problem
    estimator = TextAnchoredClassifier(device="cpu")
    tuned = MultilabelTunedThresholdClassifierCV(estimator, objective=objective, cv=KFold(3))
    tuned.fit(X, Y)
    oof = _out_of_fold(estimator, X, Y, KFold(3).split(X))
    expected = tune_thresholds(Y, oof, objective=objective)
    np.testing.assert_allclose(tuned.best_thresholds_, expected.to_numpy(), rtol=1e-12)
    # predict applies them to the estimator refitted on all the data.
    refitted = clone(estimator).fit(X, Y).predict_proba(X)
    np.testing.assert_array_equal(tuned.predict(X), apply_thresholds(refitted, tuned.best_thresholds_))


def test_youden_thresholds_are_the_argmax_of_tpr_minus_fpr(problem):
    X, Y = problem
    estimator = TextAnchoredClassifier(device="cpu")
    tuned = MultilabelTunedThresholdClassifierCV(estimator, objective="youden", cv=KFold(3)).fit(X, Y)
    oof = _out_of_fold(estimator, X, Y, KFold(3).split(X))
    for k in range(3):
        fpr, tpr, thresholds = roc_curve(Y.iloc[:, k], oof[:, k])
        assert tuned.best_thresholds_[k] == pytest.approx(thresholds[np.argmax(tpr - fpr)], rel=1e-12)
        assert tuned.best_scores_[k] == pytest.approx(np.max(tpr - fpr), rel=1e-12)


def test_a_minimum_sensitivity_of_0_9_holds_on_a_large_held_out_set():
    X, Y = calibration_world(20000, random_state=0)
    X_test, Y_test = calibration_world(20000, random_state=1)
    tuned = MultilabelTunedThresholdClassifierCV(
        FixedScoreClassifier(sharpness=4.0), objective=("min_sensitivity", 0.9), cv=3
    ).fit(X, Y)
    predicted = tuned.predict(X_test)
    for k in range(Y.shape[1]):
        assert abs(recall_score(Y_test[:, k], predicted[:, k]) - 0.9) <= 0.05
    assert (tuned.tuning_results_["sensitivity"] >= 0.9).all()
    assert tuned.tuning_results_["reached"].all()


def test_patient_groups_never_cross_the_tuning_folds():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 25, size=150)
    X = np.column_stack([groups, rng.normal(size=(150, 2))])
    Y = rng.integers(0, 2, size=(150, 2))
    GroupRecorder.log = []
    MultilabelTunedThresholdClassifierCV(GroupRecorder(), cv=5).fit(X, Y, groups=groups)
    assert len(GroupRecorder.log) == 5
    for trained_on, asked_about in GroupRecorder.log:
        assert trained_on.isdisjoint(asked_about)


def test_a_label_without_positives_in_a_training_fold_keeps_0_5_and_is_named():
    X, Y = calibration_world(600, n_labels=3, random_state=2)
    groups = np.arange(600) % 6
    Y[:, 2] = groups == 0
    Y = pd.DataFrame(Y, columns=["Mass", "Nodule", "Hernia"])
    with pytest.warns(UserWarning) as caught:
        tuned = MultilabelTunedThresholdClassifierCV(
            FixedScoreClassifier(), objective="youden", cv=3
        ).fit(X, Y, groups=groups)
    messages = " ".join(str(w.message) for w in caught)
    assert "'Hernia' in fold(s)" in messages
    assert "Hernia" in messages.split("'Hernia' in fold(s)")[1]  # and the fallback names it
    assert tuned.best_thresholds_[2] == 0.5
    assert not tuned.tuning_results_["reached"][2] and tuned.tuning_results_["reached"][:2].all()


def test_an_objective_that_cannot_be_met_warns_with_what_was_achieved():
    rng = np.random.default_rng(3)
    Y = pd.DataFrame(rng.integers(0, 2, size=(600, 2)), columns=["Mass", "Nodule"])
    # Scores that rank every negative of Mass above its positives: no threshold
    # gives it a precision above its prevalence.
    X = np.column_stack([-Y["Mass"] + 0.01 * rng.normal(size=600), Y["Nodule"] + rng.normal(size=600)])
    with pytest.warns(UserWarning, match=r"min_precision.*'Mass'.*highest precision"):
        tuned = MultilabelTunedThresholdClassifierCV(
            FixedScoreClassifier(), objective=("min_precision", 0.9), cv=3
        ).fit(X, Y)
    assert list(tuned.tuning_results_["reached"]) == [False, True]
    assert tuned.tuning_results_["precision"][0] < 0.9 <= tuned.tuning_results_["precision"][1]


def test_prefit_tunes_on_the_validation_data_without_refitting(problem):
    X, Y = problem
    fitted = TextAnchoredClassifier(device="cpu").fit(X[:200], Y.iloc[:200])
    tuned = MultilabelTunedThresholdClassifierCV(
        fitted, objective=("min_specificity", 0.8), cv="prefit"
    ).fit(X[200:], Y.iloc[200:])
    assert tuned.estimator_ is fitted
    expected = tune_thresholds(
        Y.iloc[200:], fitted.predict_proba(X[200:]), objective=("min_specificity", 0.8)
    )
    np.testing.assert_array_equal(tuned.best_thresholds_, expected.to_numpy())


def test_a_binary_y_predicts_its_classes():
    X, Y = calibration_world(1000, n_labels=1, random_state=4)
    y = np.where(Y[:, 0] == 1, "effusion", "clear")
    tuned = MultilabelTunedThresholdClassifierCV(
        LogisticRegression(), objective=("min_sensitivity", 0.9), cv=3
    ).fit(X, y)
    predicted = tuned.predict(X)
    assert set(predicted) <= {"clear", "effusion"}
    assert recall_score(y, predicted, pos_label="effusion") >= 0.85
    np.testing.assert_array_equal(tuned.predict_proba(X), clone(LogisticRegression()).fit(X, y).predict_proba(X))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, size=(36, 36), dtype=np.uint8)) for _ in range(24)
    ]


def test_it_nests_in_a_pipeline_in_grid_search_and_saves(tiny_model_dir, images, tmp_path):
    Y = pd.DataFrame((np.arange(24)[:, None] + np.arange(3)) % 2, columns=LABELS)
    pipeline = Pipeline([
        ("embed", SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False)),
        ("clf", MultilabelCalibratedClassifierCV(
            TextAnchoredClassifier(PromptEnsembleEmbedder(tiny_model_dir, device="cpu"), device="cpu"),
            cv=2,
        )),
    ])
    tuned = MultilabelTunedThresholdClassifierCV(pipeline, objective="youden", cv=2)
    search = GridSearchCV(
        tuned, {"estimator__clf__estimator__anchor_weight": ["auto", 0.1]}, cv=KFold(2),
        scoring=multilabel_scorers()["f1_macro"],
    ).fit(images, Y)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    assert list(best.labels_) == LABELS
    assert best.predict(images[:5]).shape == (5, 3)
    save(best, tmp_path / "tuned.skops")
    loaded = load(tmp_path / "tuned.skops")
    np.testing.assert_array_equal(loaded.predict_proba(images), best.predict_proba(images))
    np.testing.assert_array_equal(loaded.best_thresholds_, best.best_thresholds_)


# Bad input ------------------------------------------------------------------------------


class _FitFails(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise AssertionError("no fold should be fitted")

    def predict_proba(self, X):
        raise AssertionError


@pytest.mark.parametrize(
    "objective, match",
    [
        ("sensitivity", "objective"),
        (("min_sensitivity", 1.5), "objective"),
        (("min_recall", 0.9), "objective"),
        (("min_sensitivity",), "objective"),
    ],
)
def test_a_bad_objective_is_refused_before_any_fold_is_fitted(objective, match):
    X, Y = calibration_world(30)
    with pytest.raises(ValueError, match=match):
        MultilabelTunedThresholdClassifierCV(_FitFails(), objective=objective).fit(X, Y)


def test_an_estimator_without_predict_proba_is_refused():
    X, Y = calibration_world(30, n_labels=1)
    with pytest.raises(InvalidParameterError, match="predict_proba"):
        MultilabelTunedThresholdClassifierCV(LinearSVC()).fit(X, Y[:, 0])


def test_thresholds_with_the_wrong_number_of_labels_are_refused(problem):
    X, Y = problem
    tuned = MultilabelTunedThresholdClassifierCV(TextAnchoredClassifier(device="cpu"), cv=3).fit(X, Y)
    proba = tuned.predict_proba(X)
    with pytest.raises(ValueError, match="3 labels"):
        multilabel_report(Y, proba, threshold=tuned.best_thresholds_[:2])
    with pytest.raises(ValueError, match="3 labels"):
        TextAnchoredClassifier(threshold=tuned.best_thresholds_[:2], device="cpu").fit(X, Y).predict(X)
