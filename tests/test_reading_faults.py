"""Files that fight back, and the cache's side of reading them.

Special files (FIFOs, devices, sockets) and huge files are refused before they
are read; each file is read once, so that a file replaced mid-run can never
store one content's embedding under another content's key; a call served
entirely from the cache never loads the model; a read-only cache serves its
hits; damaged rows are embedded again.
"""

import hashlib
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.utils._param_validation import InvalidParameterError

import skclipxray.embedders
from skclipxray import SigLIPImageEmbedder, load_backbone
from skclipxray._backbone import checkpoint_info
from skclipxray.cache import EmbeddingCache, EmbeddingCacheError, ReadOnlyCacheError
from skclipxray._keys import cache_namespace, load_item
from skclipxray.embedders import EmbeddingWarning
from skclipxray.images import ImageReadError, read_file_bytes, read_image

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")


def _png_bytes(seed, shape=(40, 36)):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(6):
        path = folder / f"image_{i}.png"
        path.write_bytes(_png_bytes(i, (40 + i, 36)))
        paths.append(str(path))
    return paths


def _embedder(model, **params):
    return SigLIPImageEmbedder(model, **{"device": "cpu", "progress": False, "batch_size": 2,
                                         **params})


def _refuse_to_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(skclipxray.embedders, "load_backbone", refuse)


def _unblock(fifo):
    """Let a reader blocked opening ``fifo`` go on (it then reads an empty file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader is waiting


def _run_bounded(function, fifo, seconds=20):
    """``function()``'s outcome; fail, rather than hang, if it blocks on ``fifo``."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    while thread.is_alive():
        _unblock(fifo)
        thread.join(0.1)
        outcome.setdefault("hung", True)
    assert "hung" not in outcome, f"blocked on the FIFO {fifo} for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# Special files -----------------------------------------------------------------------


@posix_only
def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    for read in (read_image, read_file_bytes):
        with pytest.raises(ImageReadError, match="^" + re.escape(
                f"X[4] '{fifo}': is a FIFO (named pipe), not a regular file; "
                "only regular files are read")):
            _run_bounded(lambda read=read: read(fifo, index=4), fifo)


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_character_devices_are_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(ImageReadError, match="^" + re.escape(
            f"X[0] '{device}': is a character device, not a regular file")):
        read_image(device, index=0)


@posix_only
def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.png"
    if len(str(path)) > 100:
        pytest.skip("path too long for a Unix socket")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ImageReadError, match="^" + re.escape(
                f"'{path}': is a socket, not a regular file")):
            read_image(path)


@posix_only
def test_a_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "scan.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageReadError, match=re.escape(f"'{link}': is a character device")):
        read_image(link)


@posix_only
def test_a_fifo_among_images_gets_a_nan_row_and_the_rest_embeds(tiny_model_dir, pngs, tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    X = pngs[:3] + [fifo] + pngs[3:]
    expected = _embedder(tiny_model_dir).transform(pngs)
    for cache in (None, tmp_path / "cache.sqlite"):
        embedder = _embedder(tiny_model_dir, num_workers=2, on_error="nan", cache=cache)
        with pytest.warns(EmbeddingWarning, match=re.escape(
                f"X[3] '{fifo}': is a FIFO (named pipe), not a regular file")):
            out = _run_bounded(lambda embedder=embedder: embedder.transform(X), fifo)
        assert np.isnan(out[3]).all()
        np.testing.assert_allclose(np.delete(out, 3, axis=0), expected, rtol=1e-5, atol=1e-6)


_INTERRUPTED = """
import sys
from skclipxray import SigLIPImageEmbedder
model, fifo, *paths = sys.argv[1:]
embedder = SigLIPImageEmbedder(model, device="cpu", dtype="float32", progress=False, batch_size=2,
                               num_workers=2, on_error="nan")
X = paths[:2] + [fifo] + paths[2:]
import warnings
warnings.simplefilter("ignore")
embedder.transform(X)
print("ready", flush=True)
while True:
    embedder.transform(X)
"""


@posix_only
def test_ctrl_c_stops_a_run_with_reader_threads(tiny_model_dir, pngs, tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, str(tiny_model_dir), str(fifo), *pngs * 20],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        watchdog = threading.Timer(120, child.kill)  # a run stuck on the FIFO
        watchdog.start()
        line = child.stdout.readline()
        watchdog.cancel()
        assert line == "ready\n", "the first run never ended: " + child.stderr.read()
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not stop within 30 s of Ctrl-C")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "KeyboardInterrupt" in child.stderr.read()


# Size limits -------------------------------------------------------------------------


def test_a_file_above_the_limit_is_refused_before_it_is_read(tmp_path, pngs):
    huge = tmp_path / "disk.img"
    with open(huge, "wb") as fh:
        fh.truncate(3 << 30)  # sparse: no disk space, and it must not be read
    with pytest.raises(ImageReadError, match="^" + re.escape(
            f"X[2] '{huge}': file is too large: 3221225472 bytes, above the limit of "
            "max_file_size=1073741824 bytes; pass a larger max_file_size to read it")):
        read_image(huge, index=2)
    size = os.path.getsize(pngs[0])
    with pytest.raises(ImageReadError, match=re.escape(f"above the limit of max_file_size={size - 1}")):
        read_image(pngs[0], max_file_size=size - 1)
    assert read_image(pngs[0], max_file_size=size).size == (36, 40)


def test_with_a_cache_a_huge_file_is_not_read_either(tiny_model_dir, pngs, tmp_path):
    huge = tmp_path / "disk.img"
    with open(huge, "wb") as fh:
        fh.truncate(2 << 30)
    for max_file_size in (1 << 30, 1000):
        embedder = _embedder(tiny_model_dir, cache=tmp_path / "cache.sqlite", on_error="nan",
                             max_file_size=max_file_size)
        X = [huge] if max_file_size > 1000 else [pngs[0]]
        with pytest.warns(EmbeddingWarning, match=re.escape("file is too large")):
            out = embedder.transform(X)
        assert np.isnan(out).all()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_a_file_larger_than_its_stat_size_is_cut_at_the_limit():
    # /proc files have st_size 0 and any length: as a file that grows while read.
    with pytest.raises(ImageReadError, match=re.escape(
            "'/proc/self/maps': file grew while being read, past the limit of "
            "max_file_size=64 bytes")):
        read_image("/proc/self/maps", max_file_size=64)


@pytest.mark.parametrize("value", [0, -1, 1.5, "1GB", True, None])
def test_bad_max_file_size(pngs, value):
    message = re.escape(f"max_file_size must be a positive number of bytes, got {value!r}.")
    with pytest.raises(ValueError, match=message):
        read_image(pngs[0], max_file_size=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "1GB", None])
def test_bad_max_file_size_of_the_embedder(tiny_model_dir, pngs, value):
    message = re.escape(
        "The 'max_file_size' parameter of SigLIPImageEmbedder must be an int in the "
        f"range [1, inf). Got {value!r} instead.")
    for call in ("fit", "transform"):  # transform needs no fit: it checks too
        with pytest.raises(InvalidParameterError, match=message):
            getattr(_embedder(tiny_model_dir, max_file_size=value), call)(pngs[:1])


def test_max_file_size_does_not_change_the_cache_namespace(tiny_model_dir, pngs, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = _embedder(tiny_model_dir, cache=cache)
    first.transform(pngs[:2])
    second = _embedder(tiny_model_dir, cache=cache, max_file_size=10_000)
    second.transform(pngs[:2])
    assert second.cache_namespace_ == first.cache_namespace_ and second.n_cached_ == 2
    assert second.get_params()["max_file_size"] == 10_000


# Read once -----------------------------------------------------------------------------


def test_each_file_is_opened_once_per_call(tiny_model_dir, pngs, tmp_path, monkeypatch):
    import builtins

    opened = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    def builtin_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", builtin_open)
    embedder = _embedder(tiny_model_dir, cache=tmp_path / "cache.sqlite", num_workers=2)
    for n_embedded in (3, 0):  # misses, then hits
        opened.clear()
        embedder.transform(pngs[:3])
        assert embedder.n_embedded_ == n_embedded
        assert sorted(path for path in opened if path in pngs) == pngs[:3]


def _swap_on_lookup(monkeypatch, paths, contents):
    """Replace every file with its other content each time the cache is looked up:
    between the hash of a file and its decoding, in a reader that reads twice."""
    get_many = EmbeddingCache.get_many
    state = {"turn": 0}
    lock = threading.Lock()  # lookups come from several reader threads

    def swapping_get_many(self, keys):
        found = get_many(self, keys)
        with lock:
            state["turn"] += 1
            for i, path in enumerate(paths):
                temporary = f"{path}.tmp"
                with open(temporary, "wb") as fh:
                    fh.write(contents[(state["turn"] + i) % len(contents)])
                os.replace(temporary, path)
        return found

    monkeypatch.setattr(EmbeddingCache, "get_many", swapping_get_many)


def _check_rows(cache_path, namespace, references):
    """Every stored row is the embedding of the content its key names.

    ``references`` maps each known content (bytes) to its fresh embedding.
    Returns the number of rows checked.
    """
    keys = {_key_of(namespace, data): vector for data, vector in references.items()}
    with sqlite3.connect(cache_path) as connection:
        rows = connection.execute("SELECT key, vector FROM embeddings").fetchall()
    for key, blob in rows:
        assert key in keys, "a row's key names no content that was ever in the files"
        np.testing.assert_allclose(np.frombuffer(blob, "<f4"), keys[key], rtol=1e-5,
                                   atol=1e-5)
    return len(rows)


def _key_of(namespace, data):
    """The cache key of a file holding ``data``, as the embedder has always computed it."""
    hasher = hashlib.blake2b(namespace.encode(), digest_size=32)
    hasher.update(b"\0file\0")
    hasher.update(data)
    return hasher.digest()


@pytest.fixture(scope="module")
def two_contents(tiny_model_dir, tmp_path_factory):
    """Two different PNG files' bytes, and their embeddings."""
    folder = tmp_path_factory.mktemp("contents")
    contents = [_png_bytes(10, (44, 40)), _png_bytes(11, (30, 52))]
    paths = []
    for i, data in enumerate(contents):
        paths.append(folder / f"content_{i}.png")
        paths[-1].write_bytes(data)
    vectors = _embedder(tiny_model_dir, batch_size=1).transform(paths)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    return dict(zip(contents, vectors))


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_file_replaced_between_hash_and_decode_is_stored_under_its_own_key(
    tiny_model_dir, two_contents, tmp_path, monkeypatch, n_jobs
):
    contents = list(two_contents)
    paths = [tmp_path / f"scan_{i}.png" for i in range(4)]
    for i, path in enumerate(paths):
        path.write_bytes(contents[i % 2])
    cache_path = tmp_path / "cache.sqlite"
    _swap_on_lookup(monkeypatch, paths, contents)
    # One reader thread: each lookup swaps the files after the key of one was hashed.
    embedder = _embedder(tiny_model_dir, cache=cache_path, n_jobs=n_jobs, chunk_size=2,
                         num_workers=0)
    with joblib.parallel_config(backend="threading"):  # n_jobs=2: the chunked path
        embedder.transform(paths)
    assert _check_rows(cache_path, embedder.cache_namespace_, two_contents) >= 1


def test_files_swapped_while_embedding_never_poison_the_cache(
    tiny_model_dir, two_contents, tmp_path
):
    """A thread keeps replacing the files while runs embed them into fresh caches."""
    contents = list(two_contents)
    paths = [tmp_path / f"scan_{i}.png" for i in range(4)]
    for i, path in enumerate(paths):
        path.write_bytes(contents[i % 2])
    stop = threading.Event()

    def swap():
        turn = 0
        while not stop.is_set():
            turn += 1
            for i, path in enumerate(paths):
                temporary = f"{path}.tmp"
                with open(temporary, "wb") as fh:
                    fh.write(contents[(turn + i) % 2])
                os.replace(temporary, path)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    caches = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            caches.append(tmp_path / f"cache_{len(caches)}.sqlite")
            embedder = _embedder(tiny_model_dir, cache=caches[-1], num_workers=2,
                                 n_jobs=2 if len(caches) % 2 else None, chunk_size=2)
            with joblib.parallel_config(backend="threading"):
                embedder.transform(paths * 2)
    finally:
        stop.set()
        swapper.join()
    n_rows = [_check_rows(path, embedder.cache_namespace_, two_contents) for path in caches]
    assert len(caches) >= 5 and sum(n_rows) >= len(caches)


# Fully cached calls --------------------------------------------------------------------


@pytest.mark.parametrize("dtype, quantize", [("auto", None), ("bfloat16", None),
                                             ("auto", "int8")])
def test_the_weight_free_namespace_is_that_of_the_loaded_model(tiny_model_dir, dtype,
                                                               quantize):
    checkpoint = checkpoint_info(tiny_model_dir, device="cpu", dtype=dtype)
    backbone = load_backbone(tiny_model_dir, device="cpu", dtype=dtype)
    assert checkpoint is not backbone and checkpoint.embedding_dim == backbone.embedding_dim
    assert cache_namespace(checkpoint, quantize) == cache_namespace(backbone, quantize)


def test_a_fully_cached_call_does_not_load_the_model(tiny_model_dir, pngs, tmp_path,
                                                     monkeypatch):
    cache = tmp_path / "cache.sqlite"
    expected = _embedder(tiny_model_dir, cache=cache).fit_transform(pngs[:4])
    _refuse_to_load(monkeypatch)
    embedder = _embedder(tiny_model_dir, cache=cache)
    assert embedder.fit(pngs[:4]).n_features_out_ == 32
    out = embedder.transform(pngs[:4] + pngs[:1])
    np.testing.assert_array_equal(out, np.concatenate([expected, expected[:1]]))
    assert (embedder.n_embedded_, embedder.n_cached_, embedder.n_features_out_) == (0, 5, 32)
    with pytest.raises(AssertionError, match="the model was loaded"):
        embedder.transform(pngs[:5])  # one miss: the model is needed


_FULLY_CACHED = """
import sys
from skclipxray import SigLIPImageEmbedder
from skclipxray._backbone import _BACKBONES
model, cache, *paths = sys.argv[1:]
embedder = SigLIPImageEmbedder(model, device="cpu", dtype="float32", progress=False, cache=cache)
embedder.fit_transform(paths)
print(embedder.n_cached_, len(_BACKBONES))
"""


def test_a_fully_cached_run_in_a_new_process_loads_no_weights(tiny_model_dir, pngs, tmp_path):
    cache = tmp_path / "cache.sqlite"
    _embedder(tiny_model_dir, cache=cache).transform(pngs)
    child = subprocess.run(
        [sys.executable, "-c", _FULLY_CACHED, str(tiny_model_dir), str(cache), *pngs],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    n_cached, n_loaded = child.stdout.split()
    assert (int(n_cached), int(n_loaded)) == (len(pngs), 0)


# Read-only caches ----------------------------------------------------------------------


def _n_rows(cache_path):
    with sqlite3.connect(cache_path) as connection:
        return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


@posix_only
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_read_only_cache_serves_its_hits(tiny_model_dir, pngs, tmp_path, monkeypatch,
                                           n_jobs, unwritable):
    cache = tmp_path / "cache.sqlite"
    expected = _embedder(tiny_model_dir).transform(pngs)
    _embedder(tiny_model_dir, cache=cache).transform(pngs[:3])
    X = pngs[:3] + pngs[:1]
    with unwritable(cache), joblib.parallel_config(backend="threading"):
        assert EmbeddingCache(cache).read_only
        embedder = _embedder(tiny_model_dir, cache=cache, n_jobs=n_jobs)
        with monkeypatch.context() as patch:
            _refuse_to_load(patch)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                out = embedder.transform(X)
            assert (embedder.n_embedded_, embedder.n_cached_) == (0, 4)
            np.testing.assert_allclose(out, expected[[0, 1, 2, 0]], rtol=1e-5, atol=1e-6)

            # on_error="raise": nothing is embedded, and the error says how much is missing.
            with pytest.raises(ReadOnlyCacheError, match=re.escape(
                    f"The embedding cache '{cache}' is read-only") + ".*" + re.escape(
                    f"and 3 of the 6 images are not in it (the first: X[3] '{pngs[3]}')")):
                embedder.transform(pngs)

        # on_error="nan": everything is embedded and returned, nothing is stored.
        embedder.set_params(on_error="nan")
        with pytest.warns(EmbeddingWarning, match=re.escape(
                f"The embedding cache '{cache}' is read-only") + ".*" + re.escape(
                "3 new embeddings were returned but not stored")):
            out = embedder.transform(pngs + pngs[3:4])
        np.testing.assert_allclose(out, expected[[0, 1, 2, 3, 4, 5, 3]], rtol=1e-5, atol=1e-6)
        assert (embedder.n_embedded_, embedder.n_cached_) == (3, 4)
    assert _n_rows(cache) == 3


@posix_only
def test_an_item_is_described_alike_in_every_message(tiny_model_dir, pngs, tmp_path, unwritable):
    cache = tmp_path / "cache.sqlite"
    _embedder(tiny_model_dir, cache=cache).transform(pngs[:1])
    image = np.zeros((8, 8), dtype=np.uint8)
    described = "X[1] <numpy.ndarray shape=(8, 8) dtype=uint8>"
    with unwritable(cache), pytest.raises(ReadOnlyCacheError, match=re.escape(
            f"(the first: {described})")):
        _embedder(tiny_model_dir, cache=cache).transform([pngs[0], image])
    # A path with a quote is quoted as the reader quotes it.
    quoted = tmp_path / "it's.png"
    Image.fromarray(image).save(quoted)
    with unwritable(cache), pytest.raises(ReadOnlyCacheError, match=re.escape(
            f"(the first: X[0] '{quoted}')")):
        _embedder(tiny_model_dir, cache=cache).transform([quoted])
    missing = tmp_path / "isn't.png"
    with pytest.raises(ImageReadError, match=re.escape(f"X[0] '{missing}': ")):
        _embedder(tiny_model_dir, cache=cache).transform([missing])


# Damaged rows and locks ----------------------------------------------------------------


def test_damaged_rows_are_embedded_again_with_one_warning(tiny_model_dir, pngs, tmp_path):
    cache = tmp_path / "cache.sqlite"
    embedder = _embedder(tiny_model_dir, cache=cache)
    expected = embedder.transform(pngs[:4])
    with sqlite3.connect(cache) as connection:
        connection.execute("UPDATE embeddings SET vector = substr(vector, 1, 12)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embedder.transform(pngs[:4])
    ours = [str(w.message) for w in caught if issubclass(w.category, EmbeddingWarning)]
    assert ours == [
        f"4 stored embeddings in the cache '{cache}' failed their integrity check (wrong "
        "length, non-finite values or a checksum mismatch); they were not used, and "
        "their images were embedded again and stored."
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert embedder.n_embedded_ == 4
    # The rows were replaced: the next call is served from the cache, silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(embedder.transform(pngs[:4]), out)
    assert embedder.n_cached_ == 4


def test_cache_timeout_bounds_the_wait_for_a_lock(tiny_model_dir, pngs, tmp_path):
    cache = tmp_path / "cache.sqlite"
    _embedder(tiny_model_dir, cache=cache).transform(pngs[:1])
    holder = sqlite3.connect(cache, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        embedder = _embedder(tiny_model_dir, cache=cache, cache_timeout=0.2)
        start = time.monotonic()
        with pytest.raises(EmbeddingCacheError, match=re.escape(f"'{cache}' is locked")):
            embedder.transform(pngs[:3])
        assert time.monotonic() - start < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("value", [-1, float("inf"), "60"])
def test_bad_cache_timeout(tiny_model_dir, value):
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'cache_timeout' parameter of SigLIPImageEmbedder must be a float in "
            f"the range [0.0, inf). Got {value!r} instead.")):
        _embedder(tiny_model_dir, cache_timeout=value).fit()


def test_the_loaded_item_key_is_the_hash_of_the_bytes_decoded(pngs, tiny_model_dir):
    namespace = cache_namespace(checkpoint_info(tiny_model_dir, device="cpu", dtype="auto"))[0]
    source, key, path, stamp = load_item(pngs[0], 0, namespace)
    info = os.stat(pngs[0])
    assert (path, stamp) == (pngs[0], (info.st_size, info.st_mtime_ns))
    with open(pngs[0], "rb") as fh:
        assert source.data == fh.read()
    assert key == _key_of(namespace, source.data)
    assert load_item(pngs[0], 0)[1] is None  # no namespace: no hash
    np.testing.assert_array_equal(np.asarray(read_image(source)), np.asarray(read_image(pngs[0])))


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("call", ["transform", "fit_transform", "pipeline"])
def test_embedding_warnings_name_the_callers_line(tiny_model_dir, pngs, tmp_path, call,
                                                  n_jobs):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    embedder = SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False,
                                   on_error="nan", n_jobs=n_jobs)
    X = [pngs[0], str(tmp_path / "missing.png")]
    run = {
        "transform": lambda: embedder.transform(X),
        "fit_transform": lambda: embedder.fit_transform(X),
        "pipeline": lambda: make_pipeline(embedder, FunctionTransformer()).fit_transform(X),
    }[call]
    with joblib.parallel_config(backend="threading"), pytest.warns(EmbeddingWarning) as record:
        run()
    assert [warning.filename for warning in record] == [__file__]
