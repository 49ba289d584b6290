"""TextAnchoredClassifier and TipAdapterClassifier against zero-shot, scikit-learn and NumPy."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler, normalize

import skclipxray.tip_adapter as tip_adapter
from skclipxray import SigLIPImageEmbedder, load_backbone
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.metrics import multilabel_scorers
from skclipxray.persistence import load, save
from skclipxray.prompts import NEGATIVE_TEMPLATES, PromptEnsembleEmbedder
from skclipxray.testing import HashPromptEmbedder
from skclipxray.text_anchored import TextAnchoredClassifier
from skclipxray.tip_adapter import TipAdapterClassifier
from skclipxray.zeroshot import ZeroShotClassifier

from conftest import LOGIT_BIAS, LOGIT_SCALE

LABELS = ["Mass", "Nodule", "Effusion"]
HEADS = [TextAnchoredClassifier, TipAdapterClassifier]


@pytest.fixture(scope="module")
def world():
    """Embeddings with a planted label signal, and prompts that point at it."""
    rng = np.random.default_rng(0)
    n, d = 240, 32
    directions = rng.normal(size=(len(LABELS), d))
    Y = (rng.random((n, len(LABELS))) < 0.35).astype(int)
    X = 3.0 + Y @ directions + rng.normal(size=(n, d)) * 2.0
    prompts = directions + rng.normal(size=directions.shape)
    return X, pd.DataFrame(Y, columns=LABELS), prompts


def _features(X):
    """What TextAnchoredClassifier's linear part sees: standardised [f̂, f]."""
    return StandardScaler().fit_transform(np.hstack([normalize(X), X]))


# Zero-shot before any training -------------------------------------------------------


def _untrained(head_class, prompts):
    if head_class is TextAnchoredClassifier:
        return TextAnchoredClassifier(prompts, max_iter=0, device="cpu")
    return TipAdapterClassifier(prompts, alpha=0.0, device="cpu")


@pytest.mark.parametrize("negative", [False, True], ids=["positive", "pos-vs-neg"])
@pytest.mark.parametrize("head_class", HEADS)
def test_untrained_equals_zero_shot(scored_model_dir, head_class, negative):
    templates = dict(negative_templates=NEGATIVE_TEMPLATES) if negative else {}
    X = np.random.default_rng(1).normal(size=(20, 32))
    Y = pd.DataFrame((np.arange(20)[:, None] + np.arange(14)) % 3 == 0, columns=NIH_PATHOLOGIES)
    Y = Y.astype(int)
    zero_shot = ZeroShotClassifier(scored_model_dir, device="cpu", **templates).fit(X, Y)
    prompts = PromptEnsembleEmbedder(scored_model_dir, device="cpu", **templates)
    head = _untrained(head_class, prompts).fit(X, Y)
    np.testing.assert_array_equal(head.predict_proba(X), zero_shot.predict_proba(X))
    assert head.logit_scale_ == pytest.approx(LOGIT_SCALE)
    assert head.logit_bias_ == pytest.approx(LOGIT_BIAS)


@pytest.mark.parametrize("head_class", HEADS)
def test_untrained_equals_siglip_logits_per_image(scored_model_dir, head_class):
    """Against transformers alone: sigmoid(logits_per_image), one prompt per label."""
    from transformers import AutoProcessor, SiglipModel

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)) for _ in range(6)]
    backbone = load_backbone(scored_model_dir, device="cpu")
    with torch.no_grad():
        X = backbone.model.get_image_features(
            **backbone.image_processor(images=images, return_tensors="pt")
        ).pooler_output.numpy()
    Y = pd.DataFrame(np.eye(6, 14, dtype=int), columns=NIH_PATHOLOGIES)
    prompts = PromptEnsembleEmbedder(scored_model_dir, templates=["{}"], device="cpu")
    proba = _untrained(head_class, prompts).fit(X, Y).predict_proba(X)

    processor = AutoProcessor.from_pretrained(scored_model_dir)
    model = SiglipModel.from_pretrained(scored_model_dir).eval()
    phrases = [label.replace("_", " ").lower() for label in NIH_PATHOLOGIES]
    inputs = processor(text=phrases, images=images, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        logits = model(
            input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]
        ).logits_per_image
    np.testing.assert_allclose(proba, torch.sigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)


# TextAnchoredClassifier against scikit-learn ------------------------------------------


@pytest.mark.parametrize("raw_features", [False, True])
def test_anchor_weight_zero_is_a_plain_logistic_regression(raw_features):
    # Labels drawn from a logistic model: not separable, so the unpenalised
    # optimum is unique and both solvers can reach it.
    rng = np.random.default_rng(0)
    X = 2.0 + rng.normal(size=(600, 6)) * rng.uniform(0.5, 2.0, size=(600, 1))
    Y = (rng.random((600, 3)) < expit(X @ rng.normal(size=(6, 3)) - 4.0)).astype(int)
    prompts = rng.normal(size=(3, 6))
    head = TextAnchoredClassifier(
        prompts, logit_scale=np.log(10.0), anchor_weight=0.0, raw_features=raw_features,
        tol=1e-8, max_iter=5000, device="cpu",
    ).fit(X, Y)
    G = _features(X) if raw_features else StandardScaler().fit_transform(normalize(X))
    for k in range(3):
        reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(G, Y[:, k])
        np.testing.assert_allclose(
            head.predict_proba(X)[:, k], reference.predict_proba(G)[:, 1], atol=1e-5
        )


@pytest.mark.parametrize("raw_features", [True, False])
def test_without_prompts_it_is_an_l2_logistic_regression(world, raw_features):
    """``(1/n) Σ loss + λ‖θ‖²`` is scikit-learn's ``C Σ loss + ½‖θ‖²`` with C = 1/(2nλ)."""
    X, Y, _ = world
    lam = 0.02
    head = TextAnchoredClassifier(
        anchor_weight=lam, raw_features=raw_features, tol=1e-10, device="cpu"
    ).fit(X, Y)
    G = StandardScaler().fit_transform(np.hstack([normalize(X), X]) if raw_features else normalize(X))
    for k, label in enumerate(LABELS):
        reference = LogisticRegression(C=1 / (2 * len(X) * lam), tol=1e-12, max_iter=10_000)
        reference.fit(G, Y[label])
        np.testing.assert_allclose(head.coef_[k], reference.coef_[0], rtol=1e-4, atol=1e-7)
        assert head.intercept_[k] == pytest.approx(reference.intercept_[0], abs=1e-6)


def test_a_multiclass_y_is_a_multinomial_logistic_regression(world):
    X, Y, _ = world
    y = Y.to_numpy().argmax(axis=1)  # three classes
    lam = 0.01
    head = TextAnchoredClassifier(
        anchor_weight=lam, raw_features=True, tol=1e-10, device="cpu"
    ).fit(X, y)
    reference = LogisticRegression(C=1 / (2 * len(X) * lam), tol=1e-12, max_iter=10_000)
    reference.fit(_features(X), y)
    np.testing.assert_allclose(
        head.predict_proba(X), reference.predict_proba(_features(X)), atol=1e-6
    )
    np.testing.assert_array_equal(head.classes_, [0, 1, 2])


def test_a_binary_y_is_a_logistic_regression_with_half_the_penalty(world):
    """Two logits, each penalised: C = 1/(nλ) for a binary y."""
    X, Y, _ = world
    lam = 0.01
    head = TextAnchoredClassifier(anchor_weight=lam, tol=1e-10, device="cpu").fit(X, Y["Mass"])
    G = StandardScaler().fit_transform(normalize(X))
    reference = LogisticRegression(C=1 / (len(X) * lam), tol=1e-12, max_iter=10_000)
    reference.fit(G, Y["Mass"])
    np.testing.assert_allclose(head.decision_function(X), reference.decision_function(G),
                               atol=1e-6)


def test_binary_y_with_one_prompt_per_class(world):
    X, Y, prompts = world
    y = np.where(Y["Mass"] == 1, "Mass", "no Mass")
    head = TextAnchoredClassifier(
        prompts[:2], logit_scale=np.log(10.0), max_iter=0, device="cpu"
    ).fit(X, y)
    # Two classes, one prompt each: the softmax of the two zero-shot logits.
    cosine = normalize(X) @ normalize(prompts[:2]).T
    np.testing.assert_allclose(head.predict_proba(X), softmax(10.0 * cosine, axis=1), atol=1e-6)
    np.testing.assert_allclose(
        head.decision_function(X), 10.0 * (cosine[:, 1] - cosine[:, 0]), atol=1e-5
    )
    assert set(head.predict(X)) <= {"Mass", "no Mass"}


# The anchor ---------------------------------------------------------------------------


def test_inverse_positives_anchor_weight_is_one_over_the_positives_of_each_label(world):
    X, Y, prompts = world
    head = TextAnchoredClassifier(
        prompts, logit_scale=1.0, anchor_weight="inverse_positives", device="cpu"
    ).fit(X, Y)
    np.testing.assert_allclose(head.anchor_weight_, 1.0 / Y.sum(axis=0).to_numpy())


def test_auto_anchor_weight_is_the_sum_of_both_rules(world):
    X, Y, prompts = world
    weights = {
        rule: TextAnchoredClassifier(prompts, logit_scale=1.0, anchor_weight=rule, max_iter=0)
        .fit(X, Y).anchor_weight_
        for rule in ("auto", "inverse_positives", "clap")
    }
    np.testing.assert_allclose(
        weights["auto"], weights["inverse_positives"] + weights["clap"], rtol=1e-12
    )
    # Without prompts, CLAP's rule has nothing to read: 1 / n_k alone.
    no_text = TextAnchoredClassifier(max_iter=0).fit(X, Y)
    np.testing.assert_allclose(no_text.anchor_weight_, weights["inverse_positives"])


def test_clap_anchor_weight_is_the_mean_zero_shot_softmax_of_the_positives_above_chance(world):
    X, Y, prompts = world
    scale = np.log(10.0)
    head = TextAnchoredClassifier(
        prompts, logit_scale=scale, logit_bias=-2.0, anchor_weight="clap", device="cpu"
    ).fit(X, Y)
    zero_shot = 10.0 * normalize(X) @ normalize(prompts).T - 2.0
    fit = softmax(zero_shot, axis=1)
    # In logits (scale 10, squared) on standardised coordinates of f̂.
    variance = normalize(X).var(axis=0).mean()
    above_chance = [(fit[Y[label] == 1, k].mean() - 1 / 3) / (2 / 3) for k, label in enumerate(LABELS)]
    expected = np.clip(above_chance, 0, None) / (100.0 * variance)
    np.testing.assert_allclose(head.anchor_weight_, expected, rtol=1e-6)


def test_a_stronger_anchor_keeps_the_head_nearer_zero_shot(world):
    X, Y, prompts = world
    zero_shot = TextAnchoredClassifier(prompts, logit_scale=2.0, max_iter=0, device="cpu")
    reference = zero_shot.fit(X, Y).decision_function(X)
    distances = [
        np.abs(
            TextAnchoredClassifier(prompts, logit_scale=2.0, anchor_weight=weight, device="cpu")
            .fit(X, Y).decision_function(X) - reference
        ).mean()
        for weight in (100.0, 1.0, 0.01)
    ]
    assert distances[0] < distances[1] < distances[2]


def test_per_label_anchor_weights(world):
    X, Y, prompts = world
    head = TextAnchoredClassifier(
        prompts, logit_scale=2.0, anchor_weight=[100.0, 0.01, 0.5], device="cpu"
    ).fit(X, Y)
    np.testing.assert_array_equal(head.anchor_weight_, [100.0, 0.01, 0.5])
    # The first label is held near zero-shot, the second is free to move.
    assert np.abs(head.coef_[0]).max() < 0.01 * np.abs(head.coef_[1]).max()


def test_learned_text_scale_starts_at_one_and_moves(world):
    X, Y, prompts = world
    rng = np.random.default_rng(3)
    wrong = rng.normal(size=prompts.shape)  # text unrelated to the labels
    head = TextAnchoredClassifier(
        wrong, logit_scale=np.log(20.0), learn_text_scale=True, device="cpu"
    ).fit(X, Y)
    assert head.text_scale_.shape == (3,)
    assert np.all(np.abs(head.text_scale_ - 1.0) > 1e-3)
    fixed = TextAnchoredClassifier(wrong, logit_scale=np.log(20.0), device="cpu").fit(X, Y)
    np.testing.assert_array_equal(fixed.text_scale_, 1.0)


def test_with_prompts_that_fit_the_labels_it_beats_the_no_text_control_on_few_labels(world):
    """The mechanism (synthetic data): the prompts bring what 12 images cannot."""
    from sklearn.metrics import roc_auc_score

    X, Y, prompts = world
    train = np.arange(12)
    test = np.arange(12, len(X))
    scores = {}
    for name, given in (("text", prompts), ("no text", None)):
        head = TextAnchoredClassifier(given, logit_scale=np.log(10.0), device="cpu")
        proba = head.fit(X[train], Y.iloc[train]).predict_proba(X[test])
        scores[name] = roc_auc_score(Y.iloc[test], proba, average="macro")
    assert scores["text"] > scores["no text"] + 0.05


def test_fits_with_one_or_two_threads_agree(world):
    X, Y, prompts = world
    head = TextAnchoredClassifier(prompts, logit_scale=2.0, tol=1e-8, device="cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(head.fit(X, Y).predict_proba(X))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


def test_too_few_iterations_warn(world):
    X, Y, prompts = world
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2\) with a gradient entry"):
        TextAnchoredClassifier(prompts, logit_scale=2.0, max_iter=2, device="cpu").fit(X, Y)


# Tip-Adapter against NumPy -------------------------------------------------------------


def _tip_reference(X_train, Y_train, X, prompts, scale, bias, alpha, beta):
    """Tip-Adapter as its docstring writes it, in NumPy (keys in float32, as the cache keeps them)."""
    train = normalize(X_train)
    keys = train.astype(np.float32).astype(np.float64)
    T = normalize(prompts.astype(np.float32)).astype(np.float64)  # float32, as all prompts
    Y_train = np.asarray(Y_train, dtype=float)
    values = Y_train / Y_train.sum(axis=0) - 1.0 / len(Y_train)
    # Each training image left out of its own cache term (its affinity to itself is 1).
    loo = np.exp(-beta * (1.0 - train @ keys.T)) @ values - values
    spread_ratio = (scale * train @ T.T + bias).std(axis=0) / loo.std(axis=0)
    cache = np.exp(-beta * (1.0 - normalize(X) @ keys.T)) @ values
    return expit(scale * normalize(X) @ T.T + bias + alpha * spread_ratio * cache)


@pytest.mark.parametrize("alpha, beta", [(1.0, 5.5), (3.0, 1.0)])
def test_tip_adapter_matches_a_numpy_reference(world, alpha, beta):
    X, Y, prompts = world
    head = TipAdapterClassifier(
        prompts, logit_scale=np.log(10.0), logit_bias=-1.0, alpha=alpha, beta=beta, device="cpu"
    ).fit(X[:150], Y.iloc[:150])
    expected = _tip_reference(X[:150], Y.iloc[:150], X[150:], prompts, 10.0, -1.0, alpha, beta)
    np.testing.assert_allclose(head.predict_proba(X[150:]), expected, rtol=1e-9, atol=1e-12)


def test_tip_adapter_blocks_give_the_result_of_one_product(world, monkeypatch):
    X, Y, prompts = world
    head = TipAdapterClassifier(prompts, logit_scale=2.0, device="cpu").fit(X, Y)
    whole = head.decision_function(X)
    monkeypatch.setattr(tip_adapter, "_BLOCK_QUERIES", 7)
    monkeypatch.setattr(tip_adapter, "_BLOCK_KEYS", 13)
    np.testing.assert_allclose(head.decision_function(X), whole, rtol=1e-12)


def test_tip_adapter_cache_values_are_centred_multi_hot(world):
    X, Y, prompts = world
    head = TipAdapterClassifier(prompts, logit_scale=2.0, device="cpu").fit(X, Y)
    np.testing.assert_allclose(head.cache_values_.sum(axis=0), 0.0, atol=1e-5)
    positives = Y.to_numpy() == 1
    np.testing.assert_allclose(
        head.cache_values_[positives[:, 0], 0], 1 / positives[:, 0].sum() - 1 / len(X), rtol=1e-6
    )


# Pipelines, persistence, devices --------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, size=(36, 36), dtype=np.uint8)) for _ in range(24)
    ]


@pytest.mark.parametrize(
    "head_class, grid",
    [
        (TextAnchoredClassifier, {"clf__anchor_weight": ["auto", 0.1]}),
        (TipAdapterClassifier, {"clf__alpha": [0.0, 1.0], "clf__beta": [1.0, 5.5]}),
    ],
)
def test_grid_search_in_a_pipeline_from_images(tiny_model_dir, images, head_class, grid):
    Y = pd.DataFrame(
        (np.arange(24)[:, None] + np.arange(3)) % 2, columns=["Mass", "Nodule", "Effusion"]
    )
    pipeline = Pipeline([
        ("embed", SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False)),
        ("clf", head_class(PromptEnsembleEmbedder(tiny_model_dir, device="cpu"), device="cpu")),
    ])
    search = GridSearchCV(
        pipeline, grid, cv=KFold(3), scoring=multilabel_scorers()["roc_auc_macro"]
    ).fit(images, Y)
    assert len(search.cv_results_["params"]) == np.prod([len(v) for v in grid.values()])
    assert search.predict_proba(images[:2]).shape == (2, 3)
    assert list(search.best_estimator_[-1].labels_) == list(Y.columns)


@pytest.mark.parametrize("head_class", HEADS)
def test_skops_round_trip(world, tmp_path, head_class):
    X, Y, prompts = world
    head = head_class(prompts, logit_scale=2.0, device="cpu").fit(X, Y)
    save(head, tmp_path / "head.skops")
    loaded = load(tmp_path / "head.skops")
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert list(loaded.labels_) == LABELS


@pytest.mark.parametrize("head_class", HEADS)
def test_a_head_fitted_on_a_gpu_predicts_on_a_cpu(world, tmp_path, monkeypatch, head_class):
    X, Y, prompts = world
    head = head_class(prompts, logit_scale=2.0, device="cpu").fit(X, Y)
    expected = head.predict_proba(X)
    head.set_params(device="cuda")  # as after a fit on a GPU
    save(head, tmp_path / "head.skops")
    # This machine has no GPU (simulated where it has one).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = load(tmp_path / "head.skops")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proba = loaded.predict_proba(X)
    np.testing.assert_array_equal(proba, expected)
    if head_class is TipAdapterClassifier:  # its cache term runs on a device
        assert any("computed on the CPU" in str(w.message) for w in caught)


# Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("head_class", HEADS)
def test_prompts_with_another_number_of_rows_than_labels(world, head_class):
    X, Y, prompts = world
    with pytest.raises(ValueError, match="prompts has 2 rows but y has 3 labels"):
        head_class(prompts[:2], logit_scale=1.0, device="cpu").fit(X, Y)


@pytest.mark.parametrize("head_class", HEADS)
def test_prompts_of_another_width_than_x(world, head_class):
    X, Y, prompts = world
    with pytest.raises(ValueError, match="X has 31 features but the prompt embeddings have 32"):
        head_class(prompts, logit_scale=1.0, device="cpu").fit(X[:, :31], Y)


@pytest.mark.parametrize("head_class", HEADS)
def test_an_array_of_prompts_needs_logit_scale(world, head_class):
    X, Y, prompts = world
    with pytest.raises(ValueError, match="an array of prompt embeddings: pass logit_scale="):
        head_class(prompts, device="cpu").fit(X, Y)


@pytest.mark.parametrize("head_class", HEADS)
def test_a_transformer_without_a_checkpoint_needs_logit_scale(world, head_class):
    X, Y, _ = world
    with pytest.raises(ValueError, match="a HashPromptEmbedder, which has no logit_scale_"):
        head_class(HashPromptEmbedder(dim=32), device="cpu").fit(X, Y)


def test_anchor_weights_of_the_wrong_shape_or_sign(world):
    X, Y, prompts = world
    with pytest.raises(ValueError, match=r"one per label: shape \(3,\)"):
        TextAnchoredClassifier(prompts, logit_scale=1.0, anchor_weight=[1.0, 2.0]).fit(X, Y)
    with pytest.raises(ValueError, match="finite non-negative"):
        TextAnchoredClassifier(prompts, logit_scale=1.0, anchor_weight=[1.0, -2.0, 1.0]).fit(X, Y)


def test_clap_needs_prompts(world):
    X, Y, _ = world
    with pytest.raises(ValueError, match="anchor_weight='clap'.*has no prompts"):
        TextAnchoredClassifier(anchor_weight="clap", device="cpu").fit(X, Y)


@pytest.mark.parametrize("head_class", HEADS)
def test_labels_outside_zero_and_one(world, head_class):
    X, Y, prompts = world
    bad = Y.copy()
    bad.iloc[4, 1] = 2
    with pytest.raises(ValueError, match="Nodule"):
        head_class(prompts, logit_scale=1.0, device="cpu").fit(X, bad)


@pytest.mark.parametrize("head_class", HEADS)
def test_nan_in_x(world, head_class):
    X, Y, prompts = world
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        head_class(prompts, logit_scale=1.0, device="cpu").fit(bad, Y)
