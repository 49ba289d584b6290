"""The embedding engine: read ahead, forward in batches, collect vectors and errors.

Both paths of :meth:`SigLIPImageEmbedder.transform
<skclipxray.SigLIPImageEmbedder.transform>` run it: the local run over all the
images of a call, and each joblib/Dask task over its chunk. A run is described
by a :class:`RunSpec`, small and frozen, which is all a worker receives of the
estimator. With a cache, the engine also serves hits, sets aside repeats of an
image already in the call and writes each batch as it completes (through a
:class:`CacheWriter`); without one, it only embeds.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, fields
from functools import partial
from itertools import islice

import numpy as np
from sklearn.preprocessing import normalize as _l2_normalize

from ._backbone import checkpoint_info, load_backbone
from ._keys import load_item
from ._preprocessing import preprocessor
from .cache import ReadOnlyCacheError
from .images import ImageReadError, _describe
from .images import _read_image as read_image  # with grayscale=: "L" images where gray

# Links from files to cached content are written in blocks of this many.
_LINK_BLOCK = 512


@dataclass(frozen=True)
class RunSpec:
    """What reading and the forward pass need: the estimator's parameters that change them."""

    model: object
    device: object
    dtype: object
    batch_size: int
    num_workers: int
    compile: object
    quantize: object
    max_file_size: int
    preprocess: str = "cpu"

    @classmethod
    def of(cls, embedder):
        """The spec of a :class:`~skclipxray.SigLIPImageEmbedder`'s parameters."""
        return cls(**{field.name: getattr(embedder, field.name) for field in fields(cls)})

    def checkpoint(self):
        """The checkpoint's configuration and image processor, no weights."""
        return checkpoint_info(self.model, device=self.device, dtype=self.dtype)

    def backbone(self):
        """The loaded checkpoint, shared in this process."""
        return load_backbone(self.model, device=self.device, dtype=self.dtype)


@dataclass
class Prepared:
    """One item, ready: a cached embedding, model input, or the reason it failed."""

    key: bytes = None
    path: str = None
    stamp: tuple = None
    vector: np.ndarray = None
    inputs: dict = None
    error: ImageReadError = None


def prepare(spec, checkpoint, cache, namespace, index, item, decode=True):
    """Read one image: its cached embedding if there is one, else model input.

    With a ``namespace``, the item's key is computed (and looked up when
    there is a ``cache``), from the bytes that are then decoded. Without
    ``decode``, only the key, path and stamp are found.
    """
    prepared = Prepared()
    try:
        source, prepared.key, prepared.path, prepared.stamp = load_item(
            item, index, None if namespace is None else namespace[0], spec.max_file_size
        )
        if not decode:
            return prepared
        if cache is not None and prepared.key is not None:
            prepared.vector = cache.get_many([prepared.key]).get(prepared.key)
            if prepared.vector is not None:
                return prepared
        preprocess = preprocessor(checkpoint, spec.preprocess)
        image = read_image(source, index=index, max_file_size=spec.max_file_size,
                            grayscale=preprocess.grayscale)
        del source  # the file's bytes: not kept while the batch waits
        try:
            prepared.inputs = preprocess(image)
        except Exception as exc:  # the processor's own errors name no item
            raise ImageReadError(
                f"X[{index}] {_describe(item)}: the checkpoint's image "
                f"processor failed ({type(exc).__name__}: {exc})"
            ) from exc
    except ImageReadError as exc:
        prepared.error = exc
    return prepared


def prepared_items(spec, checkpoint, items, cache, namespace, indices=None, decode=True):
    """Yield ``(index, Prepared)`` in order, reading ahead in worker threads.

    At most ``max(2 * batch_size, 2 * num_workers)`` items are read or being
    read at a time, so memory stays flat however many images there are. ``indices`` are the
    items' positions in the caller's X (default: 0, 1, ...). Closing the
    generator (an error, Ctrl-C) cancels the reads not started; those
    running end quickly, since every read is bounded.
    """
    read = partial(prepare, spec, checkpoint, cache, namespace, decode=decode)
    queue = enumerate(items) if indices is None else zip(indices, items)
    if spec.num_workers == 0:
        for index, item in queue:
            yield index, read(index, item)
        return
    window = max(2 * spec.batch_size, 2 * spec.num_workers)
    with ThreadPoolExecutor(spec.num_workers) as pool:
        pending = deque(
            (index, pool.submit(read, index, item)) for index, item in islice(queue, window)
        )
        try:
            while pending:
                index, future = pending.popleft()
                following = next(queue, None)
                if following is not None:
                    pending.append((following[0], pool.submit(read, *following)))
                yield index, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def forward(spec, backbone, inputs):
    """Image embeddings of one batch (the inputs of its images, a list of dicts), as float32.

    The batch's preprocessor moves it to the device (and, with
    ``preprocess="device"``, resizes and normalises it there).
    """
    import torch

    n_images = len(inputs)
    with torch.inference_mode():
        batch = preprocessor(backbone, spec.preprocess).to_device(inputs, backbone.device)
        batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
        if spec.compile and n_images < spec.batch_size:
            # A new batch shape would recompile the model (slow): pad the last
            # batch by repeating its last image, and drop the extra rows below.
            batch = {
                name: torch.cat([
                    value, value[-1:].expand(spec.batch_size - n_images, *value.shape[1:])
                ])
                for name, value in batch.items()
            }
        # quantize needs compile
        mode = (spec.compile if isinstance(spec.compile, str) else "default") if spec.compile else None
        encoder = backbone.image_encoder(compile=mode, quantize=spec.quantize)
        return encoder(**batch)[:n_images].float().cpu().numpy()


class Repeats:
    """Items of one call whose content an earlier item already has (same key)."""

    def __init__(self):
        self.first = {}  # key -> index of its first occurrence
        self.pairs = []  # (index, index of the same content earlier in X)

    def seen(self, key, index):
        """Whether ``key`` came earlier (then the pair is kept); else ``index`` is its first."""
        if key is None:
            return False
        first = self.first.setdefault(key, index)
        if first != index:
            self.pairs.append((index, first))
            return True
        return False

    def copy(self, out):
        """Give each repeat the row of its first occurrence."""
        for index, first in self.pairs:
            out[index] = out[first]


class CacheWriter:
    """The cache writes of one call: embeddings, and which files hold what content.

    A cache that turns out not to be writable (SQLite refuses a cache opened
    writable) raises with ``on_error="raise"``; otherwise writing stops and
    what could not be stored is counted in ``n_unstored``.
    """

    def __init__(self, cache, namespace, on_error):
        self.cache = cache
        self.namespace = namespace
        self.on_error = on_error
        # Whether new embeddings (and paths) are written: not to a read-only cache.
        self.store = not cache.read_only
        self.n_unstored = 0
        self.links = []  # (key, path, stamp) waiting to be written

    def put(self, keys, vectors, paths, stamps):
        """Store embeddings in one transaction."""
        if not keys:
            return
        if self.store:
            try:
                self.cache.put_many(
                    keys, vectors, namespace=self.namespace[0],
                    namespace_info=self.namespace[1], paths=paths, stamps=stamps,
                )
            except ReadOnlyCacheError:
                if self.on_error == "raise":
                    raise
                self.store = False
        if not self.store:
            self.n_unstored += len(keys)

    def link(self, keys, paths, stamps):
        """Record that files hold content already in the cache (in blocks)."""
        if self.store:
            self.links.extend(
                (key, path, stamp) for key, path, stamp in zip(keys, paths, stamps)
                if path is not None
            )
            if len(self.links) >= _LINK_BLOCK:
                self.flush_links()

    def flush_links(self):
        if self.store and self.links:
            keys, paths, stamps = zip(*self.links)
            self.cache.link_paths(keys, paths, namespace=self.namespace[0], stamps=stamps)
        self.links = []


class Run:
    """The state of one run: batches being assembled, vectors, counts, failures.

    ``out`` receives the vectors, one row per item in the order of the
    stream. The model is loaded (by ``load``) on the first batch, so that a
    run served from the cache never loads it. With a ``writer``, cache hits
    and repeats are served without a forward pass and each batch is stored.
    """

    def __init__(self, spec, out, load, writer=None):
        self.spec = spec
        self.out = out
        self.load = load
        self.writer = writer
        self.backbone = None
        self.batch = []  # (position, Prepared) waiting for the model
        self.repeats = Repeats()
        self.keys = [None] * len(out)  # per position, the key of the content read
        self.stamps = [None] * len(out)  # per position, the stamp of the file read
        self.errors = {}  # {index in X: message}
        self.n_embedded = 0
        self.n_cached = 0

    def add(self, position, prepared):
        key = prepared.key
        self.keys[position], self.stamps[position] = key, prepared.stamp
        if self.writer is not None:
            repeat = self.repeats.seen(key, position)
            if repeat or prepared.vector is not None:
                if not repeat:
                    self.out[position] = prepared.vector
                self.n_cached += 1
                self.writer.link([key], [prepared.path], [prepared.stamp])
                return
        self.batch.append((position, prepared))
        if len(self.batch) >= self.spec.batch_size:
            self.flush()

    def flush(self):
        """Run the batch through the model (and store it, with a writer)."""
        if not self.batch:
            return
        if self.backbone is None:
            self.backbone = self.load()
        batch, self.batch = self.batch, []
        vectors = forward(self.spec, self.backbone, [p.inputs for _, p in batch])
        self.out[[position for position, _ in batch]] = vectors
        self.n_embedded += len(batch)
        if self.writer is not None:
            rows = [i for i, (_, prepared) in enumerate(batch) if prepared.key is not None]
            self.writer.put(
                [batch[i][1].key for i in rows], vectors[rows],
                [batch[i][1].path for i in rows], [batch[i][1].stamp for i in rows],
            )

    def finish(self):
        self.repeats.copy(self.out)
        if self.writer is not None:
            self.writer.flush_links()


def embed(spec, checkpoint, items, out, *, load, cache=None, namespace=None,
          on_error="nan", indices=None, progress=False):
    """Embed ``items`` into ``out``; return the finished :class:`Run`.

    ``on_error="raise"`` raises the first unreadable item's
    :class:`~skclipxray.images.ImageReadError`, after embedding (and
    storing) the items before it; ``"nan"`` records it in ``errors``.
    ``indices`` are the items' positions in the caller's X, for messages.
    """
    run = Run(spec, out, load, None if cache is None else CacheWriter(cache, namespace, on_error))
    stream = prepared_items(spec, checkpoint, items, cache, namespace, indices)
    bar = progress_bar(progress, len(items), stream)
    with closing(stream), bar:
        for position, (index, prepared) in enumerate(bar):
            if prepared.error is not None:
                if on_error == "raise":
                    # Keep (and cache) what was read before the bad item.
                    run.flush()
                    raise prepared.error
                run.errors[index] = str(prepared.error)
                continue
            run.add(position, prepared)
    run.flush()
    run.finish()
    return run


class Plan:
    """What a driver decides before embedding: cache hits, repeats, work to do."""

    def __init__(self, n_items):
        self.keys = [None] * n_items
        self.paths = [None] * n_items
        self.stamps = [None] * n_items
        self.errors = {}  # {index: message}
        self.stop = n_items  # with on_error="raise": the first unreadable index
        self.todo = []  # indices to embed, in order
        self.repeats = Repeats()
        self.hits = set()  # indices served from the cache


def plan_with_cache(spec, items, cache, namespace, out, on_error):
    """Hash every item, copy cached embeddings into ``out``, list what must be embedded.

    Nothing is decoded: files are read (in threads, as a run reads them)
    only to be hashed. ``namespace`` is the cache namespace's ``(name, info)``.
    """
    plan = Plan(len(items))
    stream = prepared_items(spec, None, items, None, namespace, decode=False)
    with closing(stream):
        # After the first bad item, or an error (Ctrl-C), the reads not
        # started are dropped rather than waited for.
        for index, prepared in stream:
            if prepared.error is not None:
                plan.errors[index] = str(prepared.error)
                if on_error == "raise":
                    # A local run reads no further than the first bad item.
                    plan.stop = index
                    break
                continue
            plan.keys[index], plan.paths[index], plan.stamps[index] = (
                prepared.key, prepared.path, prepared.stamp
            )
            plan.repeats.seen(prepared.key, index)
    first = plan.repeats.first
    for key, vector in cache.get_many(list(first)).items():  # it queries in blocks
        out[first[key]] = vector
        plan.hits.add(first[key])
    repeated = {index for index, _ in plan.repeats.pairs}
    plan.todo = [
        index for index in range(plan.stop)
        if index not in plan.errors and index not in plan.hits and index not in repeated
    ]
    return plan


def progress_bar(progress, total, iterable=None):
    """The progress bar over the images of one call; ``progress=None``: terminals only."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc="Embedding images", unit="img",
        disable=None if progress is None else not progress,
    )


def normalized(out, normalize):
    """``out``, with each row L2-normalised in place if ``normalize``; NaN rows stay NaN."""
    if normalize:
        finite = ~np.isnan(out).any(axis=1)
        if finite.all():
            _l2_normalize(out, copy=False)
        elif finite.any():
            out[finite] = _l2_normalize(out[finite], copy=False)
    return out
