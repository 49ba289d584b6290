"""MultilabelCalibratedClassifierCV: per-label calibration on out-of-fold probabilities."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import FixedScoreClassifier, GroupRecorder, calibration_world
from scipy.special import expit
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import InvalidParameterError

from skclipxray.calibration import MultilabelCalibratedClassifierCV, fit_sigmoid
from skclipxray.metrics import multilabel_report
from skclipxray.persistence import load, save
from skclipxray.text_anchored import TextAnchoredClassifier
from skclipxray.zeroshot import ZeroShotClassifier


@pytest.fixture(scope="module")
def overconfident():
    """A large tuning set and a large held-out set, scored 4 times too sharply."""
    return calibration_world(20000, random_state=0), calibration_world(20000, random_state=1)


def _ece(Y, proba):
    return multilabel_report(Y, proba)[0]["ece"].to_numpy()


# A temperature undoes a sharpness, not a shift; Platt scaling undoes both.
@pytest.mark.parametrize(
    "method, shift", [("temperature", 0.0), ("sigmoid", 0.0), ("sigmoid", -1.0)]
)
def test_scaling_brings_the_held_out_ece_below_0_03(overconfident, method, shift):
    (X, Y), (X_test, Y_test) = overconfident
    estimator = FixedScoreClassifier(sharpness=4.0, shift=shift)
    before = _ece(Y_test, clone(estimator).fit(X, Y).predict_proba(X_test))
    calibrated = MultilabelCalibratedClassifierCV(estimator, method=method, cv=3).fit(X, Y)
    after = _ece(Y_test, calibrated.predict_proba(X_test))
    assert (before > 0.10).all(), before
    assert (after < 0.03).all(), after
    # The true map is known: sigmoid(z / 4 - shift / 4), z the estimator's logit.
    np.testing.assert_allclose(calibrated.coef_, 0.25, rtol=0.05)
    np.testing.assert_allclose(calibrated.intercept_, -shift / 4, atol=0.06)


def test_isotonic_brings_the_held_out_ece_down(overconfident):
    (X, Y), (X_test, Y_test) = overconfident
    estimator = FixedScoreClassifier(sharpness=4.0, shift=-1.0)
    calibrated = MultilabelCalibratedClassifierCV(estimator, method="isotonic", cv=3).fit(X, Y)
    assert (_ece(Y_test, calibrated.predict_proba(X_test)) < 0.03).all()


def test_temperature_keeps_every_label_s_ranking(overconfident):
    (X, Y), (X_test, Y_test) = overconfident
    estimator = FixedScoreClassifier(sharpness=4.0)
    raw = clone(estimator).fit(X, Y).predict_proba(X_test)
    calibrated = MultilabelCalibratedClassifierCV(estimator, cv=3).fit(X, Y).predict_proba(X_test)
    for k in range(Y.shape[1]):
        for metric in (roc_auc_score, average_precision_score):
            assert abs(metric(Y_test[:, k], calibrated[:, k]) - metric(Y_test[:, k], raw[:, k])) <= 1e-12


def _soft_logistic_regression(z, targets, fit_intercept):
    """scikit-learn's unpenalised logistic regression on soft targets, as weights."""
    features = np.concatenate([z, z])[:, None]
    labels = np.repeat([1, 0], len(z))
    weights = np.concatenate([targets, 1 - targets])
    model = LogisticRegression(C=np.inf, fit_intercept=fit_intercept, tol=1e-10, max_iter=1000)
    model.fit(features, labels, sample_weight=weights)
    return model.coef_[0, 0], model.intercept_[0] if fit_intercept else 0.0


@pytest.mark.parametrize("intercept", [False, True])
def test_the_fit_is_scikit_learn_s_logistic_regression_on_platt_s_targets(intercept):
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=500)
    y = (rng.random(500) < expit(0.4 * z + 0.3)).astype(int)
    n_positive, n_negative = y.sum(), len(y) - y.sum()
    targets = np.where(y == 1, (n_positive + 1) / (n_positive + 2), 1 / (n_negative + 2))
    expected = _soft_logistic_regression(z, targets, intercept)
    np.testing.assert_allclose(fit_sigmoid(z, y, intercept=intercept), expected, rtol=1e-4, atol=1e-6)


def test_an_estimator_without_decision_function_is_calibrated_on_its_clipped_logits():
    # KNN says exactly 0 or 1 for many images: taken as 1e-7 from them, as
    # float32 probabilities carry nothing closer, they do not drive the scale to 0.
    X, Y = calibration_world(4000, n_labels=2, random_state=7)
    X_test, Y_test = calibration_world(4000, n_labels=2, random_state=8)
    knn = KNeighborsClassifier(15)
    raw = clone(knn).fit(X, Y).predict_proba(X_test)
    raw = np.stack([p[:, 1] for p in raw], axis=1)
    assert ((raw == 0) | (raw == 1)).mean() > 0.05
    calibrated = MultilabelCalibratedClassifierCV(knn, cv=3).fit(X, Y)
    # Taken at their face value (logit(0) = -708), the few exact zeros among
    # the positives would shrink the scale towards 0 and every probability
    # towards 0.5.
    assert (calibrated.coef_ > 0.2).all()
    assert (_ece(Y_test, calibrated.predict_proba(X_test)) < 0.1).all()


def test_calibrated_logits_keep_the_order_where_probabilities_saturate():
    X, Y = calibration_world(4000, n_labels=1, random_state=10)
    fitted = FixedScoreClassifier(sharpness=1.0).fit(X, Y[:, 0])
    calibrated = MultilabelCalibratedClassifierCV(fitted, cv="prefit").fit(X, Y[:, 0])
    extreme = np.array([[40.0], [45.0], [-40.0], [-45.0]])
    assert len(set(calibrated.predict_proba(extreme)[:, 1])) < 4  # float64 saturates
    assert len(set(calibrated.decision_function(extreme))) == 4  # the logits do not
    isotonic = MultilabelCalibratedClassifierCV(fitted, method="isotonic", cv="prefit")
    assert not hasattr(isotonic.fit(X, Y[:, 0]), "decision_function")


def test_prefit_refuses_labels_in_another_order_than_the_estimator_s(scored_model_dir):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 32)).astype(np.float32)
    Y = pd.DataFrame(rng.integers(0, 2, size=(40, 2)), columns=["Effusion", "Mass"])
    fitted = TextAnchoredClassifier(device="cpu").fit(X, Y)
    with pytest.raises(ValueError, match=r"\['Mass', 'Effusion'\] are not in the order.*"
                                         r"\['Effusion', 'Mass'\]"):
        MultilabelCalibratedClassifierCV(fitted, cv="prefit").fit(X, Y[["Mass", "Effusion"]])


def test_groups_with_a_splitter_that_ignores_them_are_warned_about():
    X, Y = calibration_world(60)
    with pytest.warns(UserWarning, match="does not split by group"):
        MultilabelCalibratedClassifierCV(FixedScoreClassifier(), cv=KFold(3)).fit(
            X, Y, groups=np.arange(60) // 2
        )


def test_a_one_column_dataframe_is_one_named_label():
    X, Y = calibration_world(300, n_labels=1, random_state=9)
    Y = pd.DataFrame(Y, columns=["Hernia"])
    calibrated = MultilabelCalibratedClassifierCV(FixedScoreClassifier(), cv=3).fit(X, Y)
    assert calibrated.task_ == "multilabel" and list(calibrated.labels_) == ["Hernia"]
    assert calibrated.predict(X).shape == (300, 1)


def test_a_separable_label_gets_a_finite_scale():
    z = np.linspace(-3, 3, 40)
    y = (z > 0).astype(int)
    scale, _ = fit_sigmoid(z, y, intercept=False)
    assert np.isfinite(scale) and scale > 1


def _out_of_fold_logits(estimator, X, Y, folds):
    logits = np.empty(Y.shape)
    for train, test in folds:
        logits[test] = clone(estimator).fit(X[train], Y[train]).decision_function(X[test])
    return logits


def test_isotonic_maps_are_scikit_learn_s_on_the_out_of_fold_logits():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    Y = (X[:, :2] + rng.normal(size=(300, 2)) > 0).astype(int)
    estimator = TextAnchoredClassifier(device="cpu")
    folds = list(KFold(3).split(X))
    calibrated = MultilabelCalibratedClassifierCV(estimator, method="isotonic", cv=KFold(3)).fit(X, Y)
    oof = _out_of_fold_logits(estimator, X, Y, folds)
    refitted = clone(estimator).fit(X, Y).decision_function(X)
    for k in range(2):
        expected = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(oof[:, k], Y[:, k])
        np.testing.assert_allclose(
            calibrated.predict_proba(X)[:, k], expected.predict(refitted[:, k]), rtol=1e-12
        )


def test_patient_groups_never_cross_the_calibration_folds():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=200)
    X = np.column_stack([groups, rng.normal(size=(200, 2))])
    Y = rng.integers(0, 2, size=(200, 2))
    GroupRecorder.log = []
    MultilabelCalibratedClassifierCV(GroupRecorder(), cv=4).fit(X, Y, groups=groups)
    assert len(GroupRecorder.log) == 4
    for trained_on, asked_about in GroupRecorder.log:
        assert trained_on.isdisjoint(asked_about)
    assert set().union(*(asked for _, asked in GroupRecorder.log)) == set(groups)


def test_a_label_without_positives_in_a_training_fold_is_named_and_kept():
    X, Y = calibration_world(600, n_labels=3, random_state=2)
    groups = np.arange(600) % 6
    Y[:, 2] = groups == 0  # the third label: positives of patient 0 only
    Y = pd.DataFrame(Y, columns=["Mass", "Nodule", "Hernia"])
    estimator = FixedScoreClassifier(sharpness=4.0)
    with pytest.warns(UserWarning) as caught:
        calibrated = MultilabelCalibratedClassifierCV(estimator, cv=3).fit(X, Y, groups=groups)
    messages = " ".join(str(w.message) for w in caught)
    assert "'Hernia' in fold(s)" in messages and "of 3" in messages
    assert "['Hernia']" in messages and "keep the estimator's own probabilities" in messages
    assert calibrated.uncalibrated_labels_ == ["Hernia"]
    proba = calibrated.predict_proba(X)
    np.testing.assert_allclose(proba[:, 2], estimator.predict_proba(X)[:, 2], rtol=1e-12)
    assert calibrated.coef_[0] < 0.5  # the other labels are calibrated


def test_prefit_calibrates_on_the_validation_data_without_refitting():
    (X, Y), (X_val, Y_val) = calibration_world(3000, random_state=0), calibration_world(3000, random_state=1)
    fitted = FixedScoreClassifier(sharpness=3.0).fit(X, Y)
    calibrated = MultilabelCalibratedClassifierCV(fitted, cv="prefit").fit(X_val, Y_val)
    assert calibrated.estimator_ is fitted
    for k in range(3):
        expected = fit_sigmoid(3.0 * X_val[:, k], Y_val[:, k], intercept=False)[0]
        np.testing.assert_allclose(calibrated.coef_[k], expected, rtol=1e-10)
    with pytest.raises(ValueError, match='groups are not used with cv="prefit"'):
        calibrated.fit(X_val, Y_val, groups=np.arange(len(X_val)))


def test_a_binary_y_gives_two_columns_and_its_classes():
    X, Y = calibration_world(2000, n_labels=1, random_state=4)
    y = np.where(Y[:, 0] == 1, "effusion", "clear")
    calibrated = MultilabelCalibratedClassifierCV(LogisticRegression(), cv=3).fit(X, y)
    proba = calibrated.predict_proba(X)
    assert proba.shape == (2000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(calibrated.predict(X)) <= {"clear", "effusion"}
    assert list(calibrated.classes_) == ["clear", "effusion"]


def test_a_list_of_per_label_probabilities_is_read_as_one_column_each():
    X, Y = calibration_world(400, n_labels=2, random_state=5)
    calibrated = MultilabelCalibratedClassifierCV(KNeighborsClassifier(25), cv=3).fit(X, Y)
    assert calibrated.predict_proba(X).shape == (400, 2)
    assert calibrated.predict(X).shape == (400, 2)


def test_dataframe_labels_reach_the_estimator_and_name_the_labels(scored_model_dir):

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 32)).astype(np.float32)
    Y = pd.DataFrame(rng.integers(0, 2, size=(90, 2)), columns=["Mass", "Effusion"])
    zero_shot = ZeroShotClassifier(scored_model_dir, labels=["Mass", "Effusion"], device="cpu")
    calibrated = MultilabelCalibratedClassifierCV(zero_shot, cv=3).fit(X, Y)
    assert list(calibrated.labels_) == ["Mass", "Effusion"]
    assert list(calibrated.estimator_.labels_) == ["Mass", "Effusion"]
    # Temperature scaling of zero-shot keeps its ranking.
    raw = calibrated.estimator_.predict_proba(X)
    proba = calibrated.predict_proba(X)
    for k in range(2):
        assert np.array_equal(np.argsort(raw[:, k], kind="stable"), np.argsort(proba[:, k], kind="stable"))


def test_skops_round_trip(tmp_path):
    X, Y = calibration_world(600, random_state=6)
    for method in ("temperature", "sigmoid", "isotonic"):
        calibrated = MultilabelCalibratedClassifierCV(
            TextAnchoredClassifier(device="cpu"), method=method, cv=3
        ).fit(X, Y)
        save(calibrated, tmp_path / f"{method}.skops")
        loaded = load(tmp_path / f"{method}.skops")
        np.testing.assert_array_equal(loaded.predict_proba(X), calibrated.predict_proba(X))


# Bad input ------------------------------------------------------------------------------


def test_an_estimator_without_predict_proba_is_refused_before_fitting():
    X, Y = calibration_world(50, n_labels=1)
    with pytest.raises(InvalidParameterError, match="predict_proba"):
        MultilabelCalibratedClassifierCV(LinearSVC()).fit(X, Y[:, 0])


def test_a_multiclass_y_is_refused_with_what_to_use():
    X = np.random.default_rng(0).normal(size=(60, 3))
    with pytest.raises(ValueError, match="3 class.*CalibratedClassifierCV"):
        MultilabelCalibratedClassifierCV(LogisticRegression()).fit(X, np.arange(60) % 3)


def test_probabilities_of_the_wrong_width_are_refused():
    X, Y = calibration_world(60, n_labels=3)
    with pytest.raises(ValueError, match=r"decision_function gives shape \(20, 2\); expected \(20, 3\)"):
        MultilabelCalibratedClassifierCV(FixedScoreClassifier(), cv=3).fit(X[:, :2], Y)


def test_labels_other_than_0_and_1_are_refused_naming_the_column():
    X, Y = calibration_world(60, n_labels=2)
    Y = pd.DataFrame(Y * 2, columns=["Mass", "Nodule"])
    with pytest.raises(ValueError, match="column 'Mass' holds"):
        MultilabelCalibratedClassifierCV(FixedScoreClassifier()).fit(X, Y)


def test_an_unknown_method_is_refused():
    X, Y = calibration_world(60)
    with pytest.raises(InvalidParameterError, match="method"):
        MultilabelCalibratedClassifierCV(FixedScoreClassifier(), method="beta").fit(X, Y)


def test_no_warning_on_a_clean_fit(overconfident):
    (X, Y), _ = overconfident
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultilabelCalibratedClassifierCV(FixedScoreClassifier(), cv=3).fit(X[:2000], Y[:2000])
