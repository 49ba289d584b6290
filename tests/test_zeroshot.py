"""ZeroShotClassifier against SiglipModel's own logits; scikit-learn contracts."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, cross_validate
from sklearn.pipeline import make_pipeline

from skclipxray import load_backbone
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.prompts import NEGATIVE_TEMPLATES, PromptEnsembleEmbedder
from skclipxray.zeroshot import ZeroShotClassifier

from conftest import LOGIT_BIAS, LOGIT_SCALE


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8))
        for _ in range(6)
    ]


def _image_embeddings(folder, images):
    backbone = load_backbone(folder, device="cpu")
    pixels = backbone.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        features = backbone.model.get_image_features(**pixels).pooler_output
    return features.numpy()


@pytest.fixture(scope="module")
def embeddings(scored_model_dir, images):
    return _image_embeddings(scored_model_dir, images)


def test_matches_siglip_logits_per_image(scored_model_dir, images, embeddings):
    classifier = ZeroShotClassifier(scored_model_dir, templates=["{}"], device="cpu")
    proba = classifier.fit(embeddings).predict_proba(embeddings)

    # Reference: transformers alone, one prompt per label (the phrase itself).
    from transformers import AutoProcessor, SiglipModel

    processor = AutoProcessor.from_pretrained(scored_model_dir)
    model = SiglipModel.from_pretrained(scored_model_dir).eval()
    phrases = [label.replace("_", " ").lower() for label in NIH_PATHOLOGIES]
    inputs = processor(
        text=phrases, images=images, padding="max_length", return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(
            input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]
        ).logits_per_image
    expected = torch.sigmoid(logits).numpy()

    assert proba.shape == (len(images), 14)
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
    assert classifier.scale_ == pytest.approx(8.0)
    assert classifier.bias_ == pytest.approx(LOGIT_BIAS)
    assert list(classifier.labels_) == list(NIH_PATHOLOGIES)
    # The scores depend on the image: not one constant row.
    assert np.ptp(proba, axis=0).max() > 1e-3


def test_raw_and_normalised_embeddings_score_the_same(scored_model_dir, embeddings):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    classifier = ZeroShotClassifier(scored_model_dir, device="cpu").fit(embeddings)
    np.testing.assert_allclose(
        classifier.predict_proba(embeddings), classifier.predict_proba(unit),
        rtol=1e-6,
    )


def test_negative_templates_softmax_positive_against_negative(
    scored_model_dir, embeddings
):
    labels = ["Effusion", "Pneumothorax", "Mass"]
    classifier = ZeroShotClassifier(
        scored_model_dir, labels=labels, negative_templates=NEGATIVE_TEMPLATES,
        device="cpu",
    ).fit(embeddings)
    prompts = PromptEnsembleEmbedder(
        scored_model_dir, negative_templates=NEGATIVE_TEMPLATES, device="cpu"
    ).fit(labels)
    unit = torch.nn.functional.normalize(torch.from_numpy(embeddings), dim=-1)

    def logits(prompt_embeddings):
        return unit @ torch.from_numpy(prompt_embeddings).T * 8.0 + LOGIT_BIAS

    pair = torch.stack(
        [logits(prompts.embeddings_), logits(prompts.negative_embeddings_)], dim=-1
    )
    expected = torch.softmax(pair, dim=-1)[..., 0].numpy()
    np.testing.assert_allclose(
        classifier.predict_proba(embeddings), expected, rtol=1e-5, atol=1e-6
    )
    # Re-normalised, as every way of giving prompts is: float32 rounding apart.
    np.testing.assert_allclose(
        classifier.negative_prompt_embeddings_, prompts.negative_embeddings_, rtol=1e-6
    )


def test_labels_come_from_y_columns_then_labels_then_nih(scored_model_dir, embeddings):
    n = len(embeddings)
    Y = pd.DataFrame(np.eye(n, 2, dtype=int), columns=["Edema", "Hernia"])
    fitted = ZeroShotClassifier(scored_model_dir, labels=["Mass"], device="cpu").fit(
        embeddings, Y
    )
    assert list(fitted.labels_) == ["Edema", "Hernia"]
    assert fitted.predict_proba(embeddings).shape == (n, 2)

    fitted = ZeroShotClassifier(
        scored_model_dir, labels=["Mass", "Nodule"], device="cpu"
    ).fit(embeddings, Y.to_numpy())
    assert list(fitted.labels_) == ["Mass", "Nodule"]

    everything = ZeroShotClassifier(scored_model_dir, device="cpu").fit(embeddings)
    proba = everything.predict_proba(embeddings)
    # The same label scores the same, whatever the other labels are.
    np.testing.assert_allclose(
        fitted.predict_proba(embeddings), proba[:, [4, 5]], rtol=1e-6
    )


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 1.0])
def test_predict_thresholds_probabilities(scored_model_dir, embeddings, threshold):
    classifier = ZeroShotClassifier(
        scored_model_dir, threshold=threshold, device="cpu"
    ).fit(embeddings)
    proba = classifier.predict_proba(embeddings)
    predictions = classifier.predict(embeddings)
    np.testing.assert_array_equal(predictions, (proba >= threshold).astype(int))
    assert predictions.dtype.kind == "i"
    # Read at prediction time: a value set after fitting is checked then.
    classifier.set_params(threshold=threshold + 1.5)
    with pytest.raises(ValueError, match=rf"threshold={threshold + 1.5} must lie in \[0, 1\]"):
        classifier.predict(embeddings)


def test_pipeline_after_image_embedder_in_cross_validate(scored_model_dir, images):
    from skclipxray.embedders import SigLIPImageEmbedder

    # One image per batch: a fold embeds exactly as the whole set does (other
    # batch sizes can change the last bits, and so a tie in the AUROC's ranks).
    pipeline = make_pipeline(
        SigLIPImageEmbedder(scored_model_dir, device="cpu", progress=False, batch_size=1),
        ZeroShotClassifier(scored_model_dir, device="cpu"),
    )
    rng = np.random.default_rng(1)
    many = images + [
        Image.fromarray(rng.integers(0, 256, size=(32, 32), dtype=np.uint8))
        for _ in range(6)
    ]
    Y = pd.DataFrame(
        rng.integers(0, 2, size=(len(many), 3)), columns=["Effusion", "Mass", "Edema"]
    )
    Y.iloc[:2] = [[0, 0, 0], [1, 1, 1]]  # every label has both classes
    proba = pipeline.fit(many, Y).predict_proba(many)
    expected = (
        ZeroShotClassifier(scored_model_dir, labels=list(Y.columns), device="cpu")
        .fit(_image_embeddings(scored_model_dir, many))
        .predict_proba(_image_embeddings(scored_model_dir, many))
    )
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)

    folds = KFold(2, shuffle=True, random_state=0)
    scores = cross_validate(
        pipeline, many, Y, cv=folds, scoring="roc_auc",
        return_indices=True,
    )
    for score, test in zip(scores["test_score"], scores["indices"]["test"]):
        Y_test = Y.iloc[test]
        if (Y_test.nunique() < 2).any():
            assert np.isnan(score)
            continue
        assert score == pytest.approx(
            roc_auc_score(Y_test, proba[test], average="macro")
        )


@pytest.mark.parametrize(
    "labels", [["Mass"], ["Mass", "Edema"], ["Mass", "Edema", "Hernia"]]
)
def test_scorers_see_a_multilabel_classifier(scored_model_dir, labels):
    """Whatever the number of labels, scorers use every column of predict_proba."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 32))
    # Rotations of a period-8 column: both classes of every label in each
    # half, i.e. in every test fold of KFold(2).
    pattern = np.tile([1, 0, 1, 0, 0, 1, 0, 0], 2)
    Y = pd.DataFrame(
        np.stack([np.roll(pattern, k) for k in range(len(labels))], axis=1),
        columns=labels,
    )
    classifier = ZeroShotClassifier(scored_model_dir, labels=labels, device="cpu")
    assert [list(c) for c in classifier.fit(X, Y).classes_] == [[0, 1]] * len(labels)
    proba = classifier.predict_proba(X)
    scores = cross_validate(
        classifier, X, Y, cv=KFold(2), scoring=["roc_auc", "average_precision"],
        return_indices=True, error_score="raise",
    )
    for i, test in enumerate(scores["indices"]["test"]):
        assert scores["test_roc_auc"][i] == pytest.approx(
            roc_auc_score(Y.iloc[test], proba[test])
        )
        assert scores["test_average_precision"][i] == pytest.approx(
            average_precision_score(Y.iloc[test], proba[test])
        )


def test_pickles_small_without_torch(scored_model_dir, embeddings):
    classifier = ZeroShotClassifier(
        scored_model_dir, negative_templates=NEGATIVE_TEMPLATES, device="cpu"
    ).fit(embeddings)
    payload = pickle.dumps(classifier)
    assert len(payload) < 20_000
    assert b"torch" not in payload
    restored = pickle.loads(payload)
    np.testing.assert_array_equal(
        restored.predict_proba(embeddings), classifier.predict_proba(embeddings)
    )
    assert clone(classifier).get_params() == classifier.get_params()


@pytest.mark.parametrize(
    "check",
    [
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimators_unfitted",
        "check_estimator_repr",
        "check_mixin_order",
    ],
)
def test_scikit_learn_api_checks(scored_model_dir, check):
    """The common checks that do not fit on random data.

    The others fit on data of arbitrary width or with 1-D y, which this
    classifier refuses by design: its input is the checkpoint's embeddings
    and its output one column per label.
    """
    from sklearn.utils import estimator_checks

    estimator = ZeroShotClassifier(scored_model_dir, device="cpu")
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


def test_tags_say_multilabel_and_y_optional():
    tags = ZeroShotClassifier().__sklearn_tags__()
    assert tags.classifier_tags.multi_label
    assert not tags.target_tags.required
    assert tags.estimator_type == "classifier"


@pytest.mark.parametrize(
    "params, make_y, match",
    [
        ({}, lambda n: np.zeros(n), r"y has shape \(6,\); .* is multilabel"),
        ({}, lambda n: np.zeros((n, 3)), "y has 3 columns but there are 14 labels"),
        ({}, lambda n: np.zeros((n + 1, 14)), "y has 7 rows but X has 6 samples"),
        ({}, lambda n: np.where(np.eye(n, 14) > 0, 2, 0),
         r"must hold only 0 and 1 \(or booleans\); column 'Atelectasis' holds \[0, 2\]"),
        ({}, lambda n: np.where(np.eye(n, 14) > 0, 1, -1),
         r"must hold only 0 and 1 \(or booleans\); column 'Atelectasis' holds \[-1, 1\]"),
        ({"labels": ["Mass", "Nodule"]}, lambda n: np.full((n, 2), 0.5),
         r"column 'Mass' holds \[0.5\]"),
        ({"labels": []}, lambda n: None, "labels is an empty list"),
        # Worded by scikit-learn's parameter validation.
        ({"threshold": 1.5}, lambda n: None, r"'threshold' parameter of ZeroShotClassifier "
                                             r"must be a float in the range \[0.0, 1.0\]"),
        ({"templates": ["no placeholder"]}, lambda n: None, "has no '{}' placeholder"),
    ],
)
def test_bad_fit_input_is_named(scored_model_dir, embeddings, params, make_y, match):
    classifier = ZeroShotClassifier(scored_model_dir, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        classifier.fit(embeddings, make_y(len(embeddings)))


def test_embeddings_of_another_size_are_refused(scored_model_dir, embeddings):
    with pytest.raises(ValueError, match="X has 31 features but the checkpoint"):
        ZeroShotClassifier(scored_model_dir, device="cpu").fit(embeddings[:, :31])
    fitted = ZeroShotClassifier(scored_model_dir, device="cpu").fit(embeddings)
    with pytest.raises(ValueError, match="expecting 32 features"):
        fitted.predict_proba(embeddings[:, :31])


# ------------------------------------------------------------- prompts=
def test_prompts_as_an_embedder_or_an_array_score_as_the_templates_do(
    scored_model_dir, embeddings
):
    labels = ["Effusion", "Pneumothorax", "Mass"]
    templates = ["signs of {}", "{}"]
    described = ZeroShotClassifier(
        scored_model_dir, labels=labels, templates=templates,
        negative_templates=NEGATIVE_TEMPLATES, device="cpu",
    ).fit(embeddings)
    embedder = PromptEnsembleEmbedder(
        scored_model_dir, templates=templates, negative_templates=NEGATIVE_TEMPLATES,
        device="cpu",
    )
    given = ZeroShotClassifier(
        scored_model_dir, prompts=embedder, labels=labels, device="cpu"
    ).fit(embeddings)
    assert not hasattr(embedder, "embeddings_")  # a clone was fitted
    np.testing.assert_allclose(
        given.predict_proba(embeddings), described.predict_proba(embeddings),
        rtol=1e-6, atol=1e-7,
    )
    np.testing.assert_allclose(
        given.negative_prompt_embeddings_, described.negative_prompt_embeddings_,
        rtol=1e-6, atol=1e-7,
    )

    # An array: positive prompts only, normalised (so its scale does not matter).
    positive = clone(embedder).fit_transform(labels)
    from_array = ZeroShotClassifier(
        scored_model_dir, prompts=3.0 * positive, labels=labels, device="cpu"
    ).fit(embeddings)
    assert not hasattr(from_array, "negative_prompt_embeddings_")
    np.testing.assert_allclose(from_array.prompt_embeddings_, positive, rtol=1e-6)
    cosine = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True) @ positive.T
    np.testing.assert_allclose(
        from_array.predict_proba(embeddings),
        1 / (1 + np.exp(-(8.0 * cosine + LOGIT_BIAS))), rtol=1e-5,
    )


@pytest.mark.parametrize(
    "params, match",
    [
        ({"templates": ["{}"]}, "was given prompts and templates, which describe"),
        ({"negative_templates": NEGATIVE_TEMPLATES, "phrases": {"Mass": "lump"}},
         "was given prompts and negative_templates and phrases"),
    ],
)
def test_prompts_and_prompt_parameters_are_not_both_given(
    scored_model_dir, embeddings, params, match
):
    classifier = ZeroShotClassifier(
        scored_model_dir, prompts=np.ones((14, 32)), device="cpu", **params
    )
    with pytest.raises(ValueError, match=match):
        classifier.fit(embeddings)


def test_prompts_of_the_wrong_shape_are_refused(scored_model_dir, embeddings):
    with pytest.raises(ValueError, match=r"prompts has 2 rows but labels= gives 3 labels "
                                         r"\(Mass, Edema, Hernia\); give one prompt"):
        ZeroShotClassifier(
            scored_model_dir, prompts=np.ones((2, 32)), labels=["Mass", "Edema", "Hernia"],
            device="cpu",
        ).fit(embeddings)
    with pytest.raises(ValueError, match="X has 32 features but the prompt embeddings "
                                         "have 16"):
        ZeroShotClassifier(scored_model_dir, prompts=np.ones((14, 16)), device="cpu").fit(
            embeddings
        )
    with pytest.raises(ValueError, match="prompts contains NaN"):
        ZeroShotClassifier(
            scored_model_dir, prompts=np.full((14, 32), np.nan), device="cpu"
        ).fit(embeddings)
