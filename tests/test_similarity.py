"""PromptSimilarity against NumPy cosines and ZeroShotClassifier's logits; pipelines."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline

from skclipxray import BaselineClassifier
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.persistence import load, save
from skclipxray.prompts import NEGATIVE_TEMPLATES, PromptEnsembleEmbedder
from skclipxray.similarity import PromptSimilarity
from skclipxray.zeroshot import ZeroShotClassifier

from conftest import LOGIT_BIAS, LOGIT_SCALE

WIDTH = 32  # the tiny checkpoint's embedding width


@pytest.fixture(scope="module")
def X():
    """Image embeddings of the tiny checkpoint's width, of varied norms."""
    rng = np.random.default_rng(0)
    return (rng.normal(size=(12, WIDTH)) * rng.uniform(0.5, 3.0, size=(12, 1))).astype(
        np.float32
    )


def _cosines(images, prompts):
    """Reference cosines, written out with NumPy alone."""
    images = np.asarray(images, dtype=np.float64)
    prompts = np.asarray(prompts, dtype=np.float64)
    images = images / np.sqrt((images**2).sum(axis=1, keepdims=True))
    prompts = prompts / np.sqrt((prompts**2).sum(axis=1, keepdims=True))
    return images @ prompts.T


def _embedder(folder, **params):
    return PromptEnsembleEmbedder(folder, device="cpu", **params)


# --- values ---------------------------------------------------------------


def test_cosine_of_array_prompts_matches_numpy(X):
    prompts = np.random.default_rng(1).normal(size=(3, WIDTH)) * [[0.5], [2.0], [7.0]]
    similarity = PromptSimilarity(prompts).fit(X)
    out = similarity.transform(X)
    assert out.shape == (len(X), 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, _cosines(X, prompts), rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(out) <= 1 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(similarity.prompt_embeddings_, axis=1), 1, rtol=1e-6)
    assert similarity.logit_scale_ is None and similarity.logit_bias_ is None
    assert not hasattr(similarity, "negative_prompt_embeddings_")


def test_cosine_of_embedder_matches_its_embeddings(tiny_model_dir, X):
    reference = _embedder(tiny_model_dir).fit(NIH_PATHOLOGIES)
    similarity = PromptSimilarity(_embedder(tiny_model_dir)).fit(X)
    np.testing.assert_allclose(
        similarity.transform(X), _cosines(X, reference.embeddings_), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        similarity.prompt_embeddings_, reference.embeddings_, rtol=1e-5, atol=1e-6
    )
    assert similarity.logit_scale_ == pytest.approx(reference.logit_scale_)
    assert similarity.logit_bias_ == pytest.approx(reference.logit_bias_)


def test_logit_of_array_prompts_is_scaled_cosine_plus_bias(X):
    prompts = np.random.default_rng(2).normal(size=(4, WIDTH))
    cosines = _cosines(X, prompts)
    logits = PromptSimilarity(
        prompts, logit_scale=LOGIT_SCALE, logit_bias=LOGIT_BIAS, output="logit"
    ).fit_transform(X)
    np.testing.assert_allclose(logits, 8.0 * cosines - 1.5, rtol=1e-5, atol=1e-5)
    # logit_bias defaults to 0 once logit_scale is given.
    unbiased = PromptSimilarity(prompts, logit_scale=LOGIT_SCALE, output="logit").fit_transform(X)
    np.testing.assert_allclose(unbiased, 8.0 * cosines, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("checkpoint", ["tiny_model_dir", "scored_model_dir"])
def test_logit_equals_zero_shot_decision_function(checkpoint, request, X):
    folder = request.getfixturevalue(checkpoint)
    embedder = _embedder(folder).fit(NIH_PATHOLOGIES)
    logits = PromptSimilarity(_embedder(folder), output="logit").fit_transform(X)
    scale, bias = math.exp(embedder.logit_scale_), embedder.logit_bias_
    np.testing.assert_allclose(
        logits, scale * _cosines(X, embedder.embeddings_) + bias, rtol=1e-5, atol=1e-5
    )
    zero_shot = ZeroShotClassifier(folder, device="cpu").fit(X).decision_function(X)
    np.testing.assert_allclose(logits, zero_shot, rtol=1e-6, atol=1e-6)


def test_scored_checkpoint_brings_its_scale_and_bias(scored_model_dir, X):
    similarity = PromptSimilarity(_embedder(scored_model_dir), output="logit").fit(X)
    assert similarity.logit_scale_ == pytest.approx(LOGIT_SCALE, rel=1e-6)
    assert similarity.logit_bias_ == pytest.approx(LOGIT_BIAS, rel=1e-6)
    # Given values override the embedder's.
    overridden = PromptSimilarity(
        _embedder(scored_model_dir), logit_scale=0.0, logit_bias=2.0, output="logit"
    ).fit(X)
    np.testing.assert_allclose(
        overridden.transform(X), similarity.transform(X) / 8.0 + 1.5 / 8.0 + 2.0,
        rtol=1e-5, atol=1e-5,
    )


def test_negative_templates_give_positive_minus_negative(scored_model_dir, X):
    params = dict(negative_templates=NEGATIVE_TEMPLATES)
    reference = _embedder(scored_model_dir, **params).fit(NIH_PATHOLOGIES)
    difference = _cosines(X, reference.embeddings_) - _cosines(X, reference.negative_embeddings_)

    similarity = PromptSimilarity(_embedder(scored_model_dir, **params)).fit(X)
    np.testing.assert_allclose(similarity.transform(X), difference, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(similarity.transform(X)) <= 2 + 1e-6)
    np.testing.assert_allclose(
        similarity.negative_prompt_embeddings_, reference.negative_embeddings_,
        rtol=1e-5, atol=1e-6,
    )
    # As logits: the scale times the difference, the bias cancelling.
    logits = PromptSimilarity(
        _embedder(scored_model_dir, **params), output="logit"
    ).fit_transform(X)
    np.testing.assert_allclose(logits, 8.0 * difference, rtol=1e-5, atol=1e-5)
    zero_shot = ZeroShotClassifier(scored_model_dir, device="cpu", **params).fit(X)
    np.testing.assert_allclose(logits, zero_shot.decision_function(X), rtol=1e-6, atol=1e-6)


def test_refit_without_negative_templates_drops_them(tiny_model_dir, X):
    similarity = PromptSimilarity(_embedder(tiny_model_dir, negative_templates=NEGATIVE_TEMPLATES))
    similarity.fit(X)
    assert hasattr(similarity, "negative_prompt_embeddings_")
    similarity.set_params(prompts=_embedder(tiny_model_dir)).fit(X)
    assert not hasattr(similarity, "negative_prompt_embeddings_")
    reference = _embedder(tiny_model_dir).fit(NIH_PATHOLOGIES)
    np.testing.assert_allclose(
        similarity.transform(X), _cosines(X, reference.embeddings_), rtol=1e-5, atol=1e-6
    )


# --- label names ------------------------------------------------------------


def test_feature_names_from_labels(X):
    prompts = np.random.default_rng(3).normal(size=(3, WIDTH))
    names = ["Mass", "Nodule", "Hernia"]
    similarity = PromptSimilarity(prompts, labels=names).fit(X)
    assert list(similarity.get_feature_names_out()) == names
    assert list(similarity.labels_) == names
    # labels= wins over y's columns.
    y = pd.DataFrame(np.zeros((len(X), 3), dtype=int), columns=["a", "b", "c"])
    assert list(PromptSimilarity(prompts, labels=names).fit(X, y).get_feature_names_out()) == names


def test_feature_names_of_unnamed_array_prompts(X):
    prompts = np.random.default_rng(3).normal(size=(3, WIDTH))
    names = PromptSimilarity(prompts).fit(X).get_feature_names_out()
    assert list(names) == ["label_0", "label_1", "label_2"]


def test_feature_names_and_prompts_from_dataframe_y(tiny_model_dir, X):
    y = pd.DataFrame(np.zeros((len(X), 2), dtype=int), columns=["Mass", "Nodule"])
    similarity = PromptSimilarity(_embedder(tiny_model_dir)).fit(X, y)
    assert list(similarity.get_feature_names_out()) == ["Mass", "Nodule"]
    # The embedder embedded y's labels, in y's order.
    reference = _embedder(tiny_model_dir).fit(["Mass", "Nodule"])
    np.testing.assert_allclose(
        similarity.transform(X), _cosines(X, reference.embeddings_), rtol=1e-5, atol=1e-6
    )


def test_feature_names_default_to_embedder_nih_labels(tiny_model_dir, X):
    similarity = PromptSimilarity(_embedder(tiny_model_dir)).fit(X)
    assert list(similarity.get_feature_names_out()) == list(NIH_PATHOLOGIES)
    assert similarity.transform(X).shape == (len(X), len(NIH_PATHOLOGIES))


def test_set_output_pandas_names_columns_by_label(X):
    prompts = np.random.default_rng(4).normal(size=(2, WIDTH))
    frame = pd.DataFrame(X, index=[f"img{i}" for i in range(len(X))])
    frame.columns = [f"f{j}" for j in range(WIDTH)]
    similarity = PromptSimilarity(prompts, labels=["Mass", "Nodule"]).set_output(
        transform="pandas"
    )
    out = similarity.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["Mass", "Nodule"]
    assert list(out.index) == list(frame.index)
    np.testing.assert_allclose(out.to_numpy(), _cosines(X, prompts), rtol=1e-6, atol=1e-6)
    assert list(similarity.feature_names_in_) == list(frame.columns)


# --- pipelines ----------------------------------------------------------------


def _fusion_data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 8)).astype(np.float32)
    prompts = rng.normal(size=(3, 8))
    Y = pd.DataFrame(
        (X @ prompts.T + rng.normal(scale=0.5, size=(80, 3)) > 0).astype(int),
        columns=["Mass", "Nodule", "Hernia"],
    )
    return X, Y, prompts


def test_feature_union_stacks_embedding_and_similarities():
    X, Y, prompts = _fusion_data()
    union = FeatureUnion([
        ("image", "passthrough"),
        ("text", PromptSimilarity(prompts, labels=list(Y.columns))),
    ])
    out = union.fit_transform(X)
    assert out.shape == (len(X), 8 + 3)
    np.testing.assert_allclose(out[:, :8], X)
    np.testing.assert_allclose(out[:, 8:], _cosines(X, prompts), rtol=1e-6, atol=1e-6)
    assert list(union.get_feature_names_out()) == (
        [f"image__x{j}" for j in range(8)] + ["text__Mass", "text__Nodule", "text__Hernia"]
    )


def test_feature_union_before_logistic_regression():
    X, Y, prompts = _fusion_data()
    y = Y["Mass"].to_numpy()
    fusion = make_pipeline(
        FeatureUnion([("image", "passthrough"), ("text", PromptSimilarity(prompts))]),
        LogisticRegression(),
    ).fit(X, y)
    assert fusion[-1].coef_.shape == (1, 8 + 3)
    # The same as fitting the regression on the stacked features by hand.
    features = np.hstack([X, _cosines(X, prompts)])
    reference = LogisticRegression().fit(features, y)
    np.testing.assert_allclose(
        fusion.predict_proba(X), reference.predict_proba(features), rtol=1e-4, atol=1e-4
    )


def test_feature_union_before_baseline_classifier():
    X, Y, prompts = _fusion_data()
    head_params = dict(hidden_sizes=(8,), max_epochs=3, batch_size=16, random_state=0)
    fusion = make_pipeline(
        FeatureUnion([("image", "passthrough"), ("text", PromptSimilarity(prompts))]),
        BaselineClassifier(**head_params),
    ).fit(X, Y)
    proba = fusion.predict_proba(X)
    assert proba.shape == Y.shape
    assert fusion[-1].n_features_in_ == 8 + 3
    assert list(fusion[-1].labels_) == list(Y.columns)
    # The same as fitting the head on the union's output by hand (the
    # union's values are checked against NumPy above; a head trained on
    # features that differ in their last bits could drift further).
    features = fusion[0].transform(X)
    reference = BaselineClassifier(**head_params).fit(features, Y)
    np.testing.assert_allclose(proba, reference.predict_proba(features), rtol=1e-4, atol=1e-5)


# --- bad input ----------------------------------------------------------------


def test_prompt_width_differs_from_x_width(X):
    prompts = np.ones((3, WIDTH + 4))
    message = rf"X has {WIDTH} features but the prompt embeddings have {WIDTH + 4}"
    with pytest.raises(ValueError, match=message):
        PromptSimilarity(prompts).fit(X)


def test_transform_width_differs_from_fit(X):
    similarity = PromptSimilarity(np.ones((2, WIDTH))).fit(X)
    message = rf"X has {WIDTH - 1} features, but PromptSimilarity is expecting {WIDTH}"
    with pytest.raises(ValueError, match=message):
        similarity.transform(X[:, :-1])


def test_logit_of_array_prompts_needs_logit_scale(X):
    with pytest.raises(ValueError, match="pass logit_scale="):
        PromptSimilarity(np.ones((2, WIDTH)), output="logit").fit(X)
    # Fitted for cosines, then asked for logits.
    similarity = PromptSimilarity(np.ones((2, WIDTH))).fit(X).set_params(output="logit")
    with pytest.raises(ValueError, match="logit_scale"):
        similarity.transform(X)


def test_labels_length_differs_from_prompt_rows(X):
    with pytest.raises(ValueError, match="prompts has 3 rows but .* 2 labels"):
        PromptSimilarity(np.ones((3, WIDTH)), labels=["Mass", "Nodule"]).fit(X)


def test_no_prompts(X):
    with pytest.raises(ValueError, match="PromptSimilarity needs prompts"):
        PromptSimilarity().fit(X)


def test_bad_output_option(X):
    with pytest.raises(ValueError, match="'output' parameter of PromptSimilarity"):
        PromptSimilarity(np.ones((2, WIDTH)), output="probability").fit(X)


@pytest.mark.parametrize("where", ["fit", "transform"])
def test_nan_in_x(where, X):
    bad = X.copy()
    bad[1, 2] = np.nan
    similarity = PromptSimilarity(np.ones((2, WIDTH)))
    if where == "transform":
        similarity.fit(X)
        call = similarity.transform
    else:
        call = similarity.fit
    with pytest.raises(ValueError, match="Input X contains NaN"):
        call(bad)


def test_unfitted_transform_raises(X):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PromptSimilarity(np.ones((2, WIDTH))).transform(X)


# --- persistence --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "embedder"])
def test_skops_round_trip(kind, scored_model_dir, X, tmp_path):
    if kind == "array":
        similarity = PromptSimilarity(
            np.random.default_rng(6).normal(size=(3, WIDTH)), labels=["Mass", "Nodule", "Hernia"],
            logit_scale=LOGIT_SCALE, logit_bias=LOGIT_BIAS, output="logit",
        )
    else:
        similarity = PromptSimilarity(
            _embedder(scored_model_dir, negative_templates=NEGATIVE_TEMPLATES), output="logit"
        )
    similarity.fit(X)
    path = tmp_path / "similarity.skops"
    save(similarity, path)
    loaded = load(path)
    assert type(loaded) is PromptSimilarity
    np.testing.assert_array_equal(loaded.transform(X), similarity.transform(X))
    np.testing.assert_array_equal(
        loaded.get_feature_names_out(), similarity.get_feature_names_out()
    )
    assert loaded.logit_scale_ == similarity.logit_scale_
    assert loaded.logit_bias_ == similarity.logit_bias_
