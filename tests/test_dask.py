"""Embedding and model selection on a Dask cluster give what a local run gives.

One ``LocalCluster`` with two worker processes serves the whole module.
Functions sent to the workers with ``client.run`` are defined inside the tests,
so that they travel by value (this module is not importable on the workers).
"""

import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
from dask.distributed import Client, LocalCluster
from PIL import Image
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.pipeline import Pipeline

import skclipxray.embedders
from skclipxray import BaselineClassifier, SigLIPImageEmbedder, load_backbone
from skclipxray.cache import EmbeddingCache
from skclipxray.embedders import EmbeddingWarning
from skclipxray.images import ImageReadError
from skclipxray.metrics import multilabel_scorers


# Dask's workers run one torch thread each (its nanny sets OMP_NUM_THREADS=1).
# Another thread count sums in another order and changes the last bits, so
# this process runs one thread too: then a Dask run equals a local run bit
# for bit, which the tests below check exactly.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        threads = client.run(lambda: __import__("torch").get_num_threads())
        assert set(threads.values()) == {1}, threads
        yield client


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Sixteen small grayscale PNGs of different sizes and contents."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        path = folder / f"image_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(40 + i, 48), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _embedder(model_dir, **params):
    # Workers are other processes, where "auto" follows their CPU: pin float32,
    # which the local runs use (tests/conftest.py).
    params = {"device": "cpu", "dtype": "float32", "progress": False, "batch_size": 3,
              "chunk_size": 4, **params}
    return SigLIPImageEmbedder(model_dir, **params)


def _on_dask():
    return joblib.parallel_config(backend="dask")


def test_embedding_matches_a_local_run_and_each_worker_loads_once(
    client, tiny_model_dir, pngs
):
    def loaded_checkpoints():
        from skclipxray._backbone import _BACKBONES

        return {key: id(backbone) for key, backbone in _BACKBONES.items()}

    embedder = _embedder(tiny_model_dir)
    local = embedder.transform(pngs)
    local_reversed = embedder.transform(pngs[::-1])  # other batches: other last bits
    with _on_dask():
        first = embedder.transform(pngs)
        after_first = client.run(loaded_checkpoints)
        second = embedder.transform(pngs[::-1])
        after_second = client.run(loaded_checkpoints)

    np.testing.assert_array_equal(first, local)  # same order, same bits
    np.testing.assert_array_equal(second, local_reversed)
    assert (embedder.n_embedded_, embedder.n_cached_) == (len(pngs), 0)
    # 16 images in chunks of 6 (4 rounded up to two batches of 3): both
    # workers took chunks, each loaded the checkpoint once and kept it.
    assert len(after_first) == 2
    for worker, loaded in after_first.items():
        assert len(loaded) == 1
        ((name, device, dtype),) = loaded
        assert (device, str(dtype)) == ("cpu", "torch.float32")
        assert after_second[worker] == loaded


def test_the_driver_never_loads_the_model(client, tiny_model_dir, pngs, tmp_path,
                                          monkeypatch):
    expected = _embedder(tiny_model_dir).transform(pngs[:5])

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded in the calling process")

    monkeypatch.setattr(skclipxray.embedders, "load_backbone", refuse)
    embedder = _embedder(tiny_model_dir, cache=tmp_path / "cache.sqlite")
    with _on_dask():
        np.testing.assert_array_equal(embedder.transform(pngs[:5]), expected)
    assert embedder.n_features_out_ == 32
    assert EmbeddingCache(tmp_path / "cache.sqlite").namespaces().index.tolist() == [
        embedder.cache_namespace_
    ]


def test_cache_is_written_by_the_driver_only(client, tiny_model_dir, pngs, tmp_path):
    def forbid_cache():
        from skclipxray.cache import EmbeddingCache

        def refuse(self):
            raise RuntimeError(f"a worker opened the cache {self.path}")

        EmbeddingCache._connect, EmbeddingCache._allowed = refuse, EmbeddingCache._connect

    def allow_cache():
        from skclipxray.cache import EmbeddingCache

        EmbeddingCache._connect = EmbeddingCache._allowed

    missing = str(tmp_path / "missing.png")
    X = pngs[:10] + [pngs[2], missing, pngs[10]]  # a repeat and an unreadable file
    local = _embedder(tiny_model_dir, cache=tmp_path / "local.sqlite", on_error="nan")
    remote = _embedder(tiny_model_dir, cache=tmp_path / "dask.sqlite", on_error="nan")
    with pytest.warns(EmbeddingWarning, match=re.escape("X[11] '") + ".*file not found"):
        expected = local.transform(X)

    client.run(forbid_cache)
    try:
        with _on_dask(), pytest.warns(EmbeddingWarning, match=re.escape("X[11]")):
            out = remote.transform(X)
        counts, errors = (remote.n_embedded_, remote.n_cached_), remote.read_errors_
        with _on_dask():
            again = remote.transform(X[:11] + X[12:])
    finally:
        client.run(allow_cache)

    np.testing.assert_array_equal(out, expected)
    assert counts == (local.n_embedded_, local.n_cached_) == (11, 1)
    assert errors == local.read_errors_
    local_frame = EmbeddingCache(tmp_path / "local.sqlite").to_frame()
    remote_frame = EmbeddingCache(tmp_path / "dask.sqlite").to_frame()
    assert remote_frame.equals(local_frame) and len(remote_frame) == 11
    np.testing.assert_array_equal(again, np.delete(expected, 11, axis=0))
    assert (remote.n_embedded_, remote.n_cached_) == (0, 12)


def test_unreadable_image_raises_and_keeps_the_chunks_before(
    client, tiny_model_dir, pngs, tmp_path
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(pngs[0], "rb").read()[:60])  # hashes, fails to decode
    cache_path = tmp_path / "cache.sqlite"
    embedder = _embedder(tiny_model_dir, cache=cache_path, batch_size=2, chunk_size=2)
    X = pngs[:5] + [str(broken)] + pngs[5:8]
    with _on_dask(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # joblib: tasks cancelled
        with pytest.raises(ImageReadError, match=re.escape("X[5] '") + ".*broken.png'"):
            embedder.transform(X)
    assert len(EmbeddingCache(cache_path)) == 5
    with _on_dask():
        embedder.transform(pngs[:8])
    assert (embedder.n_embedded_, embedder.n_cached_) == (3, 5)


def test_grid_search_matches_a_local_run(client, tiny_model_dir, pngs):
    rng = np.random.default_rng(1)
    Y = rng.integers(0, 2, size=(len(pngs), 2))
    Y[:2] = [[0, 1], [1, 0]]  # both classes of both labels in every fold
    Y[8:10] = [[0, 1], [1, 0]]
    pipeline = Pipeline([
        ("embed", _embedder(tiny_model_dir, batch_size=4)),
        ("head", BaselineClassifier(hidden_sizes=(8,), max_epochs=2, batch_size=4,
                                    device="cpu", random_state=0)),
    ])
    scoring = {name: multilabel_scorers()[name]
               for name in ("roc_auc_macro", "neg_hamming_loss")}

    def search():
        return GridSearchCV(pipeline, {"head__lr": [1e-3, 1e-2]}, cv=2,
                            scoring=scoring, refit="roc_auc_macro").fit(pngs, Y)

    local = search()
    with _on_dask():
        remote = search()
    for key in ("split0_test_roc_auc_macro", "split1_test_roc_auc_macro",
                "mean_test_neg_hamming_loss", "rank_test_roc_auc_macro"):
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    np.testing.assert_array_equal(remote.predict_proba(pngs), local.predict_proba(pngs))
    # What travels to the workers and back is parameters and the head's few
    # weights, never the checkpoint.
    assert len(pickle.dumps(pipeline)) < 5_000
    assert len(pickle.dumps(remote.best_estimator_)) < 100_000


def test_one_job_runs_in_this_process(client, tiny_model_dir, pngs, monkeypatch):
    import skclipxray._parallel

    def refuse(*args, **kwargs):
        raise AssertionError("the work was dispatched to joblib")

    expected = _embedder(tiny_model_dir).transform(pngs[:4])
    monkeypatch.setattr(skclipxray._parallel, "embed_in_chunks", refuse)
    # n_jobs=None outside a parallel_config context or under a backend whose
    # default is one job, and n_jobs=1 anywhere.
    np.testing.assert_array_equal(_embedder(tiny_model_dir).transform(pngs[:4]), expected)
    with joblib.parallel_config(backend="threading"):
        np.testing.assert_array_equal(_embedder(tiny_model_dir).transform(pngs[:4]), expected)
    with _on_dask():
        out = _embedder(tiny_model_dir, n_jobs=1).transform(pngs[:4])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("chunk_size, n_chunks", [(4, 3), (None, 5)])
def test_chunks_are_whole_batches(tiny_model_dir, pngs, monkeypatch, chunk_size, n_chunks):
    import skclipxray._parallel

    backbone = load_backbone(tiny_model_dir, device="cpu")
    batches, chunks = [], []
    hook = backbone.image_encoder().register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(len(kwargs["pixel_values"])),
        with_kwargs=True,
    )

    def counting_chunk(params, indices, items, with_namespace):
        chunks.append(len(items))
        return embed_chunk(params, indices, items, with_namespace)

    embed_chunk = skclipxray._parallel._embed_chunk
    monkeypatch.setattr(skclipxray._parallel, "_embed_chunk", counting_chunk)
    embedder = _embedder(tiny_model_dir, chunk_size=chunk_size)
    local = embedder.set_params(n_jobs=1).transform(pngs[:14])
    local_batches = sorted(batches)
    batches.clear()
    with joblib.parallel_config(backend="threading"):  # in this process: countable
        threaded = embedder.set_params(n_jobs=2).transform(pngs[:14])
    hook.remove()
    # 14 images in batches of 3. chunk_size=4 becomes 6 (6 + 6 + 2); None
    # aims at 4 chunks per job, 2 images, rounded up to one batch of 3.
    # Either way the batches are those of the local run: 3, 3, 3, 3, 2.
    assert len(chunks) == n_chunks and sum(chunks) == 14
    assert sorted(batches) == local_batches == [2, 3, 3, 3, 3]
    np.testing.assert_array_equal(threaded, local)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_jobs": 0}, "The 'n_jobs' parameter of SigLIPImageEmbedder must be None, an "
         "int in the range (-inf, -1] or an int in the range [1, inf). Got 0 instead."),
        ({"n_jobs": 1.5}, "The 'n_jobs' parameter of SigLIPImageEmbedder must be None, an "
         "int in the range (-inf, -1] or an int in the range [1, inf). Got 1.5 instead."),
        ({"chunk_size": 0}, "The 'chunk_size' parameter of SigLIPImageEmbedder must be "
         "None or an int in the range [1, inf). Got 0 instead."),
    ],
)
def test_bad_parallel_parameters(tiny_model_dir, pngs, params, message):
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        _embedder(tiny_model_dir, **params).transform(pngs[:1])
