"""PromptEnsembleEmbedder against transformers' text tower; caching, contracts."""

import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from skclipxray import load_backbone
from skclipxray._backbone import ModelNotAvailableError, clear_backbone_cache
from skclipxray.labels import NIH_PATHOLOGIES
from skclipxray.prompts import (
    DEFAULT_TEMPLATES,
    NEGATIVE_TEMPLATES,
    PromptEnsembleEmbedder,
)


@pytest.fixture
def fresh_cache():
    """An empty text-embedding memo for this test: no checkpoint loaded yet."""
    clear_backbone_cache()


@pytest.fixture(scope="module")
def reference_text_features(tiny_model_dir):
    """Normalised ``get_text_features`` of prompts, by transformers alone."""
    from transformers import AutoTokenizer, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = SiglipModel.from_pretrained(tiny_model_dir).eval()

    def encode(prompts):
        tokens = tokenizer(
            prompts, padding="max_length", max_length=16, return_tensors="pt"
        )
        with torch.no_grad():
            features = model.get_text_features(input_ids=tokens["input_ids"])
        features = features.pooler_output.numpy().astype(np.float64)
        return features / np.linalg.norm(features, axis=1, keepdims=True)

    return encode


def _phrase(label):
    return label.replace("_", " ").lower()


def test_one_template_equals_normalised_get_text_features(
    tiny_model_dir, reference_text_features
):
    embedder = PromptEnsembleEmbedder(
        tiny_model_dir, templates=["evidence of {}"], device="cpu"
    )
    embeddings = embedder.fit_transform(None)
    expected = reference_text_features(
        [f"evidence of {_phrase(label)}" for label in NIH_PATHOLOGIES]
    )
    assert embeddings.shape == (14, 32)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    assert embedder.phrases_[12] == "pleural thickening"


def test_several_templates_average_normalised_embeddings(
    tiny_model_dir, reference_text_features
):
    labels = ["Pleural_Thickening", "Mass", "Edema"]
    embeddings = PromptEnsembleEmbedder(tiny_model_dir, device="cpu").fit_transform(
        labels
    )
    per_template = np.stack(
        [
            reference_text_features([t.format(_phrase(label)) for label in labels])
            for t in DEFAULT_TEMPLATES
        ]
    )
    mean = per_template.mean(axis=0)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-6)
    # The ensemble differs from any single template.
    assert not np.allclose(embeddings, per_template[0], atol=1e-3)


def test_max_length_padding_matters(tiny_model_dir, reference_text_features):
    """SigLIP pools the last position, so unpadded prompts embed differently."""
    from transformers import AutoTokenizer, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = SiglipModel.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        unpadded = model.get_text_features(
            **tokenizer(["signs of mass"], return_tensors="pt")
        ).pooler_output.numpy()
    ours = PromptEnsembleEmbedder(
        tiny_model_dir, templates=["signs of {}"], device="cpu"
    ).fit_transform(["Mass"])
    np.testing.assert_allclose(
        ours, reference_text_features(["signs of mass"]), rtol=1e-5, atol=1e-6
    )
    unpadded /= np.linalg.norm(unpadded)
    assert not np.allclose(ours, unpadded, atol=1e-3)


def test_user_phrases_override_the_label_name(tiny_model_dir):
    embedder = PromptEnsembleEmbedder(
        tiny_model_dir, phrases={"Mass": "nodule"}, device="cpu"
    )
    mass, nodule, edema = embedder.fit_transform(["Mass", "Nodule", "Edema"])
    np.testing.assert_array_equal(mass, nodule)
    assert not np.allclose(mass, edema)
    assert embedder.phrases_ == ["nodule", "nodule", "edema"]


def test_negative_templates_give_a_second_set(tiny_model_dir):
    labels = ["Effusion", "Hernia"]
    embedder = PromptEnsembleEmbedder(
        tiny_model_dir, negative_templates=NEGATIVE_TEMPLATES, device="cpu"
    ).fit(labels)
    alone = PromptEnsembleEmbedder(
        tiny_model_dir, templates=NEGATIVE_TEMPLATES, device="cpu"
    ).fit_transform(labels)
    np.testing.assert_array_equal(embedder.negative_embeddings_, alone)
    assert not np.allclose(embedder.embeddings_, alone, atol=1e-3)
    # Without negative templates there is no negative set, even after a refit.
    embedder.set_params(negative_templates=None).fit(labels)
    assert not hasattr(embedder, "negative_embeddings_")


def test_outputs_feature_names_pandas_and_mega_vector(tiny_model_dir):
    embedder = PromptEnsembleEmbedder(tiny_model_dir, device="cpu")
    with pytest.raises(NotFittedError):
        embedder.transform(["Mass"])
    full = embedder.fit_transform(None)
    assert embedder.labels_ == list(NIH_PATHOLOGIES)
    assert embedder.n_features_out_ == 32
    # transform(None) gives the fitted labels; other names are embedded anew.
    np.testing.assert_array_equal(embedder.transform(None), full)
    np.testing.assert_array_equal(
        embedder.transform(["Hernia", "Atelectasis"]), full[[13, 0]]
    )
    np.testing.assert_array_equal(
        embedder.transform(pd.Index(["Mass"])), full[[4]]
    )

    names = embedder.get_feature_names_out()
    assert list(names[:2]) == ["prompt0", "prompt1"] and len(names) == 32
    assert list(embedder.get_feature_names_out(["label"])) == list(names)
    with pytest.raises(ValueError, match=re.escape(
            "input_features should be None or the name of the one column of label "
            "names transformed, got ['a', 'b'].")):
        embedder.get_feature_names_out(["a", "b"])

    mega = embedder.mega_vector_
    assert mega.shape == (14 * 32,) and mega.dtype == np.float32
    np.testing.assert_array_equal(mega[32:64], full[1])

    frame = clone(embedder).set_output(transform="pandas").fit_transform(None)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list(NIH_PATHOLOGIES)
    assert list(frame.columns) == list(names)
    np.testing.assert_array_equal(frame.to_numpy(), full)
    subset = embedder.set_output(transform="pandas").transform(["Edema"])
    assert list(subset.index) == ["Edema"]


def test_batch_size_does_not_change_results(tiny_model_dir):
    results = []
    for batch_size in (1, 5, 64):
        clear_backbone_cache()  # and with it, the text embeddings
        results.append(
            PromptEnsembleEmbedder(
                tiny_model_dir, batch_size=batch_size, device="cpu"
            ).fit_transform(["Mass", "Edema", "Hernia"])
        )
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)


def test_clones_reuse_the_shared_model_and_its_text_embeddings(
    tiny_model_dir, fresh_cache, monkeypatch
):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    original = backbone.model.get_text_features
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(backbone.model, "get_text_features", counting)
    embedder = PromptEnsembleEmbedder(tiny_model_dir, device="cpu", batch_size=64)
    first = embedder.fit_transform(None)
    # One batch of 14 labels x 4 templates, padded to the model's 16 tokens.
    assert calls == [torch.Size([56, 16])]
    again = clone(embedder).fit_transform(None)
    assert len(calls) == 1
    np.testing.assert_array_equal(again, first)
    # Only prompts not seen before go through the text tower.
    clone(embedder).set_params(templates=["signs of {}", "no {}"]).fit(None)
    assert calls[1] == torch.Size([14, 16])


def test_pickles_small_without_the_model(tiny_model_dir):
    embedder = PromptEnsembleEmbedder(tiny_model_dir, device="cpu").fit(None)
    payload = pickle.dumps(embedder)
    assert len(payload) < 10_000
    assert b"torch" not in payload
    restored = pickle.loads(payload)
    np.testing.assert_array_equal(restored.transform(None), embedder.embeddings_)


@pytest.mark.parametrize(
    "params, X, error, match",
    [
        ({}, [], ValueError, "X is an empty list of label names"),
        ({}, "Mass", TypeError, "single string 'Mass'"),
        ({}, [["Mass"], ["Edema"]], ValueError, r"1-D list .* shape \(2, 1\)"),
        ({}, ["Mass", ""], ValueError, r"X\[1\] = '' is not a label name"),
        (
            {"templates": ["signs of {}", "evidence of"]},
            None,
            ValueError,
            r"templates\[1\] = 'evidence of' has no '\{\}' placeholder",
        ),
        (
            {"templates": ["{} in {organ}"]},
            None,
            ValueError,
            r"templates\[0\] = '\{\} in \{organ\}' is not a format string",
        ),
        # scikit-learn's parameter validation words these three.
        (
            {"templates": "signs of {}"},
            None,
            TypeError,
            r"'templates' parameter of PromptEnsembleEmbedder must be an array-like\. "
            r"Got 'signs of \{\}' instead",
        ),
        ({"templates": []}, None, ValueError, "templates is empty"),
        (
            {"negative_templates": ["no"]},
            None,
            ValueError,
            r"negative_templates\[0\] = 'no' has no",
        ),
        (
            {"phrases": ["mass"]},
            None,
            TypeError,
            r"'phrases' parameter of PromptEnsembleEmbedder must be None or an "
            r"instance of 'collections.abc.Mapping'\. Got \['mass'\] instead",
        ),
        (
            {"batch_size": 0},
            None,
            ValueError,
            r"'batch_size' parameter of PromptEnsembleEmbedder must be an int in the "
            r"range \[1, inf\)\. Got 0 instead",
        ),
    ],
)
def test_bad_input_is_named(tiny_model_dir, params, X, error, match):
    embedder = PromptEnsembleEmbedder(tiny_model_dir, device="cpu", **params)
    with pytest.raises(error, match=match):
        embedder.fit(X)


def test_checkpoint_without_text_tower_is_refused(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, image_size=32, patch_size=8,
    )
    SiglipVisionModel(config).save_pretrained(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="skclipxray loads full checkpoints of SiglipModel") as info:
        PromptEnsembleEmbedder(tmp_path, device="cpu").fit(None)
    assert str(tmp_path.resolve()) in str(info.value)


@pytest.mark.parametrize(
    "check",
    [
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimator_repr",
        "check_mixin_order",
    ],
)
def test_scikit_learn_api_checks(tiny_model_dir, check):
    """The common checks that apply to a transformer of label names."""
    from sklearn.utils import estimator_checks

    estimator = PromptEnsembleEmbedder(tiny_model_dir, device="cpu")
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


@pytest.mark.parametrize("target", ["multilabel", "multiclass"])
def test_fusion_heads_accept_prompt_embedder(tiny_model_dir, target):
    from skclipxray.classifiers import ConcatFusionClassifier, WeightedSumClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 32)).astype(np.float32)
    labels = ["Effusion", "Mass", "Edema"]
    signal = X[:, :3] + rng.normal(scale=0.5, size=(40, 3))
    if target == "multilabel":
        y = pd.DataFrame((signal > 0).astype(int), columns=labels)
    else:  # class names as the prompt labels, in sorted order
        y = pd.Series(np.asarray(labels)[signal.argmax(axis=1)])
        labels = sorted(labels)
    embedder = PromptEnsembleEmbedder(tiny_model_dir, device="cpu")
    array = clone(embedder).fit_transform(labels)
    for head in (ConcatFusionClassifier, WeightedSumClassifier):
        params = dict(hidden_sizes=(16,), max_epochs=3, device="cpu", random_state=0)
        with_embedder = head(prompts=embedder, **params).fit(X, y)
        with_array = head(prompts=array, **params).fit(X, y)
        np.testing.assert_array_equal(with_embedder.prompt_embeddings_, array)
        np.testing.assert_allclose(
            with_embedder.predict_proba(X), with_array.predict_proba(X), rtol=1e-6
        )
    # The embedder given to the head stays unfitted (the head fits a clone).
    assert not hasattr(embedder, "embeddings_")
