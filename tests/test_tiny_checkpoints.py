"""The tiny random CLIP, SigLIP 2 and DINOv2 checkpoints load back offline and
behave as their families do in transformers."""

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoProcessor,
    CLIPModel,
    Dinov2Model,
    Siglip2Model,
)

from skclipxray import _tiny_checkpoints
from skclipxray._tiny_checkpoints import (
    make_tiny_clip,
    make_tiny_dinov2,
    make_tiny_siglip2,
)

PROMPTS = ["signs of cardiomegaly", "no finding", "evidence of pleural effusion with edema"]
FAMILIES = {
    "clip": (make_tiny_clip, CLIPModel),
    "siglip2": (make_tiny_siglip2, Siglip2Model),
    "dinov2": (make_tiny_dinov2, Dinov2Model),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _images():
    """A wide RGB image and a tall grey one (made RGB, as skclipxray.images does)."""
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 256, (90, 30), dtype=np.uint8))
    return [wide, tall.convert("RGB")]


def _build(make, folder, monkeypatch, **params):
    """Write a checkpoint and return it with the in-memory model it was saved from."""
    saved = {}
    real_save = _tiny_checkpoints._save

    def save(model, processor, path):
        saved["model"] = model
        return real_save(model, processor, path)

    monkeypatch.setattr(_tiny_checkpoints, "_save", save)
    return make(folder, **params), saved["model"]


def _inputs(family, processor):
    if family == "dinov2":
        return processor(images=_images(), return_tensors="pt")
    return processor(text=PROMPTS, images=_images(), padding=True, return_tensors="pt")


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_back_from_safetensors(family, tmp_path, monkeypatch):
    make, model_class = FAMILIES[family]
    folder, original = _build(make, tmp_path, monkeypatch)

    files = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in files
    assert not {"pytorch_model.bin", "model.bin"} & files
    assert (folder / "model.safetensors").stat().st_size < 1_000_000

    loaded = AutoModel.from_pretrained(folder).eval()
    assert type(loaded) is model_class
    assert loaded.config.model_type == family
    assert loaded.config.architectures == [model_class.__name__]
    state = loaded.state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(state[name], tensor), name

    inputs = _inputs(family, AutoProcessor.from_pretrained(folder))
    with torch.no_grad():
        ours, theirs = loaded(**inputs), original(**inputs)
    key = "pooler_output" if family == "dinov2" else "logits_per_image"
    np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_fixes_the_weights(family, tmp_path):
    make, model_class = FAMILIES[family]
    first, second, other = (
        model_class.from_pretrained(make(tmp_path / name, seed=seed)).state_dict()
        for name, seed in [("a", 3), ("b", 3), ("c", 4)]
    )
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_seed_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_clip(tmp_path / "clip", seed=0)
    make_tiny_siglip2(tmp_path / "siglip2", seed=0)
    make_tiny_dinov2(tmp_path / "dinov2", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_clip_tokenizer_follows_clip_rules(tmp_path):
    processor = AutoProcessor.from_pretrained(make_tiny_clip(tmp_path))
    tokenizer = processor.tokenizer
    config = AutoModel.from_pretrained(tmp_path).config.text_config
    assert type(tokenizer).__name__ == "CLIPTokenizer"
    assert config.eos_token_id == tokenizer.eos_token_id == len(tokenizer) - 1
    assert config.bos_token_id == tokenizer.bos_token_id
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # OpenAI pads with EOS

    batch = tokenizer(PROMPTS, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(axis=1)
    assert (ids[:, 0] == tokenizer.bos_token_id).all()
    assert (ids[np.arange(len(ids)), lengths - 1] == tokenizer.eos_token_id).all()
    assert (ids[mask == 0] == tokenizer.eos_token_id).all()
    assert lengths.max() == ids.shape[1] < tokenizer.model_max_length
    # Unknown words fall back to bytes, never to <|endoftext|> (CLIP's unk).
    odd = tokenizer("qqq zzz 7!", return_tensors="np")["input_ids"][0]
    assert (odd[1:-1] != tokenizer.eos_token_id).all()

    long = tokenizer(["no finding " * 60], truncation=True, return_tensors="np")["input_ids"][0]
    assert len(long) == tokenizer.model_max_length == config.max_position_embeddings
    assert long[-1] == tokenizer.eos_token_id


def test_clip_features_and_logits(tmp_path):
    folder = make_tiny_clip(tmp_path, projection_dim=16)
    model = CLIPModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(text=PROMPTS, images=_images(), padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)

    with torch.no_grad():
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
        text = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        tower = model.vision_model(pixel_values=inputs["pixel_values"])
        text_tower = model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        outputs = model(**inputs)
        # The vision tower pools its class token; the projection maps it to 16-d.
        visual = model.visual_projection(tower.pooler_output).numpy()
        # The text tower pools the first EOS token, found by the config's id.
        ids = inputs["input_ids"].numpy()
        eos_index = (ids == model.config.text_config.eos_token_id).argmax(axis=1)
        at_eos = text_tower.last_hidden_state[torch.arange(len(ids)), torch.as_tensor(eos_index)]
        textual = model.text_projection(at_eos).numpy()

    np.testing.assert_array_equal(eos_index, inputs["attention_mask"].numpy().sum(axis=1) - 1)
    assert image.pooler_output.shape == (2, 16)
    assert text.pooler_output.shape == (len(PROMPTS), 16)
    np.testing.assert_allclose(image.pooler_output.numpy(), visual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text.pooler_output.numpy(), textual, rtol=1e-5, atol=1e-6)

    expected = np.exp(model.logit_scale.item()) * _cosine(visual, textual)
    np.testing.assert_allclose(outputs.logits_per_image.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs.logits_per_text.numpy(), expected.T, rtol=1e-4, atol=1e-5)


def test_clip_image_processor_resizes_then_crops(tmp_path):
    processor = AutoImageProcessor.from_pretrained(make_tiny_clip(tmp_path, image_size=32))
    assert type(processor).__name__ == "CLIPImageProcessorPil"
    assert processor.size.shortest_edge == 32
    assert (processor.crop_size.height, processor.crop_size.width) == (32, 32)
    assert processor(images=_images(), return_tensors="pt")["pixel_values"].shape == (2, 3, 32, 32)


def test_siglip2_naflex_batch_of_two_aspect_ratios(tmp_path):
    folder = make_tiny_siglip2(tmp_path, patch_size=16, max_num_patches=256)
    model = Siglip2Model.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    images = _images()

    batch = processor(images=images, return_tensors="pt")
    assert set(batch) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
    assert batch["pixel_values"].shape == (2, 256, 3 * 16 * 16)
    assert batch["pixel_attention_mask"].shape == (2, 256)
    shapes = batch["spatial_shapes"].numpy()  # (rows, columns) of patches
    patches = batch["pixel_attention_mask"].numpy().sum(axis=1)
    np.testing.assert_array_equal(shapes.prod(axis=1), patches)
    assert (shapes.prod(axis=1) <= 256).all()
    for (rows, columns), image in zip(shapes, images):
        assert abs(np.log(columns / rows) - np.log(image.width / image.height)) < 0.2

    with torch.no_grad():
        features = model.get_image_features(
            pixel_values=batch["pixel_values"],
            pixel_attention_mask=batch["pixel_attention_mask"],
            spatial_shapes=batch["spatial_shapes"],
        ).pooler_output
        alone = [
            model.get_image_features(**processor(images=image, return_tensors="pt")).pooler_output
            for image in images
        ]
    assert features.shape == (2, 32)
    # Padding patches are masked: an image's feature does not depend on its batch.
    np.testing.assert_allclose(features.numpy(), torch.cat(alone).numpy(), rtol=1e-4, atol=1e-5)


def test_siglip2_processor_uses_its_own_patch_defaults(tmp_path):
    # Siglip2Processor applies patch_size=16, max_num_patches=256 over the
    # saved image processor unless told otherwise: the tiny checkpoint agrees.
    processor = AutoProcessor.from_pretrained(make_tiny_siglip2(tmp_path, max_num_patches=64))
    images = _images()
    through_processor = processor(images=images, return_tensors="pt")["pixel_values"]
    direct = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    passed = processor(images=images, max_num_patches=64, return_tensors="pt")["pixel_values"]
    assert through_processor.shape == (2, 256, 768)
    assert direct.shape == passed.shape == (2, 64, 768)


def test_siglip2_text_and_logits(tmp_path):
    folder = make_tiny_siglip2(tmp_path, logit_scale=np.log(10.0), logit_bias=-10.0)
    model = Siglip2Model.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor.tokenizer).__name__ == "Siglip2Tokenizer"
    assert processor.tokenizer.padding_side == "right"

    inputs = processor(text=PROMPTS, images=_images(), return_tensors="pt")
    ids, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
    assert ids.shape == (len(PROMPTS), 64)
    assert model.config.text_config.max_position_embeddings == 64
    assert (ids[mask == 0] == processor.tokenizer.pad_token_id).all()
    assert (np.diff(mask, axis=1) <= 0).all()  # padding on the right
    lowered = processor(text=[p.upper() for p in PROMPTS], return_tensors="pt")["input_ids"]
    np.testing.assert_array_equal(lowered.numpy(), ids)

    with torch.no_grad():
        tokens = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        text = model.get_text_features(**tokens)
        tower = model.text_model(**tokens)
        image = model.get_image_features(
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            spatial_shapes=inputs["spatial_shapes"],
        )
        outputs = model(**inputs)
        # The text tower pools the last position (padding included) through its head.
        last = model.text_model.head(tower.last_hidden_state[:, -1]).numpy()

    np.testing.assert_allclose(text.pooler_output.numpy(), last, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.logit_scale.item(), np.log(10.0), rtol=1e-6)
    np.testing.assert_allclose(model.logit_bias.item(), -10.0, rtol=1e-6)
    expected = np.exp(np.log(10.0)) * _cosine(image.pooler_output.numpy(), last) - 10.0
    np.testing.assert_allclose(outputs.logits_per_image.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_dinov2_pooler_is_layernormed_cls(tmp_path):
    folder = make_tiny_dinov2(tmp_path, image_size=28, patch_size=14)
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=_images(), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
        encoded = outputs.hidden_states[-1]  # the last layer, before the final layernorm
        expected = torch.nn.functional.layer_norm(
            encoded[:, 0], (encoded.shape[-1],), model.layernorm.weight,
            model.layernorm.bias, model.config.layer_norm_eps,
        )
    assert outputs.last_hidden_state.shape == (2, 1 + (28 // 14) ** 2, 32)
    assert not torch.allclose(encoded[:, 0], outputs.pooler_output, atol=1e-3)
    pooled = outputs.pooler_output.numpy()
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled, outputs.last_hidden_state[:, 0].numpy())


def test_dinov2_processor_resizes_shortest_edge_then_crops(tmp_path):
    folder = make_tiny_dinov2(tmp_path, image_size=28, shortest_edge=32)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "BitImageProcessorPil"
    assert not (folder / "tokenizer.json").exists()

    wide = _images()[0]  # 80 x 40: resized to 64 x 32, then the centre 28 x 28
    reference = np.asarray(wide.resize((64, 32), Image.BICUBIC), dtype=np.float64) / 255
    reference = reference[2:30, 18:46]
    reference = (reference - processor.image_mean) / processor.image_std
    pixels = processor(images=wide, return_tensors="np")["pixel_values"][0]
    assert pixels.shape == (3, 28, 28)
    np.testing.assert_allclose(pixels, reference.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize(
    "make, params, culprit",
    [
        (make_tiny_clip, dict(image_size=30, patch_size=8), "patch_size=8"),
        (make_tiny_dinov2, dict(image_size=30, patch_size=14), "patch_size=14"),
        (make_tiny_dinov2, dict(image_size=28, shortest_edge=20), "shortest_edge=20"),
    ],
)
def test_bad_geometry_is_refused(make, params, culprit, tmp_path):
    with pytest.raises(ValueError, match=culprit):
        make(tmp_path, **params)
    assert not os.listdir(tmp_path)
