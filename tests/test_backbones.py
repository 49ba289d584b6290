"""Every supported family (CLIP, SigLIP 2, image-only DINOv2 beside SigLIP) against transformers.

Each tiny checkpoint is saved with ``save_pretrained`` and loaded back with
``from_pretrained`` (``HF_HUB_OFFLINE=1``); the references are transformers'
own calls on the model's own processor.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.special import expit, softmax
from transformers import AutoImageProcessor, AutoModel, AutoProcessor

from skclipxray import (
    ImageEmbedder,
    PromptEnsembleEmbedder,
    SigLIPImageEmbedder,
    TextAnchoredClassifier,
    ZeroShotClassifier,
)
from skclipxray._backbone import load_backbone
from skclipxray.cache import EmbeddingCache
from skclipxray.images import read_image

LABELS = ["Mass", "Effusion", "Pleural_Thickening"]
PHRASES = ["mass", "effusion", "pleural thickening"]


@pytest.fixture(scope="module")
def images():
    """Three radiograph-like images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))
        for shape in [(48, 48), (40, 80), (90, 30)]
    ]


@pytest.fixture(params=["clip", "siglip2", "dinov2"])
def checkpoint(request):
    return request.param, request.getfixturevalue(f"tiny_{request.param}_dir")


def _reference_image_features(folder, images):
    """transformers' image embedding, one image at a time, through the model's own processor."""
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    rows = []
    for image in images:
        inputs = processor(images=image.convert("RGB"), return_tensors="pt")
        with torch.inference_mode():
            if hasattr(model, "get_image_features"):
                output = model.get_image_features(**inputs)
            else:  # image only: the documented pooled output, the CLS token
                output = model(**inputs)
        rows.append(output.pooler_output[0].numpy())
    return np.stack(rows)


def test_the_embedder_equals_transformers_image_features(checkpoint, images):
    family, folder = checkpoint
    embedder = ImageEmbedder(folder, device="cpu", progress=False, batch_size=2)
    X = embedder.fit_transform(images)
    reference = _reference_image_features(folder, images)
    assert X.shape == reference.shape
    np.testing.assert_allclose(X, reference, rtol=1e-4, atol=1e-5)
    backbone = load_backbone(folder, device="cpu")
    assert type(backbone.model).__name__ == backbone.architecture.class_name
    assert backbone.architecture.model_type == family
    assert embedder.n_features_out_ == X.shape[1] == backbone.embedding_dim


def test_clip_embeddings_are_the_projected_ones(tiny_clip_dir, images):
    model = AutoModel.from_pretrained(tiny_clip_dir)
    X = ImageEmbedder(tiny_clip_dir, device="cpu", progress=False).fit_transform(images[:1])
    assert X.shape[1] == model.config.projection_dim != model.config.vision_config.hidden_size


def test_siglip2_keeps_each_image_s_aspect_ratio(tiny_siglip2_dir, images):
    processor = AutoImageProcessor.from_pretrained(tiny_siglip2_dir)
    shapes = [
        tuple(processor(images=image.convert("RGB"), return_tensors="np")["spatial_shapes"][0])
        for image in images[1:]
    ]
    # A wide and a tall image: their patch grids are wide and tall.
    assert shapes[0][1] > shapes[0][0] and shapes[1][0] > shapes[1][1]
    # In one batch, each embeds as transformers embeds it alone.
    X = ImageEmbedder(tiny_siglip2_dir, device="cpu", progress=False, batch_size=2).fit_transform(
        images[1:]
    )
    np.testing.assert_allclose(
        X, _reference_image_features(tiny_siglip2_dir, images[1:]), rtol=1e-4, atol=1e-5
    )


def test_the_fast_preprocessing_is_kept_to_plain_resizes(checkpoint):
    from skclipxray._preprocessing import PilPreprocessor, preprocessor

    _, folder = checkpoint
    # CLIP and DINOv2 crop, SigLIP 2 cuts patches: the processor itself runs.
    assert not isinstance(preprocessor(load_backbone(folder, device="cpu")), PilPreprocessor)


@pytest.mark.parametrize("family", ["clip", "siglip2"])
def test_prompt_embeddings_equal_get_text_features(family, request):
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    prompts = PromptEnsembleEmbedder(folder, templates=("{}",), device="cpu").fit(LABELS)
    assert prompts.phrases_ == PHRASES
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    # Each family's own rules: CLIP pads to the longest prompt with a mask;
    # SigLIP 2 pads to its full length (64), as its processor documents.
    rules = {"clip": dict(padding=True), "siglip2": dict(padding="max_length", max_length=64)}
    tokens = processor(text=PHRASES, return_tensors="pt", truncation=True, **rules[family])
    with torch.inference_mode():
        reference = model.get_text_features(**tokens).pooler_output.numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(prompts.embeddings_, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["clip", "siglip2"])
def test_zero_shot_follows_the_model_s_own_scoring(family, request, images):
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    X = ImageEmbedder(folder, device="cpu", progress=False).fit_transform(images)
    Y = pd.DataFrame(np.eye(3, dtype=int), columns=LABELS)
    zero_shot = ZeroShotClassifier(folder, templates=("{}",), device="cpu").fit(X, Y)
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    rules = {"clip": dict(padding=True), "siglip2": dict(padding="max_length", max_length=64)}
    logits = []
    for image in images:
        inputs = processor(
            text=PHRASES, images=image.convert("RGB"), return_tensors="pt", truncation=True,
            **rules[family],
        )
        with torch.inference_mode():
            logits.append(model(**inputs).logits_per_image[0].numpy())
    logits = np.stack(logits)
    # CLIP: a softmax over the labels; SigLIP 2: a sigmoid per label, with its bias.
    expected = softmax(logits, axis=1) if family == "clip" else expit(logits)
    np.testing.assert_allclose(zero_shot.predict_proba(X), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(zero_shot.decision_function(X), logits, rtol=1e-4, atol=1e-4)
    assert zero_shot.scoring_ == {"clip": "softmax", "siglip2": "sigmoid"}[family]


def test_clip_with_negative_templates_scores_each_label_on_its_own(tiny_clip_dir, images):
    X = ImageEmbedder(tiny_clip_dir, device="cpu", progress=False).fit_transform(images)
    Y = pd.DataFrame(np.eye(3, dtype=int), columns=LABELS)
    zero_shot = ZeroShotClassifier(
        tiny_clip_dir, templates=("{}",), negative_templates=("no {}",), device="cpu"
    ).fit(X, Y)
    model = AutoModel.from_pretrained(tiny_clip_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_clip_dir)
    texts = PHRASES + [f"no {p}" for p in PHRASES]
    inputs = processor(text=texts, images=[i.convert("RGB") for i in images],
                       return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**inputs).logits_per_image.numpy()
    # CheXzero: a two-way softmax per label, positive against negative prompt.
    pairs = np.stack([logits[:, :3], logits[:, 3:]], axis=-1)
    np.testing.assert_allclose(
        zero_shot.predict_proba(X), softmax(pairs, axis=-1)[..., 0], rtol=1e-4, atol=1e-6
    )


def test_the_text_anchored_head_takes_clip_prompts(tiny_clip_dir, images):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16))
    Y = pd.DataFrame(rng.integers(0, 2, size=(40, 3)), columns=LABELS)
    prompts = PromptEnsembleEmbedder(tiny_clip_dir, device="cpu")
    head = TextAnchoredClassifier(prompts, device="cpu").fit(X, Y)
    fitted = PromptEnsembleEmbedder(tiny_clip_dir, device="cpu").fit(LABELS)
    assert fitted.logit_bias_ == 0.0  # CLIP has none
    assert head.logit_bias_ == 0.0 and head.predict_proba(X).shape == (40, 3)


def test_a_cache_shared_by_two_models_keeps_their_vectors_apart(
    tiny_clip_dir, tiny_siglip2_dir, tiny_model_dir, images, tmp_path
):
    cache = tmp_path / "shared.sqlite"
    folders = [tiny_clip_dir, tiny_siglip2_dir, tiny_model_dir, tiny_clip_dir]
    namespaces = {}
    for folder in folders:
        cached = ImageEmbedder(folder, device="cpu", progress=False, cache=cache)
        got = cached.fit_transform(images)
        expected = ImageEmbedder(folder, device="cpu", progress=False).fit_transform(images)
        np.testing.assert_array_equal(got, expected)
        namespaces[str(folder)] = cached.cache_namespace_
    assert cached.n_cached_ == len(images)  # the second CLIP run is served from the cache
    assert len(set(namespaces.values())) == 3
    assert len(EmbeddingCache(cache)) == 3 * len(images)


def test_an_image_only_checkpoint_has_no_text_tower(tiny_dinov2_dir):
    message = f"{str(tiny_dinov2_dir.resolve())!r} is an image-only Dinov2Model: it has no text tower"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PromptEnsembleEmbedder(tiny_dinov2_dir, device="cpu").fit(LABELS)
    with pytest.raises(ValueError, match="no text tower"):
        ZeroShotClassifier(tiny_dinov2_dir, labels=LABELS, device="cpu").fit(np.zeros((2, 32)))


def test_an_image_only_checkpoint_feeds_a_head_without_text(tiny_dinov2_dir, images):
    X = SigLIPImageEmbedder(tiny_dinov2_dir, device="cpu", progress=False).fit_transform(
        images * 4
    )
    Y = pd.DataFrame((np.arange(12)[:, None] + np.arange(3)) % 2, columns=LABELS)
    head = TextAnchoredClassifier(device="cpu").fit(X, Y)
    assert head.predict_proba(X).shape == (12, 3)


def test_feature_names_say_which_estimator_made_them(tiny_model_dir, images):
    names = [
        estimator(tiny_model_dir, device="cpu", progress=False).fit().get_feature_names_out()[0]
        for estimator in (ImageEmbedder, SigLIPImageEmbedder)
    ]
    assert names == ["embedding0", "siglip0"]


def test_an_unsupported_family_is_named(tmp_path):
    from transformers import BertConfig, BertModel

    from skclipxray import ModelNotAvailableError

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="BertConfig.*model_type='bert'.*CLIPModel"):
        ImageEmbedder(tmp_path, device="cpu", progress=False).fit_transform(
            [read_image(np.zeros((8, 8), dtype=np.uint8))]
        )


def test_tip_adapter_refuses_clip_prompts_without_a_bias(tiny_clip_dir):
    from skclipxray import TipAdapterClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 16))
    Y = pd.DataFrame(rng.integers(0, 2, size=(20, 3)), columns=LABELS)
    with pytest.raises(ValueError, match="CLIP's softmax, which has no bias.*negative_templates"):
        TipAdapterClassifier(PromptEnsembleEmbedder(tiny_clip_dir, device="cpu"),
                             device="cpu").fit(X, Y)
    # With negative prompts, each label is scored against its negative: no bias needed.
    negative = PromptEnsembleEmbedder(tiny_clip_dir, negative_templates=("no {}",), device="cpu")
    assert TipAdapterClassifier(negative, device="cpu").fit(X, Y).predict_proba(X).shape == (20, 3)


def test_clip_zero_shot_refuses_one_label_without_negative_prompts(tiny_clip_dir):
    X = np.random.default_rng(0).normal(size=(5, 16))
    Y = pd.DataFrame({"Mass": [0, 1, 0, 1, 0]})
    with pytest.raises(ValueError, match="with one label, its probability is 1 for every image"):
        ZeroShotClassifier(tiny_clip_dir, templates=("{}",), device="cpu").fit(X, Y)
