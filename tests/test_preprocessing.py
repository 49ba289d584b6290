"""Preprocessing: the grayscale fast path is the processor's pixels exactly, and the
device-side resize (``preprocess="device"``) agrees closely with them.

The random checkpoints carry no medical meaning: agreement between two
preprocessing paths is all these tests measure.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.utils._param_validation import InvalidParameterError

from skclipxray import ImageEmbedder, SigLIPImageEmbedder
from skclipxray._backbone import checkpoint_info, load_backbone
from skclipxray._preprocessing import DevicePreprocessor
from skclipxray._keys import cache_namespace
from skclipxray._preprocessing import (
    PilPreprocessor,
    ProcessorInputs,
    preprocess_mode,
    preprocessor,
    resolve_preprocess,
)
from skclipxray.images import _read_image, read_image
from skclipxray.testing import make_tiny_siglip

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def siglip_512(tmp_path_factory):
    """A tiny random SigLIP at XraySigLIP's input size (512 px, bicubic, mean = std = 0.5)."""
    folder = make_tiny_siglip(tmp_path_factory.mktemp("siglip512"), image_size=512,
                              patch_size=16)
    return load_backbone(folder, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def radiographs(data_dir, tmp_path_factory):
    """Every real radiograph bundled (8-bit L and RGBA PNGs, DICOMs), and a 16-bit PNG of one."""
    paths = sorted((data_dir / "real-cxr").glob("*.png")) + sorted(
        (data_dir / "real-cxr").glob("*.dcm")
    )
    deep = tmp_path_factory.mktemp("deep") / "00000001_000_16bit.png"
    with Image.open(data_dir / "real-cxr" / "00000001_000.png") as image:
        gray = np.asarray(image.convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257 + 3).save(deep)  # as a 16-bit detector writes it
    return [*paths, deep]


def _processor_pixels(backbone, item):
    """What the checkpoint's own processor gives for the RGB image read_image returns."""
    return ProcessorInputs(backbone.image_processor)(read_image(item))["pixel_values"]


def _fast_pixels(backbone, item):
    return preprocessor(backbone, "cpu")(_read_image(item, grayscale=True))["pixel_values"]


def _device_pixels(backbone, items):
    device = preprocessor(backbone, "device")
    inputs = [device(_read_image(item, grayscale=True)) for item in items]
    return device.to_device(inputs, CPU)["pixel_values"].numpy()


# Grayscale: exact ------------------------------------------------------------------


def test_real_radiographs_are_read_in_one_plane(radiographs):
    modes = {path.name: _read_image(path, grayscale=True).mode for path in radiographs}
    assert set(modes.values()) == {"L"}, modes
    # What users get is unchanged: RGB.
    assert {read_image(path).mode for path in radiographs} == {"RGB"}


def test_grayscale_fast_path_is_the_processor_exactly_on_real_radiographs(
    siglip_512, radiographs
):
    assert isinstance(preprocessor(siglip_512, "cpu"), PilPreprocessor)
    for path in radiographs:
        np.testing.assert_array_equal(
            _fast_pixels(siglip_512, path), _processor_pixels(siglip_512, path),
            err_msg=path.name,
        )


def _synthetic_images(rng):
    """Arrays and PIL images of every kind the reader takes, gray and colour."""
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    colour = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    edges = np.kron(rng.integers(0, 2, (6, 7)), np.ones((9, 9))).astype(np.uint8) * 255
    return {
        "uint8": gray,
        "uint8 (H, W, 1)": gray[..., None],
        "equal channels": np.repeat(gray[..., None], 3, axis=2),
        "equal channels + alpha": np.dstack([gray, gray, gray, np.full_like(gray, 7)]),
        "colour": colour,
        "hard edges": edges,
        "uint16": rng.integers(0, 4096, (33, 20), dtype=np.uint16),
        "float": rng.random((21, 34)),
        "bool": rng.random((25, 25)) > 0.5,
        "PIL 1": Image.fromarray(edges).convert("1"),
        "PIL LA": Image.fromarray(gray).convert("LA"),
        "PIL P": Image.fromarray(colour).convert("P"),
        "PIL RGBA": Image.fromarray(gray).convert("RGBA"),
        "PIL I;16": Image.fromarray(rng.integers(0, 65535, (18, 30), dtype=np.uint16)),
    }


@pytest.mark.parametrize("size", [(512, 512), (7, 300), (64, 9)])
def test_grayscale_fast_path_is_the_processor_exactly_on_synthetic_images(siglip_512, size):
    backbone = SimpleNamespace(
        image_processor=siglip_512.image_processor.__class__(
            **{**siglip_512.image_processor.to_dict(),
               "size": {"height": size[0], "width": size[1]}}
        ),
        derived={}, device=CPU, name="synthetic",
    )
    for name, image in _synthetic_images(np.random.default_rng(size[1])).items():
        read = _read_image(image, grayscale=True)
        assert read.mode == ("RGB" if name in ("colour", "PIL P") else "L"), name
        fast = preprocessor(backbone, "cpu")(read)["pixel_values"]
        assert fast.shape == (3, *size)
        np.testing.assert_array_equal(fast, _processor_pixels(backbone, image), err_msg=name)


@pytest.mark.parametrize("resample", list(Image.Resampling), ids=lambda r: r.name)
def test_pillow_resizes_a_gray_plane_as_each_channel_of_its_rgb_image(resample):
    # The mechanism the fast path relies on, for every Pillow filter, down and up.
    rng = np.random.default_rng(int(resample))
    for shape, size in [((131, 97), (64, 64)), ((40, 33), (97, 130)), ((300, 5), (17, 200))]:
        gray = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        one = np.asarray(gray.resize(size, resample=resample))
        three = np.asarray(gray.convert("RGB").resize(size, resample=resample))
        for channel in range(3):
            np.testing.assert_array_equal(three[..., channel], one)


def test_the_processor_path_always_gets_rgb(tiny_siglip2_dir):
    checkpoint = checkpoint_info(tiny_siglip2_dir, device="cpu")
    preprocess = preprocessor(checkpoint, "cpu")
    assert isinstance(preprocess, ProcessorInputs) and not preprocess.grayscale
    gray = Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8))
    from_gray, from_rgb = preprocess(gray), preprocess(gray.convert("RGB"))
    assert from_gray.keys() == from_rgb.keys()
    for name in from_rgb:
        np.testing.assert_array_equal(from_gray[name], from_rgb[name])


# Device-side preprocessing ------------------------------------------------------------


def test_auto_picks_the_device_on_cuda_only():
    assert resolve_preprocess("auto", SimpleNamespace(type="cuda")) == "device"
    for kind in ("cpu", "mps"):
        assert resolve_preprocess("auto", SimpleNamespace(type=kind)) == "cpu"
    for explicit in ("cpu", "device"):
        assert resolve_preprocess(explicit, SimpleNamespace(type="cuda")) == explicit
    with pytest.raises(ValueError, match="preprocess='gpu' is not one of"):
        resolve_preprocess("gpu", CPU)


def test_auto_on_cuda_falls_back_to_the_processor_where_device_cannot(tiny_clip_dir, siglip_512):
    clip = checkpoint_info(tiny_clip_dir, device="cpu")
    on_cuda = SimpleNamespace(device=SimpleNamespace(type="cuda"), name=clip.name,
                              image_processor=clip.image_processor, derived={})
    assert preprocess_mode(on_cuda, "auto") == "cpu"
    siglip_on_cuda = SimpleNamespace(device=SimpleNamespace(type="cuda"), name="siglip",
                                     image_processor=siglip_512.image_processor, derived={})
    assert preprocess_mode(siglip_on_cuda, "auto") == "device"


@pytest.mark.parametrize(
    "fixture, processor, why",
    [
        ("tiny_clip_dir", "CLIPImageProcessor", "centre-crops the image"),
        ("tiny_siglip2_dir", "Siglip2ImageProcessor", "fixed height and width"),
        ("tiny_dinov2_dir", "ImageProcessor", "centre-crops the image"),
    ],
)
def test_device_preprocessing_refuses_other_processors(request, fixture, processor, why):
    folder = request.getfixturevalue(fixture)
    embedder = ImageEmbedder(folder, device="cpu", preprocess="device", progress=False)
    for call in (embedder.fit, lambda: embedder.transform([np.zeros((8, 8), np.uint8)])):
        with pytest.raises(ValueError, match=f"preprocess='device'.*{processor}.*{why}"):
            call()


def test_device_preprocessing_refuses_filters_torch_lacks(siglip_512):
    processor = siglip_512.image_processor.__class__(
        **{**siglip_512.image_processor.to_dict(), "resample": int(Image.Resampling.LANCZOS)}
    )
    with pytest.raises(ValueError, match="Pillow filter 1.*only bicubic and bilinear"):
        DevicePreprocessor(processor)


def test_device_inputs_are_uint8_one_plane_for_gray(siglip_512, radiographs):
    device = preprocessor(siglip_512, "device")
    gray = device(_read_image(radiographs[0], grayscale=True))["image"]
    assert gray.dtype == np.uint8 and gray.shape[0] == 1
    colour = device(Image.fromarray(np.random.default_rng(0).integers(
        0, 256, (10, 12, 3), dtype=np.uint8)))["image"]
    assert colour.shape == (3, 10, 12)


def test_device_pixels_agree_with_the_processor_on_real_radiographs(siglip_512, radiographs):
    for path in radiographs:
        reference = _processor_pixels(siglip_512, path)
        levels = np.abs(_device_pixels(siglip_512, [path])[0] - reference) / 2 * 255
        assert levels.mean() < 0.25, path.name  # grey levels, out of 255
        assert np.mean(levels > 1.5) < 0.01, path.name  # off by more than one level: rare
        assert levels.max() <= 8, path.name


def test_device_embeddings_agree_with_the_processor_path(siglip_512, radiographs):
    encoder = siglip_512.image_encoder()
    reference = np.stack([_processor_pixels(siglip_512, path) for path in radiographs])
    with torch.inference_mode():
        expected = encoder(pixel_values=torch.from_numpy(reference)).numpy()
        found = encoder(
            pixel_values=torch.from_numpy(_device_pixels(siglip_512, radiographs))
        ).numpy()
    cosine = (expected * found).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(
        found, axis=1
    )
    assert cosine.min() >= 0.9999, cosine


def test_a_batch_of_mixed_sizes_is_each_image_resized_alone(siglip_512, radiographs):
    # Different sizes and gray and colour images in one batch, interleaved.
    rng = np.random.default_rng(1)
    colour = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    items = [radiographs[0], colour, radiographs[1], radiographs[-2], radiographs[2]]
    batch = _device_pixels(siglip_512, items)
    assert batch.shape == (len(items), 3, 512, 512)
    for row, item in zip(batch, items):
        np.testing.assert_allclose(row, _device_pixels(siglip_512, [item])[0], atol=1e-6)


def test_device_embedder_end_to_end_and_its_cache_namespace(siglip_512, radiographs, tmp_path):
    paths = [str(path) for path in radiographs]
    common = dict(device="cpu", dtype="float32", progress=False, batch_size=3, num_workers=2)
    on_cpu = ImageEmbedder(siglip_512.name, preprocess="cpu", **common,
                           cache=tmp_path / "c.sqlite")
    on_device = ImageEmbedder(siglip_512.name, preprocess="device", **common,
                              cache=tmp_path / "c.sqlite")
    cpu, device = on_cpu.fit_transform(paths), on_device.fit_transform(paths)
    assert on_device.n_embedded_ == len(paths)  # not served from the CPU path's entries
    assert on_cpu.cache_namespace_ != on_device.cache_namespace_
    cosine = (cpu * device).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(device, axis=1)
    assert cosine.min() >= 0.9999
    # On the CPU, "auto" is the CPU path, bit for bit, in today's namespace.
    auto = ImageEmbedder(siglip_512.name, **common)
    np.testing.assert_array_equal(auto.fit_transform(paths), cpu)


def test_cpu_namespace_keeps_its_name_device_has_its_own(siglip_512):
    import json

    default = cache_namespace(siglip_512)
    assert cache_namespace(siglip_512, None, "cpu") == default
    assert cache_namespace(siglip_512, None, "auto") == default  # on the CPU
    assert "preprocessing" not in json.loads(default[1]["identity"])  # as before
    device = cache_namespace(siglip_512, None, "device")
    assert device[0] != default[0]
    assert json.loads(device[1]["identity"])["preprocessing"]["where"] == "device"
    assert device[1]["preprocess"] == "device"


def test_preprocess_parameter_is_validated_and_inherited(tiny_model_dir):
    assert ImageEmbedder().get_params()["preprocess"] == "auto"
    assert SigLIPImageEmbedder(preprocess="device").get_params()["preprocess"] == "device"
    with pytest.raises(InvalidParameterError, match="'preprocess' parameter"):
        SigLIPImageEmbedder(tiny_model_dir, device="cpu", preprocess="gpu").fit()


def test_an_embedder_saved_before_preprocess_existed_keeps_the_cpu_path(tiny_model_dir):
    import pickle

    embedder = ImageEmbedder(tiny_model_dir, device="cpu", progress=False)
    state = dict(embedder.__getstate__())
    del state["preprocess"]  # as an estimator pickled by an earlier version
    old = ImageEmbedder.__new__(ImageEmbedder)
    old.__setstate__(state)
    assert old.preprocess == "cpu"
    image = [np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)]
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(old)).transform(image), embedder.transform(image)
    )
