"""The persistent embedding cache: the store itself, and the embedder using it."""

import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skclipxray import load_backbone
from skclipxray.cache import EmbeddingCache
from skclipxray.embedders import EmbeddingWarning, SigLIPImageEmbedder
from skclipxray.images import ImageReadError


def _write_pngs(folder, n, seed=0, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"image_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return _write_pngs(tmp_path_factory.mktemp("pngs"), 30)


def _embedder(model_dir, cache=None, **params):
    params = {"device": "cpu", "progress": False, "batch_size": 4, **params}
    return SigLIPImageEmbedder(model_dir, cache=cache, **params)


# The store ---------------------------------------------------------------------


def test_put_get_round_trip_in_chunks(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"key-{i}".encode() for i in range(1_234)]  # several SQL chunks
    vectors = rng.normal(size=(len(keys), 7)).astype(np.float32)
    with EmbeddingCache(tmp_path / "sub" / "cache.sqlite") as cache:
        cache.put_many(keys, vectors, namespace="a")
        found = cache.get_many(keys[::-1] + [b"missing"])
        assert len(cache) == len(keys)
        assert b"key-3" in cache and "key-3" in cache and b"missing" not in cache
    assert set(found) == set(keys)
    for key, vector in zip(keys, vectors):
        np.testing.assert_array_equal(found[key], vector)
        assert found[key].dtype == np.float32
    # Reopened from disk, and an existing key is overwritten.
    cache = EmbeddingCache(tmp_path / "sub" / "cache.sqlite")
    cache.put_many([b"key-0"], np.ones((1, 7)), namespace="a")
    np.testing.assert_array_equal(cache.get_many([b"key-0"])[b"key-0"], np.ones(7))
    assert len(cache) == len(keys)


def test_wal_mode_and_one_transaction_per_put(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many([b"a", b"b"], np.zeros((2, 3)))
    assert cache._connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match=re.escape("vectors[1] has non-finite")):
        cache.put_many([b"c", b"d"], [[0, 0, 0], [0, np.nan, 0]])
    with pytest.raises(ValueError, match=re.escape("shape (3, dim)")):
        cache.put_many([b"c", b"d", b"e"], np.zeros((2, 3)))
    # A failed put stores nothing of its batch.
    assert len(cache) == 2 and b"c" not in cache


def test_readers_are_not_blocked_by_a_writer(tmp_path):
    path = tmp_path / "cache.sqlite"
    EmbeddingCache(path).put_many([b"old"], np.ones((1, 2)))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO embeddings VALUES (?, 1, 2, ?)",
        (b"new", np.zeros(2, np.float32).tobytes()),
    )
    # timeout=0: a reader that had to wait for the writer's lock would fail at once.
    reader = EmbeddingCache(path, timeout=0)
    assert set(reader.get_many([b"old", b"new"])) == {b"old"}  # the committed state
    writer.execute("COMMIT")
    assert set(reader.get_many([b"old", b"new"])) == {b"old", b"new"}
    writer.close()


def test_to_frame_is_keyed_by_path(tmp_path):
    files = _write_pngs(tmp_path / "img", 3)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    stamps = [(os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    cache.put_many([b"k0", b"k1", b"k2"], vectors, namespace="m",
                   paths=[files[2], None, files[0]], stamps=[stamps[2], None, stamps[0]])
    frame = cache.to_frame()
    assert list(frame.index) == [os.path.abspath(files[0]), os.path.abspath(files[2])]
    assert frame.index.name == "path"
    assert list(frame.columns) == ["siglip0", "siglip1", "siglip2"]
    np.testing.assert_array_equal(frame.to_numpy(), vectors[[2, 0]])

    # A file that changed since it was embedded can be left out.
    Image.new("L", (5, 5)).save(files[0])
    assert list(cache.to_frame(check_files=True).index) == [os.path.abspath(files[2])]
    # Linking a path again points it at its new content.
    cache.link_paths([b"k1"], [files[0]], namespace="m")
    np.testing.assert_array_equal(cache.to_frame().loc[os.path.abspath(files[0])], vectors[1])


def test_namespaces_must_be_chosen_when_several(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    assert cache.to_frame().shape == (0, 0)
    cache.put_many([b"a"], np.ones((1, 2)), namespace="one", namespace_info={"dtype": "x"},
                   paths=["a.png"])
    cache.put_many([b"b", b"c"], np.ones((2, 4)), namespace="two", paths=["b.png", None])
    with pytest.raises(ValueError, match="holds 2 namespaces \\(one, two\\)"):
        cache.to_frame()
    with pytest.raises(KeyError, match="no namespace 'three'"):
        cache.to_frame("three")
    assert cache.to_frame("two").shape == (1, 4)
    table = cache.namespaces()
    assert list(table.index) == ["one", "two"]
    assert list(table["n_embeddings"]) == [1, 2]
    assert list(table["n_paths"]) == [1, 1]
    assert table.loc["one", "dtype"] == "x"


def test_unchanged_links_are_not_rewritten(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    cache.put_many([b"a"], np.ones((1, 2)), paths=["a.png"], stamps=[(1, 2)])
    before = cache._connect().total_changes
    cache.link_paths([b"a"], ["a.png"], stamps=[(1, 2)])
    assert cache._connect().total_changes == before
    cache.link_paths([b"a"], ["a.png"], stamps=[(1, 3)])
    assert cache._connect().total_changes == before + 1


def test_bad_cache_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    with pytest.raises(ValueError, match=re.escape(f"'{text}' is not a usable embedding cache")):
        len(EmbeddingCache(text))
    with pytest.raises(IsADirectoryError, match="is a directory"):
        len(EmbeddingCache(tmp_path))
    future = tmp_path / "future.sqlite"
    with sqlite3.connect(future) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match="newer skclipxray"):
        len(EmbeddingCache(future))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(ValueError, match="other tables"):
        len(EmbeddingCache(other))


def test_cache_pickles_without_its_connection(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    cache.put_many([b"a"], np.ones((1, 2)))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._connection is None and copy.path == cache.path
    assert b"a" in copy


# The embedder with a cache ---------------------------------------------------------


def test_second_run_is_served_from_the_cache(tiny_model_dir, pngs, tmp_path):
    cache_path = tmp_path / "cache.sqlite"
    plain = _embedder(tiny_model_dir).fit_transform(pngs[:10])
    embedder = _embedder(tiny_model_dir, cache_path)
    first = embedder.fit_transform(pngs[:10])
    assert (embedder.n_embedded_, embedder.n_cached_) == (10, 0)
    np.testing.assert_array_equal(first, plain)

    again = clone(embedder).fit(pngs)
    second = again.transform(pngs[:12])
    assert (again.n_embedded_, again.n_cached_) == (2, 10)
    np.testing.assert_array_equal(second[:10], first)

    # The cache holds raw embeddings: normalisation is applied after lookup.
    unit = clone(embedder).set_params(normalize=True).fit_transform(pngs[:12])
    np.testing.assert_allclose(unit, second / np.linalg.norm(second, axis=1, keepdims=True),
                               rtol=1e-6)
    assert embedder.cache_namespace_ == again.cache_namespace_

    # Read back as a table keyed by path.
    frame = EmbeddingCache(cache_path).to_frame(embedder.cache_namespace_)
    assert frame.shape == (12, 32)
    np.testing.assert_array_equal(frame.loc[[os.path.abspath(p) for p in pngs[:12]]], second)


def test_keys_follow_content_not_names(tiny_model_dir, pngs, tmp_path):
    embedder = _embedder(tiny_model_dir, tmp_path / "cache.sqlite")
    embedder.fit_transform(pngs[:2])
    # The same bytes under another name are a hit; new bytes under an old name are not.
    renamed = tmp_path / "renamed.png"
    shutil.copy(pngs[0], renamed)
    changed = tmp_path / "changed.png"
    shutil.copy(pngs[1], changed)
    embedder.transform([renamed, changed])
    assert (embedder.n_embedded_, embedder.n_cached_) == (0, 2)
    Image.open(pngs[2]).save(changed)
    result = embedder.transform([changed])
    assert embedder.n_embedded_ == 1
    np.testing.assert_array_equal(result, embedder.transform([pngs[2]]))
    # The path table follows the file to its new content.
    frame = EmbeddingCache(tmp_path / "cache.sqlite").to_frame()
    np.testing.assert_array_equal(frame.loc[str(changed)], result[0])

    # In-memory images are keyed by their pixels; repeats in one call run once.
    pixels = np.asarray(Image.open(pngs[3]))
    embedder.transform([pixels, Image.fromarray(pixels), pixels.copy()])
    assert (embedder.n_embedded_, embedder.n_cached_) == (2, 1)
    embedder.transform([pixels.astype(np.uint16)])
    assert embedder.n_embedded_ == 1


def test_namespace_is_checkpoint_content_dtype_and_preprocessing(tiny_model_dir, pngs, tmp_path):
    from skclipxray.testing import make_tiny_siglip

    cache_path = tmp_path / "cache.sqlite"
    reference = _embedder(tiny_model_dir, cache_path)
    reference.fit_transform(pngs[:3])
    # The same checkpoint copied elsewhere is the same namespace.
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved")
    copy = _embedder(moved, cache_path)
    copy.fit_transform(pngs[:3])
    assert copy.n_cached_ == 3 and copy.cache_namespace_ == reference.cache_namespace_
    # Other weights, another precision: other namespaces.
    other = _embedder(make_tiny_siglip(tmp_path / "other", seed=1), cache_path)
    half = _embedder(tiny_model_dir, cache_path, dtype="bfloat16")
    for embedder in (other, half):
        embedder.fit_transform(pngs[:3])
        assert embedder.n_embedded_ == 3
    table = EmbeddingCache(cache_path).namespaces()
    assert len(table) == 3 and set(table["dtype"]) == {"float32", "bfloat16"}
    assert len({reference.cache_namespace_, other.cache_namespace_,
                half.cache_namespace_}) == 3


def test_grid_search_embeds_each_image_once(tiny_model_dir, pngs, tmp_path, monkeypatch):
    backbone = load_backbone(tiny_model_dir, device="cpu")
    forward = backbone.model.get_image_features
    seen = []

    def counting(pixel_values, **kwargs):
        seen.append(len(pixel_values))
        return forward(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(backbone.model, "get_image_features", counting)
    y = np.arange(len(pngs)) % 2
    grid = {"clf__C": [0.01, 0.1, 1.0, 10.0]}

    def search(cache):
        pipe = Pipeline([
            ("embed", _embedder(tiny_model_dir, cache)),
            ("clf", LogisticRegression(max_iter=1000)),
        ])
        return GridSearchCV(pipe, grid, cv=5, scoring="roc_auc").fit(pngs, y)

    cache_path = tmp_path / "cache.sqlite"
    cached = search(cache_path)
    assert sum(seen) == len(pngs)  # 5 folds x 4 points + refit: one pass per image
    assert len(EmbeddingCache(cache_path)) == len(pngs)
    seen.clear()
    uncached = search(None)
    assert sum(seen) == 5 * 4 * len(pngs) + len(pngs)
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"], uncached.cv_results_["mean_test_score"]
    )


def test_on_error_nan_warns_once_and_does_not_cache_failures(
    tiny_model_dir, pngs, tmp_path
):
    missing = tmp_path / "missing.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(pngs[0], "rb").read()[:60])
    X = [pngs[0], missing, pngs[1], broken, {"not": "an image"}, pngs[2]]
    cache_path = tmp_path / "cache.sqlite"
    embedder = _embedder(tiny_model_dir, cache_path, on_error="nan", batch_size=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embedder.fit_transform(X)
    ours = [w for w in caught if issubclass(w.category, EmbeddingWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "3 of 6 images could not be read" in message
    for index, shown in [(1, str(missing)), (3, str(broken)), (4, "dict")]:
        assert re.search(re.escape(f"X[{index}]") + ".*" + re.escape(shown), message)
    assert "file not found" in message and "truncated" in message
    assert sorted(embedder.read_errors_) == [1, 3, 4]
    assert np.isnan(out[[1, 3, 4]]).all() and np.isfinite(out[[0, 2, 5]]).all()
    np.testing.assert_allclose(out[[0, 2, 5]], _embedder(tiny_model_dir).fit_transform(
        [pngs[0], pngs[1], pngs[2]]), rtol=1e-5, atol=1e-6)
    assert len(EmbeddingCache(cache_path)) == 3

    # Fixed files are retried on the next run; the rest comes from the cache.
    shutil.copy(pngs[3], missing)
    shutil.copy(pngs[4], broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedder.transform(X[:4] + X[5:])
    assert not [w for w in caught if issubclass(w.category, EmbeddingWarning)]
    assert (embedder.n_embedded_, embedder.n_cached_) == (2, 3)
    assert embedder.read_errors_ == {}


def test_on_error_raise_keeps_what_came_before(tiny_model_dir, pngs, tmp_path):
    cache_path = tmp_path / "cache.sqlite"
    X = pngs[:5] + [str(tmp_path / "missing.png")] + pngs[5:8]
    embedder = _embedder(tiny_model_dir, cache_path, batch_size=2)
    with pytest.raises(ImageReadError, match=re.escape("X[5] '") + ".*missing.png'"):
        embedder.fit_transform(X)
    # Both complete batches and the partial one before the bad item are stored.
    assert len(EmbeddingCache(cache_path)) == 5
    embedder.transform(pngs[:8])
    assert (embedder.n_embedded_, embedder.n_cached_) == (3, 5)


def test_bad_cache_and_on_error_parameters(tiny_model_dir, pngs, tmp_path):
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'nan'"):
        _embedder(tiny_model_dir, on_error="skip").fit(pngs)
    with pytest.raises(TypeError, match="cache must be the path"):
        _embedder(tiny_model_dir, cache=42).fit(pngs)
    with pytest.raises(ValueError, match="compile must be True, False or one of 'default'"):
        _embedder(tiny_model_dir, compile="yes").fit(pngs)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        _embedder(tiny_model_dir, cache=tmp_path).fit_transform(pngs[:1])


def test_estimator_pickles_only_the_cache_path(tiny_model_dir, pngs, tmp_path):
    embedder = _embedder(tiny_model_dir, str(tmp_path / "cache.sqlite"))
    expected = embedder.fit_transform(pngs[:3])
    dumped = pickle.dumps(embedder)
    assert len(dumped) < 2_000
    joblib.dump(embedder, tmp_path / "embedder.joblib")
    loaded = joblib.load(tmp_path / "embedder.joblib")
    np.testing.assert_array_equal(loaded.transform(pngs[:3]), expected)
    assert loaded.n_cached_ == 3


def test_compile_uses_one_compiled_tower_per_checkpoint(
    tiny_model_dir, pngs, tmp_path, monkeypatch
):
    import torch

    compiled = []

    def fake_compile(module, mode=None):  # torch.compile's own work is torch's to test
        compiled.append((module, mode))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    backbone = load_backbone(tiny_model_dir, device="cpu")
    monkeypatch.setattr(backbone, "_vision_models", {})
    shapes = []
    hook = backbone.model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["pixel_values"].shape)),
        with_kwargs=True,
    )
    try:
        embedder = _embedder(tiny_model_dir, compile=True, batch_size=4)
        out = embedder.fit_transform(pngs[:6])
        clone(embedder).fit_transform(pngs[:2])
        # Another mode is another compiled tower; asking again reuses it.
        for _ in range(2):
            _embedder(tiny_model_dir, compile="max-autotune", batch_size=4).fit_transform(
                pngs[:1]
            )
    finally:
        hook.remove()
    tower = backbone.model.vision_model
    assert compiled == [(tower, "default"), (tower, "max-autotune")]
    # The last, partial batch is padded to the compiled batch shape.
    assert [shape[0] for shape in shapes] == [4, 4, 4, 4, 4]
    np.testing.assert_allclose(out, _embedder(tiny_model_dir).fit_transform(pngs[:6]),
                               rtol=1e-5, atol=1e-6)


_CHILD = """
import sys, time
import skclipxray.embedders as embedders
from skclipxray.embedders import SigLIPImageEmbedder

read_image = embedders.read_image

def slow_read_image(item, **kwargs):  # make the run last long enough to be killed
    time.sleep(0.2)
    return read_image(item, **kwargs)

embedders.read_image = slow_read_image
model, cache, *paths = sys.argv[1:]
SigLIPImageEmbedder(model, device="cpu", progress=False, batch_size=2,
                    num_workers=1, cache=cache).fit_transform(paths)
print("finished")
"""


def test_sigkill_mid_run_loses_at_most_the_batch_in_flight(tiny_model_dir, pngs, tmp_path):
    cache_path = tmp_path / "cache.sqlite"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(tiny_model_dir),
         str(cache_path), *pngs],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    reader = EmbeddingCache(cache_path, timeout=5)
    deadline = time.monotonic() + 120
    try:
        # A concurrent reader polls while the child writes, and kills it mid-run.
        while not (cache_path.exists() and len(reader) >= 4):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never committed a batch"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    reader.close()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(cache_path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_done = len(EmbeddingCache(cache_path))
    assert 4 <= n_done < len(pngs) and n_done % 2 == 0  # whole batches only

    embedder = _embedder(tiny_model_dir, cache_path, batch_size=2)
    resumed = embedder.fit_transform(pngs)
    assert (embedder.n_embedded_, embedder.n_cached_) == (len(pngs) - n_done, n_done)
    np.testing.assert_allclose(
        resumed, _embedder(tiny_model_dir, batch_size=2).fit_transform(pngs),
        rtol=1e-5, atol=1e-6,
    )
    assert EmbeddingCache(cache_path).to_frame().shape == (len(pngs), 32)
