"""Embed images in chunks through joblib, so that any joblib backend (Dask included) runs them.

:meth:`SigLIPImageEmbedder.transform <skclipxray.SigLIPImageEmbedder.transform>`
comes here when joblib reads its ``n_jobs`` as more than one job (``None``
under ``parallel_config(backend="dask")`` means the whole cluster). The
calling process (the *driver*) keeps everything that touches the cache:

1. One task asks a worker for the checkpoint's embedding size and, with a
   cache, its cache namespace: ``device="auto"`` and ``dtype="auto"`` resolve
   on the worker, so the namespace is that of the precision the workers run.
   Neither the driver nor that task loads the weights (the configuration
   and image processor are enough).
2. With a cache, the driver hashes every image's content, looks the keys up
   and sets aside repeats of an image already in the call.
3. The images left are cut into chunks of a whole number of batches, in
   order, and each chunk becomes one task: the embedder's parameters and the
   chunk's items (paths, or the in-memory images), never the model. The
   worker loads the checkpoint once per process (:func:`load_backbone` keeps
   it) and embeds the chunk with the same batches a local run forms. It
   reads each file once and returns, with the embeddings, the keys of the
   bytes it decoded: the driver stores each embedding under the key of what
   was embedded, even if a file changed after the driver hashed it.
4. Results stream back in order; the driver writes each chunk to the cache as
   it arrives, so there is one writer however many workers run, and a run
   that dies keeps every chunk that came back.
"""

import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from ._keys import cache_namespace, load_item
from .cache import EmbeddingCache, ReadOnlyCacheError
from .images import ImageReadError, _describe

# chunk_size=None: about this many chunks per worker (so that a slow worker
# holds up little at the end), of at most _MAX_AUTO_CHUNK images each.
_CHUNKS_PER_WORKER = 4
_MAX_AUTO_CHUNK = 256


@dataclass
class _ChunkResult:
    """What a worker sends back for one chunk: small arrays and strings only."""

    vectors: np.ndarray  # (n_items, dim) float32; NaN rows for items that failed
    errors: dict = field(default_factory=dict)  # {index in X: message}
    namespace: str = None  # the worker's cache namespace, when a cache is used
    keys: list = None  # per item, the key of the content embedded (with a namespace)
    stamps: list = None  # per item, (size, mtime_ns) of the file as it was read


def _worker_params(embedder):
    """The embedder's parameters as a worker needs them: no cache, no nested jobs."""
    params = embedder.get_params(deep=False)
    params.update(cache=None, n_jobs=1, progress=False, normalize=False, on_error="nan")
    return params


def _describe_checkpoint(params, with_namespace):
    """Task: the embedding size and cache namespace of the checkpoint, on a worker."""
    from .embedders import SigLIPImageEmbedder

    checkpoint = SigLIPImageEmbedder(**params)._checkpoint()  # no weights
    namespace = cache_namespace(checkpoint, params["quantize"]) if with_namespace else None
    return checkpoint.embedding_dim, namespace


def _embed_chunk(params, indices, items, with_namespace):
    """Task: embed one chunk on a worker, in batches of ``batch_size``.

    Parameters
    ----------
    params : dict
        Parameters of a :class:`~skclipxray.SigLIPImageEmbedder` (see
        :func:`_worker_params`).
    indices : list of int
        Position of each item in the caller's ``X``, for error messages.
    items : list
        The images (paths, PIL images or arrays).
    with_namespace : bool
        Also return the worker's cache namespace, for the driver to check,
        and the key and stamp of every item, as the worker read it.

    Returns
    -------
    _ChunkResult
    """
    from .embedders import SigLIPImageEmbedder

    embedder = SigLIPImageEmbedder(**params)
    checkpoint = embedder._checkpoint()
    namespace = cache_namespace(checkpoint, embedder.quantize) if with_namespace else None
    vectors = np.full((len(items), checkpoint.embedding_dim), np.nan, dtype=np.float32)
    keys, stamps = [None] * len(items), [None] * len(items)
    errors = {}
    positions, pixels = [], []
    backbone = None

    def run_batch():
        nonlocal backbone
        if positions:
            backbone = backbone or embedder._backbone()
            vectors[positions] = embedder._forward(backbone, np.stack(pixels))
            positions.clear()
            pixels.clear()

    stream = embedder._prepared_items(checkpoint, items, None, namespace, indices=indices)
    with closing(stream):
        for position, (index, prepared) in enumerate(stream):
            if prepared.error is not None:
                errors[index] = str(prepared.error)
                continue
            keys[position], stamps[position] = prepared.key, prepared.stamp
            positions.append(position)
            pixels.append(prepared.pixels)
            if len(positions) >= embedder.batch_size:
                run_batch()
    run_batch()
    if namespace is None:
        return _ChunkResult(vectors, errors)
    return _ChunkResult(vectors, errors, namespace[0], keys, stamps)


def _key_or_error(namespace, max_file_size, index, item):
    """(key, path, stamp, None), or (None, None, None, message) if unreadable."""
    try:
        _, key, path, stamp = load_item(item, index, namespace, max_file_size)
    except ImageReadError as exc:
        return None, None, None, str(exc)
    return key, path, stamp, None


def _chunk_length(embedder, n_todo):
    """Images per task, rounded up to whole batches so that chunks batch as a local run."""
    size = embedder.chunk_size
    if size is None:
        workers = max(1, effective_n_jobs(embedder.n_jobs))
        size = min(_MAX_AUTO_CHUNK, -(-n_todo // (_CHUNKS_PER_WORKER * workers)))
    batch_size = embedder.batch_size
    return max(1, -(-size // batch_size)) * batch_size


class _Plan:
    """What the driver decided before dispatching: cache hits, repeats, work to do."""

    def __init__(self, n_items):
        self.keys = [None] * n_items
        self.paths = [None] * n_items
        self.stamps = [None] * n_items
        self.errors = {}  # {index: message}
        self.stop = n_items  # with on_error="raise": the first unreadable index
        self.todo = []  # indices to embed, in order
        self.repeats = []  # (index, index of the same content earlier in X)
        self.hits = set()  # indices served from the cache


def _plan_with_cache(embedder, items, cache, namespace, out):
    """Hash every item, copy cached embeddings into ``out``, list what must be embedded."""
    plan = _Plan(len(items))
    threads = max(1, embedder.num_workers)
    key_or_error = partial(_key_or_error, namespace, embedder.max_file_size)
    with ThreadPoolExecutor(threads) as pool:
        try:
            for index, (key, path, stamp, error) in enumerate(
                pool.map(key_or_error, range(len(items)), items)
            ):
                if error is not None:
                    plan.errors[index] = error
                    if embedder.on_error == "raise":
                        # A local run reads no further than the first bad item.
                        plan.stop = index
                        break
                    continue
                plan.keys[index], plan.paths[index], plan.stamps[index] = key, path, stamp
        finally:
            # After the first bad item, or an error (Ctrl-C): the reads not
            # started are dropped rather than waited for.
            pool.shutdown(cancel_futures=True)

    first = {}  # key -> index of its first occurrence
    for index in range(plan.stop):
        key = plan.keys[index]
        if index in plan.errors:
            continue
        if key is not None and key in first:
            plan.repeats.append((index, first[key]))
            continue
        if key is not None:
            first[key] = index
    for key, vector in cache.get_many(list(first)).items():  # it queries in blocks
        out[first[key]] = vector
        plan.hits.add(first[key])
    plan.todo = [
        index for index in range(plan.stop)
        if index not in plan.errors and index not in plan.hits
        and not (plan.keys[index] is not None and first[plan.keys[index]] != index)
    ]
    return plan


def embed_in_chunks(embedder, items):
    """Embed ``items`` as chunks of joblib tasks; the body of a parallel transform.

    Sets the same attributes as a local :meth:`transform` and returns the same
    array (same order, same values when every worker runs the same device
    and precision as the local run would).
    """
    from .embedders import (
        EmbeddingWarning,
        _failure_message,
        _normalized,
        _progress_bar,
        _read_only_message,
        _unstored_message,
        _warn_rejected,
    )

    params = _worker_params(embedder)
    use_cache = embedder.cache is not None
    n_items = len(items)

    dim, namespace = None, None
    if use_cache:
        ((dim, namespace),) = Parallel(n_jobs=embedder.n_jobs)(
            [delayed(_describe_checkpoint)(params, True)]
        )
    embedder.cache_namespace_ = None if namespace is None else namespace[0]

    cache = (EmbeddingCache(embedder.cache, timeout=embedder.cache_timeout)
             if use_cache else None)
    store = False  # whether new embeddings and paths are written
    n_unstored = 0
    with cache if cache is not None else nullcontext():
        # Without a cache, the size comes with the first chunk.
        out = None if dim is None else np.full((n_items, dim), np.nan, dtype=np.float32)
        if cache is not None:
            store = not cache.read_only
            n_rejected = cache.n_rejected
            plan = _plan_with_cache(embedder, items, cache, namespace[0], out)
            _warn_rejected(cache, cache.n_rejected - n_rejected, stored=store)
            if not store and plan.todo and embedder.on_error == "raise":
                raise ReadOnlyCacheError(_read_only_message(cache, plan.todo, items))
            if store:
                _link(cache, plan, sorted(plan.hits), namespace[0])
        else:
            plan = _Plan(n_items)
            plan.todo = list(range(n_items))

        size = _chunk_length(embedder, len(plan.todo))
        chunks = [plan.todo[start : start + size] for start in range(0, len(plan.todo), size)]
        bar = _progress_bar(embedder.progress, n_items)
        n_embedded = 0
        stream = _run_chunks(embedder, params, items, chunks, use_cache)
        with closing(stream), bar:
            bar.update(len(plan.hits) + len(plan.repeats))
            for chunk, result in stream:
                if use_cache and result.namespace != namespace[0]:
                    raise RuntimeError(
                        "Workers disagree about the checkpoint or its precision: one "
                        f"embedded in cache namespace {result.namespace!r}, another in "
                        f"{namespace[0]!r}. Give every worker the same checkpoint files "
                        "and pass an explicit dtype= (device='auto' and dtype='auto' "
                        "resolve on each worker)."
                    )
                if out is None:
                    out = np.full((n_items, result.vectors.shape[1]), np.nan, dtype=np.float32)
                out[chunk] = result.vectors
                done = [i for i, index in enumerate(chunk) if index not in result.errors]
                n_embedded += len(done)
                if cache is not None:
                    rows = _cacheable(plan, chunk, done, result)
                    try:
                        if store:
                            _store(cache, plan, chunk, rows, result, namespace)
                    except ReadOnlyCacheError:
                        # SQLite refused to write a cache opened writable.
                        if embedder.on_error == "raise":
                            raise
                        store = False
                    if not store:
                        n_unstored += len(rows)
                if result.errors and embedder.on_error == "raise":
                    raise ImageReadError(result.errors[min(result.errors)])
                plan.errors.update(result.errors)
                bar.update(len(chunk))
        if embedder.on_error == "raise" and plan.stop < n_items:
            raise ImageReadError(plan.errors[plan.stop])

        n_cached = len(plan.hits)
        for index, first in plan.repeats:
            out[index] = out[first]
            if first in plan.errors:
                plan.errors[index] = (
                    f"X[{index}] {_describe(items[index])}: same content as "
                    f"X[{first}], which could not be read"
                )
            else:
                n_cached += 1
        if store:
            _link(cache, plan, [i for i, first in plan.repeats if first not in plan.errors],
                  namespace[0])

    embedder.n_features_out_ = out.shape[1]
    embedder.n_embedded_ = n_embedded
    embedder.n_cached_ = n_cached
    embedder.read_errors_ = dict(sorted(plan.errors.items()))
    if plan.errors:
        warnings.warn(_failure_message(embedder.read_errors_, n_items), EmbeddingWarning,
                      stacklevel=3)
    if n_unstored:
        warnings.warn(_unstored_message(cache, n_unstored), EmbeddingWarning, stacklevel=3)
    return _normalized(out, embedder.normalize)


def _run_chunks(embedder, params, items, chunks, with_namespace):
    """Yield ``(chunk, _ChunkResult)`` in order, as the workers return them.

    Closing this generator early (an error) cancels the tasks not yet run.
    """
    if not chunks:
        return
    tasks = (
        delayed(_embed_chunk)(params, chunk, [items[i] for i in chunk], with_namespace)
        for chunk in chunks
    )
    results = Parallel(n_jobs=embedder.n_jobs, return_as="generator")(tasks)
    with closing(results):
        # Results first, so that zip runs joblib's generator to its end (else
        # joblib warns that it abandoned tasks when it is closed).
        for result, chunk in zip(results, chunks):
            yield chunk, result


def _cacheable(plan, chunk, done, result):
    """Positions in the chunk of the embedded rows that have a key."""
    return [i for i in done if plan.keys[chunk[i]] is not None and result.keys[i] is not None]


def _store(cache, plan, chunk, rows, result, namespace):
    """Write the embedded rows of one chunk to the cache, in one transaction.

    Each row is stored under the key the worker hashed from the bytes it
    decoded (not the driver's, which may describe an earlier content of the
    file), with the size and modification time of the file it read.
    """
    if rows:
        cache.put_many(
            [result.keys[i] for i in rows], result.vectors[rows],
            namespace=namespace[0], namespace_info=namespace[1],
            paths=[plan.paths[chunk[i]] for i in rows], stamps=[result.stamps[i] for i in rows],
        )


def _link(cache, plan, indices, namespace):
    """Record which files hold content served from the cache."""
    indices = [i for i in indices if plan.paths[i] is not None]
    if indices:
        cache.link_paths(
            [plan.keys[i] for i in indices], [plan.paths[i] for i in indices],
            namespace=namespace, stamps=[plan.stamps[i] for i in indices],
        )
