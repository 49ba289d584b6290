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
import zlib

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.pipeline import Pipeline

from skclipxray import load_backbone
from skclipxray.cache import EmbeddingCache, EmbeddingCacheError, ReadOnlyCacheError
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
    blob = np.zeros(2, np.float32).tobytes()
    writer.execute("INSERT INTO embeddings VALUES (?, 1, 2, ?, ?)",
                   (b"new", blob, zlib.crc32(blob)))
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
    with pytest.raises(EmbeddingCacheError, match=re.escape(
            f"'{text}' is not a usable embedding cache: file is not a database. "
            "If it is a damaged cache, delete it")):
        len(EmbeddingCache(text))
    with pytest.raises(EmbeddingCacheError, match="is a directory"):
        len(EmbeddingCache(tmp_path))
    future = tmp_path / "future.sqlite"
    with sqlite3.connect(future) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(EmbeddingCacheError, match="newer skclipxray .*format 99.*Upgrade"):
        len(EmbeddingCache(future))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(EmbeddingCacheError, match=re.escape("other tables (['patients'])")):
        len(EmbeddingCache(other))
    assert issubclass(EmbeddingCacheError, OSError)
    assert issubclass(ReadOnlyCacheError, EmbeddingCacheError)
    with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
        EmbeddingCache(text, timeout=-1)


def test_foreign_table_named_embeddings(tmp_path):
    # Without a format number: not a cache, whatever its tables are called.
    path = tmp_path / "foreign.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE embeddings (id INTEGER, vector TEXT)")
    with pytest.raises(EmbeddingCacheError, match=re.escape(
            f"'{path}' is not a usable embedding cache: it is an SQLite database "
            "holding other tables (['embeddings'])")):
        EmbeddingCache(path).get_many([b"a"])
    # With a format number but other columns.
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 2")
    with pytest.raises(EmbeddingCacheError, match=re.escape(
            "it has no table 'namespaces', which a cache of format 2 has")):
        EmbeddingCache(path).get_many([b"a"])
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    cache.put_many([b"a"], np.ones((1, 2)))
    cache.close()
    with sqlite3.connect(tmp_path / "cache.sqlite") as connection:
        connection.execute("ALTER TABLE embeddings DROP COLUMN crc")
    with pytest.raises(EmbeddingCacheError, match=re.escape(
            "its table 'embeddings' has the columns ['key', 'namespace_id', 'dim', "
            "'vector'], not those of a cache of format 2")):
        len(EmbeddingCache(tmp_path / "cache.sqlite"))


def _filled_cache(path, n=2_000, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    keys = [f"key-{i}".encode() for i in range(n)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    with EmbeddingCache(path) as cache:
        cache.put_many(keys, vectors, namespace="m", paths=[f"{k.decode()}.png" for k in keys])
    return keys, vectors


def test_damaged_page_names_the_file(tmp_path):
    path = tmp_path / "cache.sqlite"
    keys, _ = _filled_cache(path)
    assert not (tmp_path / "cache.sqlite-wal").exists()  # checkpointed into the file
    size = path.stat().st_size
    page = 4096
    with open(path, "r+b") as fh:  # one page in the middle, overwritten
        fh.seek(size // 2 // page * page)
        fh.write(np.random.default_rng(1).bytes(page))
    pattern = re.escape(
        f"'{path}' is not a usable embedding cache: database disk image is malformed. "
        "If it is a damaged cache, delete it (with its -wal and -shm files, if any)"
    )
    cache = EmbeddingCache(path)
    with pytest.raises(EmbeddingCacheError, match=pattern):
        cache.get_many(keys)
    with pytest.raises(EmbeddingCacheError, match=pattern):
        cache.to_frame()


def test_held_write_lock_fails_after_timeout(tmp_path):
    path = tmp_path / "cache.sqlite"
    EmbeddingCache(path).put_many([b"a"], np.ones((1, 2)))
    cache = EmbeddingCache(path, timeout=0.1)
    assert cache._connect().execute("PRAGMA busy_timeout").fetchone()[0] == 100
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(EmbeddingCacheError, match=re.escape(
                f"The embedding cache '{path}' is locked: another process holds its "
                "write lock and did not release it within timeout=0.1 seconds. ") +
                r".*give a longer timeout, in seconds \(EmbeddingCache\(timeout=\.\.\.\), "
                r"SigLIPImageEmbedder\(cache_timeout=\.\.\.\)\)"):
            cache.put_many([b"b"], np.zeros((1, 2)))
        assert 0.09 < time.monotonic() - start < 10
        assert set(cache.get_many([b"a", b"b"])) == {b"a"}  # reading still works
    finally:
        other.execute("ROLLBACK")
        other.close()
    cache.put_many([b"b"], np.zeros((1, 2)))  # the failed batch can be stored again
    assert b"b" in cache
    assert pickle.loads(pickle.dumps(cache)).timeout == 0.1


def _damage(path, key, change):
    """Rewrite a stored row with raw SQL: change(vector, crc) -> (vector, crc)."""
    with sqlite3.connect(path) as connection:
        blob, crc = connection.execute(
            "SELECT vector, crc FROM embeddings WHERE key = ?", (key,)).fetchone()
        connection.execute("UPDATE embeddings SET vector = ?, crc = ? WHERE key = ?",
                           (*change(blob, crc), key))


def _with_nan(blob, crc):
    vector = np.frombuffer(blob, "<f4").copy()
    vector[3] = np.nan
    return vector.tobytes(), zlib.crc32(vector.tobytes())  # a checksum that matches


def _truncated(blob, crc):
    return blob[:-4], zlib.crc32(blob[:-4])


def _flip_bit(blob, crc):
    words = np.frombuffer(blob, "<u4").copy()
    words[5] ^= 1 << 30  # an exponent bit: 0.25 becomes 8.5e37
    return words.tobytes(), crc  # the checksum of the value before


def test_damaged_rows_are_never_served_and_are_replaced(tmp_path):
    path = tmp_path / "cache.sqlite"
    keys = [b"good", b"nan", b"short", b"flipped"]
    vectors = np.full((4, 8), 0.25, dtype=np.float32)
    vectors[0] = np.arange(8)
    cache = EmbeddingCache(path)
    cache.put_many(keys, vectors, paths=["good.png", "nan.png", "short.png", "flipped.png"])
    for key, change in [(b"nan", _with_nan), (b"short", _truncated), (b"flipped", _flip_bit)]:
        _damage(path, key, change)
    flipped = np.frombuffer(_flip_bit(vectors[3].tobytes(), 0)[0], "<f4")
    assert np.isfinite(flipped).all() and flipped.max() > 8e37  # only the checksum tells

    found = cache.get_many(keys)
    assert list(found) == [b"good"] and cache.n_rejected == 3
    np.testing.assert_array_equal(found[b"good"], vectors[0])
    assert b"flipped" not in cache and cache.n_rejected == 4
    frame = cache.to_frame()
    assert list(frame.index) == [os.path.abspath("good.png")] and cache.n_rejected == 7
    assert len(cache) == 4  # still stored, until replaced

    # Computed again and stored, the rows are replaced and served.
    cache.put_many(keys[1:], vectors[1:])
    found = cache.get_many(keys)
    assert sorted(found) == sorted(keys) and cache.n_rejected == 7
    np.testing.assert_array_equal(np.stack([found[key] for key in keys]), vectors)
    assert cache.to_frame().shape == (4, 8)
    assert pickle.loads(pickle.dumps(cache)).n_rejected == 0


_FORMAT_1 = (
    "CREATE TABLE namespaces (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, info TEXT)",
    "CREATE TABLE embeddings (key BLOB PRIMARY KEY, namespace_id INTEGER NOT NULL "
    "REFERENCES namespaces(id), dim INTEGER NOT NULL, vector BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE paths (namespace_id INTEGER NOT NULL REFERENCES namespaces(id), "
    "path TEXT NOT NULL, key BLOB NOT NULL, size INTEGER, mtime_ns INTEGER, "
    "PRIMARY KEY (namespace_id, path)) WITHOUT ROWID",
)


def _format_1_cache(path):
    """A cache as the first format wrote it (no checksums), with two bad rows."""
    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    nan = np.array([1, np.nan, 0, 0], dtype=np.float32)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        for statement in _FORMAT_1:
            connection.execute(statement)
        connection.execute("INSERT INTO namespaces VALUES (1, 'm', NULL)")
        rows = [(f"k{i}".encode(), 1, 4, row.tobytes()) for i, row in enumerate(good)]
        rows += [(b"nan", 1, 4, nan.tobytes()), (b"short", 1, 4, good[0].tobytes()[:12])]
        connection.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?)", rows)
        connection.executemany("INSERT INTO paths VALUES (1, ?, ?, NULL, NULL)",
                               [(f"/img/{key.decode()}.png", key) for key, *_ in rows])
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    return [row[0] for row in rows], good


def test_format_1_cache_is_upgraded_in_place(tmp_path):
    path = tmp_path / "cache.sqlite"
    keys, good = _format_1_cache(path)
    cache = EmbeddingCache(path)
    found = cache.get_many(keys)
    assert sorted(found) == [b"k0", b"k1", b"k2"]
    np.testing.assert_array_equal(np.stack([found[key] for key in keys[:3]]), good)
    assert cache.n_rejected == 0  # the bad rows went in the upgrade
    assert len(cache) == 3
    connection = cache._connect()
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    for blob, crc in connection.execute("SELECT vector, crc FROM embeddings"):
        assert crc == zlib.crc32(blob)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert cache.to_frame().shape == (3, 4)
    cache.put_many([b"nan"], np.ones((1, 4)))
    assert b"nan" in EmbeddingCache(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_cache_serves_hits(tmp_path, what, unwritable):
    folder = tmp_path / "shared"
    path = folder / "cache.sqlite"
    keys, vectors = _filled_cache(path, n=20, dim=4)
    with unwritable(path if what == "file" else folder):
        cache = EmbeddingCache(path)
        assert cache.read_only
        found = cache.get_many(keys + [b"missing"])
        assert sorted(found) == sorted(keys)
        np.testing.assert_array_equal(np.stack([found[key] for key in keys]), vectors)
        assert cache.to_frame().shape == (20, 4) and len(cache) == 20
        reason = "the file cannot be written" if what == "file" else "its folder cannot"
        with pytest.raises(ReadOnlyCacheError, match=re.escape(
                f"The embedding cache '{path}' is read-only ({reason}") +
                ".*new ones cannot be stored. Give a cache path you can write to"):
            cache.put_many([b"new"], np.ones((1, 4)), namespace="m")
        # Paths already recorded need no write; a new one does.
        cache.link_paths(keys[:1], ["key-0.png"], namespace="m")
        with pytest.raises(ReadOnlyCacheError):
            cache.link_paths(keys[:1], ["elsewhere.png"], namespace="m")
        assert cache.get_many([b"new"]) == {}
        cache.close()
    assert not EmbeddingCache(path).read_only


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_read_only_cache_of_format_1_is_read_without_upgrade(tmp_path, unwritable):
    path = tmp_path / "shared" / "cache.sqlite"
    path.parent.mkdir()
    keys, good = _format_1_cache(path)
    with unwritable(path.parent):
        cache = EmbeddingCache(path)
        found = cache.get_many(keys)
        assert cache.read_only and sorted(found) == [b"k0", b"k1", b"k2"]
        assert cache.n_rejected == 2  # checked for length and finiteness
        np.testing.assert_array_equal(np.stack([found[key] for key in keys[:3]]), good)
        assert cache._connect().execute("PRAGMA user_version").fetchone()[0] == 1
        cache.close()
    with pytest.raises(EmbeddingCacheError, match=re.escape(
            f"Cannot create the embedding cache '{tmp_path}/shared/new/cache.sqlite'")):
        with unwritable(path.parent):
            len(EmbeddingCache(path.parent / "new" / "cache.sqlite"))


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
    seen = []
    encoder = backbone.image_encoder()
    hook = encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(len(kwargs["pixel_values"])), with_kwargs=True
    )
    y = np.arange(len(pngs)) % 2
    grid = {"clf__C": [0.01, 0.1, 1.0, 10.0]}

    def search(cache):
        # One image per batch: a fold embeds an image as every other fold
        # does (another batch can change the last bits, and so a rank).
        pipe = Pipeline([
            ("embed", _embedder(tiny_model_dir, cache, batch_size=1)),
            ("clf", LogisticRegression(max_iter=1000)),
        ])
        return GridSearchCV(pipe, grid, cv=5, scoring="roc_auc").fit(pngs, y)

    cache_path = tmp_path / "cache.sqlite"
    try:
        cached = search(cache_path)
        n_cached_run = sum(seen)
        seen.clear()
        uncached = search(None)
    finally:
        hook.remove()
    assert n_cached_run == len(pngs)  # 5 folds x 4 points + refit: one pass per image
    assert len(EmbeddingCache(cache_path)) == len(pngs)
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
    # The options of a StrOptions are listed in set order: not matched.
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'on_error' parameter of SigLIPImageEmbedder must be a str among {")
            + ".*" + re.escape("}. Got 'skip' instead.")):
        _embedder(tiny_model_dir, on_error="skip").fit(pngs)
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'cache' parameter of SigLIPImageEmbedder must be None, an instance of "
            "'str' or an instance of 'os.PathLike'. Got 42 instead.")):
        _embedder(tiny_model_dir, cache=42).fit(pngs)
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'compile' parameter of SigLIPImageEmbedder must be an instance of "
            "'bool' or an instance of 'numpy.bool' or a str among {")
            + ".*'max-autotune'.*" + re.escape("}. Got 'yes' instead.")):
        _embedder(tiny_model_dir, compile="yes").transform(pngs[:1])
    with pytest.raises(EmbeddingCacheError, match="is a directory"):
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
    monkeypatch.setattr(backbone, "_image_encoders", {})
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
    encoder = backbone.image_encoder()
    assert compiled == [(encoder, "default"), (encoder, "max-autotune")]
    # The last, partial batch is padded to the compiled batch shape.
    assert [shape[0] for shape in shapes] == [4, 4, 4, 4, 4]
    np.testing.assert_allclose(out, _embedder(tiny_model_dir).fit_transform(pngs[:6]),
                               rtol=1e-5, atol=1e-6)


_CHILD = """
import sys, time
import skclipxray._engine as engine
from skclipxray.embedders import SigLIPImageEmbedder

read_image = engine.read_image

def slow_read_image(item, **kwargs):  # make the run last long enough to be killed
    time.sleep(0.2)
    return read_image(item, **kwargs)

engine.read_image = slow_read_image
model, cache, *paths = sys.argv[1:]
SigLIPImageEmbedder(model, device="cpu", dtype="float32", progress=False, batch_size=2,
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


def test_a_busy_open_is_tried_again_until_the_timeout(tmp_path, monkeypatch):
    """Opening can meet another connection's WAL switch or recovery, which SQLite
    answers with "busy" at once, without its busy timeout."""
    prepare = EmbeddingCache._prepare_schema
    calls = []

    def busy_twice(self, connection, *, writable):
        calls.append(writable)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return prepare(self, connection, writable=writable)

    monkeypatch.setattr(EmbeddingCache, "_prepare_schema", busy_twice)
    cache = EmbeddingCache(tmp_path / "cache.sqlite", timeout=5)
    assert len(cache) == 0 and len(calls) == 3

    def always_busy(self, connection, *, writable):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(EmbeddingCache, "_prepare_schema", always_busy)
    start = time.monotonic()
    with pytest.raises(EmbeddingCacheError, match="is locked: .* within timeout=0.3 seconds"):
        len(EmbeddingCache(tmp_path / "other.sqlite", timeout=0.3))
    assert time.monotonic() - start < 1.0
