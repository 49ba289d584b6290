"""SigLIPImageEmbedder against transformers' own forward pass, inputs and sklearn contracts."""

import pickle
import re

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skclipxray import SigLIPImageEmbedder, load_backbone
from skclipxray.images import ImageReadError

SIIM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


@pytest.fixture
def embedder(tiny_model_dir):
    return SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False, batch_size=3)


@pytest.fixture(scope="module")
def png_paths(tmp_path_factory):
    """Seven small grayscale PNGs of different sizes and contents."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        pixels = rng.integers(0, 256, size=(40 + 3 * i, 48), dtype=np.uint8)
        path = folder / f"image_{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_matches_transformers_get_image_features(embedder, tiny_model_dir, png_paths):
    embeddings = embedder.fit_transform([str(p) for p in png_paths])
    assert embeddings.shape == (len(png_paths), 32)
    assert embeddings.dtype == np.float32

    # Reference: the checkpoint's processor and model, driven by transformers alone.
    from transformers import AutoImageProcessor, SiglipModel

    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    model = SiglipModel.from_pretrained(tiny_model_dir).eval()
    images = [Image.open(p).convert("RGB") for p in png_paths]
    with torch.no_grad():
        batch = processor(images=images, return_tensors="pt")
        reference = model.get_image_features(**batch).pooler_output.numpy()
    np.testing.assert_allclose(embeddings, reference, rtol=1e-5, atol=1e-5)


def test_path_pil_and_array_give_the_same_embedding(embedder, png_paths):
    path = png_paths[0]
    pil = Image.open(path)
    array = np.asarray(pil)
    # One batch: float32 matrix products may differ in the last bit across batch sizes.
    as_path, as_str, as_pil, as_array = embedder.set_params(batch_size=4).fit_transform(
        [path, str(path), pil, array]
    )
    np.testing.assert_array_equal(as_path, as_str)
    np.testing.assert_array_equal(as_path, as_pil)
    np.testing.assert_array_equal(as_path, as_array)


def test_containers_series_dataframe_and_object_array(embedder, png_paths):
    paths = [str(p) for p in png_paths[:4]]
    expected = embedder.fit_transform(paths)
    for X in (pd.Series(paths), pd.DataFrame({"path": paths}), np.asarray(paths, dtype=object)):
        np.testing.assert_array_equal(embedder.transform(X), expected)


def test_batching_and_worker_threads_do_not_change_results(tiny_model_dir, png_paths):
    paths = [str(p) for p in png_paths]
    results = [
        SigLIPImageEmbedder(
            tiny_model_dir, device="cpu", progress=False,
            batch_size=batch_size, num_workers=workers,
        ).fit_transform(paths)
        for batch_size, workers in [(1, 0), (3, 2), (16, 1)]
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)


def test_normalize_gives_unit_vectors_in_the_same_direction(embedder, png_paths):
    raw = embedder.fit_transform(png_paths)
    unit = clone(embedder).set_params(normalize=True).fit_transform(png_paths)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )


def test_normalize_leaves_the_rows_of_unreadable_images_nan(embedder, png_paths, tmp_path):
    X = [png_paths[0], str(tmp_path / "missing.png"), png_paths[1]]
    raw = embedder.fit_transform([png_paths[0], png_paths[1]])
    unit = clone(embedder).set_params(normalize=True, on_error="nan")
    with pytest.warns(UserWarning, match="1 of 3 images could not be read"):
        out = unit.fit_transform(X)
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(
        out[[0, 2]], raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )


def test_feature_names_take_the_one_input_column(embedder, png_paths):
    embedder.fit(png_paths)
    expected = [f"siglip{i}" for i in range(32)]
    assert list(embedder.get_feature_names_out()) == expected
    assert list(embedder.get_feature_names_out(["path"])) == expected
    for bad in (["path", "other"], [], "path"):
        with pytest.raises(ValueError, match=re.escape(
                "input_features should be None or the name of the one column of "
                f"images transformed, got {bad!r}.")):
            embedder.get_feature_names_out(bad)


def test_column_transformer_names_the_embedding_columns(tiny_model_dir, png_paths):
    from sklearn.compose import ColumnTransformer

    frame = pd.DataFrame({"path": [str(p) for p in png_paths[:2]], "age": [40, 50]})
    columns = ColumnTransformer([
        ("image", SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False), ["path"]),
        ("age", "passthrough", ["age"]),
    ])
    assert columns.fit_transform(frame).shape == (2, 33)
    names = columns.get_feature_names_out()
    assert list(names[:2]) == ["image__siglip0", "image__siglip1"]
    assert names[-1] == "age__age"


def test_monochrome1_embeds_like_its_inverted_twin(embedder, data_dir):
    folder = data_dir / "real-cxr"
    siim = _read(folder / SIIM)
    fake, inverted_twin = embedder.fit_transform(
        [folder / "Fake_MONOHR1.dcm", 255 - siim]
    )
    np.testing.assert_allclose(fake, inverted_twin, rtol=1e-5, atol=1e-6)
    plain = embedder.transform([folder / SIIM])[0]
    assert not np.allclose(plain, fake, atol=1e-3)


def _read(path):
    from skclipxray.images import read_image

    return np.asarray(read_image(path))


def test_every_bundled_radiograph_embeds(embedder, data_dir):
    files = sorted(
        p for p in (data_dir / "real-cxr").iterdir() if p.suffix in {".png", ".dcm", ".jpg"}
    )
    assert len(files) >= 5
    embeddings = embedder.fit_transform(files)
    assert embeddings.shape == (len(files), 32)
    assert np.isfinite(embeddings).all()


def test_feature_names_and_pandas_output(embedder, png_paths):
    embedder.set_output(transform="pandas")
    frame = embedder.fit_transform(pd.Series([str(p) for p in png_paths[:2]], index=[10, 11]))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:2]) == ["siglip0", "siglip1"]
    assert frame.shape == (2, 32)
    assert list(frame.index) == [10, 11]


def test_fit_is_cheap_and_model_is_never_pickled(embedder, png_paths):
    fitted = embedder.fit(png_paths)
    assert fitted.n_features_out_ == 32
    # The pickle holds parameters only: no weights, no processor.
    assert len(pickle.dumps(fitted)) < 2_000
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()


def test_shares_the_loaded_checkpoint(embedder, tiny_model_dir, png_paths):
    embedder.fit_transform(png_paths[:1])
    other = clone(embedder)
    assert other._backbone() is embedder._backbone()
    assert embedder._backbone() is load_backbone(tiny_model_dir, device="cpu", dtype="auto")


@pytest.mark.parametrize(
    "X, error, message",
    [
        ([], ValueError, "X is empty"),
        (np.zeros((2, 8, 8, 3)), ValueError, "4-D array"),
        (np.zeros((8, 8)), ValueError, "2-D array"),
        ("image.png", TypeError, "single image"),
        (42, TypeError, "int is not a collection"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), ValueError, "2 columns"),
    ],
)
def test_bad_containers(embedder, X, error, message):
    with pytest.raises(error, match=message):
        embedder.fit_transform(X)


def test_a_folder_as_x_says_how_to_list_its_images(embedder, tmp_path):
    for X in (tmp_path, str(tmp_path)):
        with pytest.raises(TypeError, match="^" + re.escape(
                f"X is a folder ({str(tmp_path)!r}), not a collection of images. Pass a "
                "list of its images, for example "
                f"sorted(glob.glob(os.path.join({str(tmp_path)!r}, '*.png')))")
                + ".*" + re.escape("`skclipxray embed FOLDER` embeds every image")):
            embedder.fit_transform(X)
    # A folder inside X is one bad item, named with its index.
    with pytest.raises(ImageReadError, match=re.escape(f"X[0] '{tmp_path}': is a directory")):
        embedder.transform([tmp_path])


def test_y_of_another_length_fails_before_any_image_is_read(embedder, tmp_path, monkeypatch):
    import skclipxray._keys

    read = []
    monkeypatch.setattr(skclipxray._keys, "read_file_bytes",
                        lambda *args, **kwargs: read.append(args))
    X = [tmp_path / f"missing_{i}.png" for i in range(3)]  # unreadable: a read would fail
    y = np.array([0, 1])
    def message(n_rows):
        return "^" + re.escape(f"X has 3 images but y has {n_rows} rows; give one row of y "
                               "per image, in the same order.")

    pipeline = Pipeline([("embed", embedder), ("clf", LogisticRegression())])
    for fit in (embedder.fit, embedder.fit_transform, pipeline.fit):
        with pytest.raises(ValueError, match=message(2)):
            fit(X, y)
    with pytest.raises(ValueError, match=message(4)):
        embedder.fit(pd.Series(map(str, X)), pd.DataFrame(np.zeros((4, 2))))
    assert read == []


def test_bad_item_names_index_and_path(embedder, png_paths, tmp_path):
    missing = tmp_path / "missing.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_paths[0].read_bytes()[:100])
    for bad, index in [(missing, 2), (broken, 1), ({"not": "an image"}, 0)]:
        X = [png_paths[0]] * index + [bad] + [png_paths[1]]
        shown = str(bad) if not isinstance(bad, dict) else "dict"
        with pytest.raises(ImageReadError, match=re.escape(f"X[{index}]") + ".*" + re.escape(shown)):
            embedder.fit_transform(X)


def test_bad_parameters(tiny_model_dir, png_paths):
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'batch_size' parameter of SigLIPImageEmbedder must be an int in the "
            "range [1, inf). Got 0 instead.")):
        SigLIPImageEmbedder(tiny_model_dir, batch_size=0).fit(png_paths)
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'num_workers' parameter of SigLIPImageEmbedder must be an int in the "
            "range [0, inf). Got -1 instead.")):
        SigLIPImageEmbedder(tiny_model_dir, num_workers=-1).fit(png_paths)
    with pytest.raises(ValueError, match="CUDA is not available|only"):
        SigLIPImageEmbedder(tiny_model_dir, device="cuda:3").fit(png_paths)


def test_pipeline_round_trips_through_joblib(tiny_model_dir, png_paths, tmp_path):
    paths = [str(p) for p in png_paths]
    y = np.array([0, 1, 0, 1, 0, 1, 1])
    pipe = Pipeline([
        ("embed", SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False)),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(paths, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(paths), pipe.predict_proba(paths))


def test_fast_preprocessing_is_bit_identical_to_the_image_processor(
    tiny_model_dir, data_dir, png_paths
):
    from skclipxray._preprocessing import PilPreprocessor, preprocessor
    from skclipxray.images import read_image

    backbone = load_backbone(tiny_model_dir, device="cpu")
    processor = backbone.image_processor
    fast = preprocessor(backbone)
    assert isinstance(fast, PilPreprocessor)
    rgba_1024 = data_dir / "real-cxr" / "00004934_000.png"
    for item in [rgba_1024, png_paths[3], np.arange(12, dtype=np.uint8).reshape(3, 4)]:
        image = read_image(item)
        expected = processor(images=image, return_tensors="np")["pixel_values"][0]
        got = fast(image)["pixel_values"]
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_other_image_processors_are_used_as_they_are(tiny_model_dir):
    from transformers import AutoImageProcessor

    from skclipxray._preprocessing import PilPreprocessor

    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    assert PilPreprocessor.applies_to(processor)
    for change in [{"do_center_crop": True}, {"do_normalize": False}, {"do_resize": False}]:
        other = AutoImageProcessor.from_pretrained(tiny_model_dir, **change)
        assert not PilPreprocessor.applies_to(other), change
