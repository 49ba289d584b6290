"""quantize="int8": int8 linear layers in the vision tower, through torchao."""

import sys

import numpy as np
import pytest
import torch

from skclipxray import load_backbone
from skclipxray._quantize import quantized_copy
from skclipxray._engine import RunSpec, prepare
from skclipxray.cache import EmbeddingCache
from skclipxray._keys import cache_namespace
from skclipxray.embedders import SigLIPImageEmbedder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 40), dtype=np.uint8) for _ in range(6)]


def _embedder(model_dir, **params):
    params = {"device": "cpu", "progress": False, "batch_size": 4, **params}
    return SigLIPImageEmbedder(model_dir, **params)


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def eager_compile(monkeypatch, tiny_model_dir):
    """torch.compile recorded but not run, on a backbone with no tower made yet."""
    compiled = []

    def fake_compile(module, mode=None):  # compiling is torch's to test
        compiled.append((module, mode))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(load_backbone(tiny_model_dir, device="cpu"), "_image_encoders", {})
    return compiled


def test_every_linear_layer_of_a_copy_is_int8_and_the_float_tower_is_untouched(
    tiny_model_dir,
):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    tower = backbone.model.vision_model
    before = {name: p.detach().clone() for name, p in tower.named_parameters()}
    quantized = quantized_copy(tower)

    linears = {name: m for name, m in quantized.named_modules()
               if isinstance(m, torch.nn.Linear)}
    # nn.MultiheadAttention (the pooling head) reads its output projection's
    # weight directly, so that layer stays in float.
    assert [name for name, m in linears.items() if type(m.weight) is torch.nn.Parameter] == [
        "head.attention.out_proj"
    ]
    del linears["head.attention.out_proj"]
    assert len(linears) == 6 * tower.config.num_hidden_layers + 2  # + the head's MLP
    for layer in linears.values():
        assert layer.weight.qdata.dtype == torch.int8
        # One scale per output channel.
        assert layer.weight.scale.numel() == layer.out_features
    for name, parameter in tower.named_parameters():
        assert type(parameter) is torch.nn.Parameter
        torch.testing.assert_close(parameter, before[name], rtol=0, atol=0)


def test_int8_embeddings_agree_with_float32_and_differ_from_them(
    tiny_model_dir, images, eager_compile
):
    reference = _embedder(tiny_model_dir).fit_transform(images)
    quantized = _embedder(tiny_model_dir, compile=True, quantize="int8").fit_transform(images)
    assert quantized.shape == reference.shape
    assert _cosines(quantized, reference).min() > 0.999
    assert np.abs(quantized - reference).max() > 1e-4  # the int8 path really ran


def test_one_quantized_copy_serves_every_compile_mode(tiny_model_dir, images, eager_compile):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    for _ in range(2):
        for mode in (True, "max-autotune"):
            _embedder(tiny_model_dir, compile=mode, quantize="int8").fit_transform(images[:1])
    quantized = backbone.image_encoder(quantize="int8")
    assert quantized is not backbone.image_encoder()
    assert eager_compile == [(quantized, "default"), (quantized, "max-autotune")]


def test_compiled_int8_follows_the_eager_int8_tower(tiny_model_dir, images):
    # The one test that runs torch.compile for real: torchao's int8 tensors
    # must go through inductor on this torch, and stay int8 there.
    backbone = load_backbone(tiny_model_dir, device="cpu")
    embedder = _embedder(tiny_model_dir, compile=True, quantize="int8")
    compiled = embedder.fit_transform(images)
    reference = _embedder(tiny_model_dir).fit_transform(images)
    pixels = np.stack([
        prepare(RunSpec.of(embedder), backbone, None, None, i, image).inputs["pixel_values"]
        for i, image in enumerate(images)
    ])
    with torch.inference_mode():
        eager = backbone.image_encoder(quantize="int8")(pixel_values=torch.from_numpy(pixels))
    eager = eager.numpy()
    # Compiled kernels round the on-the-fly activation scales their own way,
    # so they match eager int8 closely but not exactly; both stay near float32.
    distance_to_int8 = 1 - _cosines(compiled, eager).min()
    distance_to_float = 1 - _cosines(compiled, reference).min()
    assert distance_to_float < 1e-3
    assert distance_to_int8 < distance_to_float / 2


def test_int8_embeddings_have_their_own_cache_namespace(
    tiny_model_dir, images, tmp_path, eager_compile
):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    float_name, float_info = cache_namespace(backbone)
    int8_name, int8_info = cache_namespace(backbone, "int8")
    assert int8_name != float_name
    assert int8_info["quantize"] == "int8" and "quantize" not in float_info
    assert '"scheme": "Int8DynamicActivationInt8WeightConfig"' in int8_info["identity"]

    cache = tmp_path / "embeddings.sqlite"
    _embedder(tiny_model_dir, cache=cache).fit_transform(images)
    quantized = _embedder(tiny_model_dir, cache=cache, compile=True, quantize="int8")
    first = quantized.fit_transform(images)
    assert (quantized.n_embedded_, quantized.n_cached_) == (6, 0)
    assert quantized.cache_namespace_ == int8_name
    again = quantized.transform(images)
    assert (quantized.n_embedded_, quantized.n_cached_) == (0, 6)
    np.testing.assert_array_equal(again, first)
    with EmbeddingCache(cache) as store:
        assert len(store) == 12  # both sets of embeddings are kept


@pytest.mark.parametrize(
    "params, message",
    [
        ({"quantize": "int4", "compile": True},
         r"The 'quantize' parameter of SigLIPImageEmbedder must be None or a str among "
         r"\{'int8'\}\. Got 'int4' instead\."),
        ({"quantize": "int8"}, r"quantize='int8' needs compile=True \(or a compile mode\)"),
    ],
)
def test_bad_quantize_parameters(tiny_model_dir, images, params, message):
    with pytest.raises(ValueError, match=message):
        _embedder(tiny_model_dir, **params).fit_transform(images[:1])


def test_missing_torchao_says_how_to_install_it(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # makes `import torchao` fail
    tower = load_backbone(tiny_model_dir, device="cpu").model.vision_model
    with pytest.raises(ImportError, match=r"pip install 'skclipxray\[int8\]'"):
        quantized_copy(tower)
