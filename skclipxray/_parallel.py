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
   order, and each chunk becomes one task: the run's
   :class:`~skclipxray._engine.RunSpec` and the chunk's items (paths, or the
   in-memory images), never the estimator nor the model. The worker loads
   the checkpoint once per process (:func:`load_backbone` keeps it) and
   embeds the chunk with the engine a local run uses, in the same batches. It
   reads each file once and returns, with the embeddings, the keys of the
   bytes it decoded: the driver stores each embedding under the key of what
   was embedded, even if a file changed after the driver hashed it.
4. Results stream back in order; the driver writes each chunk to the cache as
   it arrives, so there is one writer however many workers run, and a run
   that dies keeps every chunk that came back.
"""

from contextlib import closing, nullcontext
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from ._engine import CacheWriter, Plan, RunSpec, embed, normalized, plan_with_cache, progress_bar
from ._keys import cache_namespace
from ._messages import (
    read_only_message,
    warn_outcome,
    warn_rejected,
)
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


def _describe_checkpoint(spec, with_namespace):
    """Task: the embedding size and cache namespace of the checkpoint, on a worker."""
    checkpoint = spec.checkpoint()  # no weights
    namespace = cache_namespace(checkpoint, spec.quantize, spec.preprocess) if with_namespace else None
    return checkpoint.embedding_dim, namespace


def _embed_chunk(spec, indices, items, with_namespace):
    """Task: embed one chunk on a worker, in batches of ``batch_size``.

    Parameters
    ----------
    spec : RunSpec
        What reading and the forward pass need.
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
    checkpoint = spec.checkpoint()
    namespace = cache_namespace(checkpoint, spec.quantize, spec.preprocess) if with_namespace else None
    vectors = np.full((len(items), checkpoint.embedding_dim), np.nan, dtype=np.float32)
    run = embed(spec, checkpoint, items, vectors, load=spec.backbone, namespace=namespace,
                indices=indices)
    if namespace is None:
        return _ChunkResult(vectors, run.errors)
    return _ChunkResult(vectors, run.errors, namespace[0], run.keys, run.stamps)


def _chunk_length(embedder, n_todo):
    """Images per task, rounded up to whole batches so that chunks batch as a local run."""
    size = embedder.chunk_size
    if size is None:
        workers = max(1, effective_n_jobs(embedder.n_jobs))
        size = min(_MAX_AUTO_CHUNK, -(-n_todo // (_CHUNKS_PER_WORKER * workers)))
    batch_size = embedder.batch_size
    return max(1, -(-size // batch_size)) * batch_size


def embed_in_chunks(embedder, items):
    """Embed ``items`` as chunks of joblib tasks; the body of a parallel transform.

    Sets the same attributes as a local :meth:`transform` and returns the same
    array (same order, same values when every worker runs the same device
    and precision as the local run would).
    """
    spec = RunSpec.of(embedder)
    use_cache = embedder.cache is not None
    n_items = len(items)

    dim, namespace = None, None
    if use_cache:
        ((dim, namespace),) = Parallel(n_jobs=embedder.n_jobs)(
            [delayed(_describe_checkpoint)(spec, True)]
        )
    embedder.cache_namespace_ = None if namespace is None else namespace[0]

    cache = (EmbeddingCache(embedder.cache, timeout=embedder.cache_timeout)
             if use_cache else None)
    writer = None
    with cache if cache is not None else nullcontext():
        # Without a cache, the size comes with the first chunk.
        out = None if dim is None else np.full((n_items, dim), np.nan, dtype=np.float32)
        if cache is not None:
            writer = CacheWriter(cache, namespace, embedder.on_error)
            n_rejected = cache.n_rejected
            plan = plan_with_cache(spec, items, cache, namespace, out, embedder.on_error)
            warn_rejected(cache, cache.n_rejected - n_rejected, stored=writer.store)
            if not writer.store and plan.todo and embedder.on_error == "raise":
                raise ReadOnlyCacheError(read_only_message(cache, plan.todo, items))
            _link(writer, plan, sorted(plan.hits))
        else:
            plan = Plan(n_items)
            plan.todo = list(range(n_items))

        size = _chunk_length(embedder, len(plan.todo))
        chunks = [plan.todo[start : start + size] for start in range(0, len(plan.todo), size)]
        bar = progress_bar(embedder.progress, n_items)
        n_embedded = 0
        stream = _run_chunks(embedder, spec, items, chunks, use_cache)
        with closing(stream), bar:
            bar.update(len(plan.hits) + len(plan.repeats.pairs))
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
                if writer is not None:
                    # Each row is stored under the key the worker hashed from the
                    # bytes it decoded (not the driver's, which may describe an
                    # earlier content of the file), with the stamp of the file it read.
                    rows = [i for i in done
                            if plan.keys[chunk[i]] is not None and result.keys[i] is not None]
                    writer.put(
                        [result.keys[i] for i in rows], result.vectors[rows],
                        [plan.paths[chunk[i]] for i in rows], [result.stamps[i] for i in rows],
                    )
                if result.errors and embedder.on_error == "raise":
                    raise ImageReadError(result.errors[min(result.errors)])
                plan.errors.update(result.errors)
                bar.update(len(chunk))
        if embedder.on_error == "raise" and plan.stop < n_items:
            raise ImageReadError(plan.errors[plan.stop])

        n_cached = len(plan.hits)
        plan.repeats.copy(out)
        for index, first in plan.repeats.pairs:
            if first in plan.errors:
                plan.errors[index] = (
                    f"X[{index}] {_describe(items[index])}: same content as "
                    f"X[{first}], which could not be read"
                )
            else:
                n_cached += 1
        if writer is not None:
            _link(writer, plan, [i for i, first in plan.repeats.pairs
                                 if first not in plan.errors])

    embedder.n_features_out_ = out.shape[1]
    embedder.n_embedded_ = n_embedded
    embedder.n_cached_ = n_cached
    embedder.read_errors_ = dict(sorted(plan.errors.items()))
    warn_outcome(embedder.read_errors_, n_items, cache,
                 0 if writer is None else writer.n_unstored)
    return normalized(out, embedder.normalize)


def _run_chunks(embedder, spec, items, chunks, with_namespace):
    """Yield ``(chunk, _ChunkResult)`` in order, as the workers return them.

    Closing this generator early (an error) cancels the tasks not yet run.
    """
    if not chunks:
        return
    tasks = (
        delayed(_embed_chunk)(spec, chunk, [items[i] for i in chunk], with_namespace)
        for chunk in chunks
    )
    results = Parallel(n_jobs=embedder.n_jobs, return_as="generator")(tasks)
    with closing(results):
        # Results first, so that zip runs joblib's generator to its end (else
        # joblib warns that it abandoned tasks when it is closed).
        for result, chunk in zip(results, chunks):
            yield chunk, result


def _link(writer, plan, indices):
    """Record which files hold content served from the cache."""
    writer.link([plan.keys[i] for i in indices], [plan.paths[i] for i in indices],
                [plan.stamps[i] for i in indices])
    writer.flush_links()
