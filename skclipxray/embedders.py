"""Image embeddings from a frozen vision tower, as a scikit-learn transformer.

:class:`ImageEmbedder` takes a checkpoint of any supported family (SigLIP,
SigLIP 2, CLIP, image-only DINOv2); :class:`SigLIPImageEmbedder` is the same
estimator under the name the method gives it, with the same default,
XraySigLIP. Both are kept: the first says what it does whatever the
checkpoint, the second is what the method's write-up, its examples and the
files saved with it name.
"""

import os
from numbers import Integral, Real
from os import PathLike

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _parallel
from ._backbone import COMPILE_MODES, DEFAULT_MODEL, checkpoint_info, load_backbone
from ._engine import RunSpec, embed, normalized, plan_with_cache
from ._keys import cache_namespace
from ._messages import (
    EmbeddingWarning,
    read_only_message,
    warn_outcome,
    warn_rejected,
)
from ._preprocessing import PREPROCESS_MODES, preprocess_mode
from ._quantize import QUANTIZE_MODES
from ._validation import check_input_features
from .cache import EmbeddingCache, ReadOnlyCacheError
from .images import DEFAULT_MAX_FILE_SIZE, ImageReadError

__all__ = ["EmbeddingWarning", "ImageEmbedder", "SigLIPImageEmbedder"]


def _as_items(X):
    """Turn the accepted containers of images into a list of single images.

    A list, tuple, 1-D object/str array, pandas Series or one-column DataFrame
    is a collection of images. A numeric array is refused: it is ambiguous
    (one RGB image, or a stack of grayscale images?).
    """
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns; pass a single "
                "column of image paths (or a Series)."
            )
        return list(X.iloc[:, 0])
    if isinstance(X, pd.Series):
        return list(X)
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS" and X.ndim == 1:
            return list(X)
        raise ValueError(
            f"X is a {X.ndim}-D array of dtype {X.dtype}; pass a list of images "
            "(paths, PIL images, or arrays of shape (H, W) or (H, W, C)) "
            "or a 1-D array of paths."
        )
    if isinstance(X, (str, bytes, PathLike)) and os.path.isdir(X):
        folder = os.fsdecode(X)
        raise TypeError(
            f"X is a folder ({folder!r}), not a collection of images. Pass a list "
            "of its images, for example "
            f"sorted(glob.glob(os.path.join({folder!r}, '*.png'))) or "
            f"sorted(pathlib.Path({folder!r}).rglob('*.dcm')); on the command "
            "line, `skclipxray embed FOLDER` embeds every image of a folder."
        )
    if isinstance(X, (str, bytes, PathLike)) or hasattr(X, "getpixel"):
        raise TypeError(
            f"X is a single image ({type(X).__name__}); wrap it in a list."
        )
    try:
        return list(X)
    except TypeError:
        raise TypeError(
            f"X of type {type(X).__name__} is not a collection of images."
        ) from None


class ImageEmbedder(TransformerMixin, BaseEstimator):
    """Embed images with the vision tower of a frozen checkpoint.

    Images are read (PNG, JPEG, DICOM, PIL images or arrays; see
    :func:`skclipxray.images.read_image`), preprocessed by the checkpoint's own
    image processor (for XraySigLIP: bicubic resize to 512 px, mean = std =
    0.5) and passed in batches through the vision tower. The embedding is
    what the model's family calls its image embedding:

    - SigLIP and SigLIP 2: the tower's attention-pooled output, as
      ``get_image_features`` returns it. SigLIP 2's variable-resolution
      ("NaFlex") processor cuts the image into patches at its own aspect
      ratio, up to a number of patches: a chest film keeps its shape.
    - CLIP: the projected class token, as ``CLIPModel.get_image_features``
      returns it (the space its text embeddings share).
    - DINOv2 (e.g. RAD-DINO), image only: the class token after the final
      layer norm (``pooler_output``), the feature its authors train
      classifiers on; its patch tokens serve dense tasks, not this one.

    The model's weights are loaded on the first image that needs a forward
    pass and shared by every estimator asking for the same checkpoint,
    device and dtype; they are never pickled with the estimator. Until then
    only the checkpoint's configuration and image processor are read (and,
    with a cache, its files are hashed once per process to identify it), so
    a call served entirely from the cache never loads the model.

    Reading and preprocessing run in worker threads while the model runs, at
    most two batches ahead, so memory stays flat however many images there
    are. Each file is read once, whole (up to ``max_file_size`` bytes), and
    decoded from those bytes; only regular files are read. Batches run in
    ``torch.inference_mode``.

    With ``cache=PATH``, every embedding is stored in an
    :class:`~skclipxray.cache.EmbeddingCache` keyed by the image content (a
    hash of the file bytes, or of the pixels of in-memory images), the
    checkpoint's weights, the precision and the preprocessing. Every clone
    made by ``GridSearchCV`` or ``cross_validate`` shares it, as does every
    later run, so each image costs one forward pass, once. Each batch is
    committed as it completes: a run that is interrupted or killed keeps what
    it embedded, and the next run embeds only what is missing.

    Parameters
    ----------
    model : str or path-like, default=DEFAULT_MODEL
        Hugging Face id or local folder of a ``SiglipModel``,
        ``Siglip2Model``, ``CLIPModel`` or ``Dinov2Model`` checkpoint
        (``skclipxray models`` lists known chest X-ray ones). The default is
        Stanford's XraySigLIP (``StanfordAIMI/XraySigLIP__vit-b-16-siglip-512__webli``).
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Precision of the vision tower; embeddings are always returned as
        float32. ``"auto"`` follows the hardware: bfloat16 on CPUs that
        multiply it in hardware (AVX512-BF16 or AMX), float32 on other CPUs,
        half precision on GPUs. See Notes for the trade-off.
    batch_size : int, default=16
        Images per forward pass. Large batches keep a GPU busy. On a CPU a
        512 px checkpoint already gives each matrix product 1,024 rows per
        image, so larger batches gain nothing and small ones (even 1) can
        run a little faster, as they stay in the processor's caches.
    num_workers : int, default=2
        Threads reading and preprocessing the next batches while the model
        runs the current one. ``0`` reads in the calling thread.
    progress : bool or None, default=None
        Show a progress bar over images; ``None`` shows it on terminals only.
    normalize : bool, default=False
        L2-normalise each embedding (cosine geometry, as SigLIP's own
        image-text scores use). The cache stores raw embeddings, so one cache
        serves both settings.
    cache : str, path-like or None, default=None
        SQLite file of a persistent embedding cache (created if missing).
        Only the path is stored in the estimator; the file is opened for each
        :meth:`transform` call. Keep it on a local disk. A cache that cannot
        be written (read-only storage, a shared file) is opened read-only:
        its embeddings are served, and what is missing is handled as
        ``on_error`` says.
    cache_timeout : float, default=60.0
        Seconds to wait for another process's write lock on the cache before
        failing with :class:`~skclipxray.cache.EmbeddingCacheError`.
    on_error : {"raise", "nan"}, default="raise"
        What an image that cannot be read does. ``"raise"``: raise
        :class:`~skclipxray.images.ImageReadError` naming it, after embedding
        (and caching) the images before it. ``"nan"``: give it a row of NaN
        and, at the end, emit one :class:`EmbeddingWarning` listing every
        failed item. Failed items are never cached, so a later run retries them.
        With a read-only cache, ``"raise"`` raises
        :class:`~skclipxray.cache.ReadOnlyCacheError` before embedding
        anything if some images are not in the cache (saying how many), and
        ``"nan"`` embeds them, returns them without storing them, and warns
        once.
    max_file_size : int, default=DEFAULT_MAX_FILE_SIZE
        Largest image file read, in bytes (1 GiB). A larger file is an
        :class:`~skclipxray.images.ImageReadError`, found before it is read,
        so a wrong path cannot fill memory. It does not change the
        embeddings nor the cache.
    compile : bool or str, default=False
        Run the vision tower through ``torch.compile``, compiled once per
        loaded checkpoint and mode, on the first batch (which then takes much
        longer). ``True`` uses torch's default mode; a string names the mode:
        ``"max-autotune"`` times several kernels for each matrix product
        during compilation, so it compiles longest and runs fastest;
        ``"reduce-overhead"`` and ``"max-autotune-no-cudagraphs"`` are the
        others. Worth it for runs long enough to repay the compilation.
    quantize : {None, "int8"}, default=None
        ``"int8"``: run the vision tower's linear layers in int8 (weights
        quantized per output channel, inputs per token, on the fly, by
        torchao's ``Int8DynamicActivationInt8WeightConfig``); attention and
        everything else stay in ``dtype``. It needs ``compile`` (eager int8
        runs slower than float32) and torchao (``pip install
        'skclipxray[int8]'``). Meant for CPUs without bfloat16 units: see
        Notes for what it trades, and check its agreement with float32 on
        your own images before relying on it. Quantized
        embeddings have their own namespace in the cache.
    preprocess : {"auto", "cpu", "device"}, default="auto"
        Where images are resized and normalised. ``"cpu"``: in the reader
        threads, giving exactly the checkpoint's image processor's pixels.
        ``"device"``: the reader threads only decode, to uint8, and each
        batch is moved to the model's device and resized and normalised
        there with torch (``interpolate(mode="bicubic", antialias=True)``),
        which takes the CPU's heaviest work off it on a GPU. Its pixels
        approximate Pillow's (most are equal, nearly all others one grey
        level off), so its embeddings are close to the CPU path's, not
        equal, and have their own namespace in the cache. It needs a plain
        resize-rescale-normalise processor (SigLIP's): with a processor
        that crops, pads or cuts patches (CLIP, DINOv2, SigLIP 2),
        :meth:`fit` and :meth:`transform` raise a ``ValueError`` naming it.
        ``"auto"``: ``"device"`` on CUDA where it applies, ``"cpu"``
        otherwise. See Notes.
    n_jobs : int or None, default=None
        Jobs embedding chunks of images in parallel, through joblib.
        ``None`` means 1 unless in a :func:`joblib.parallel_config` context;
        under ``parallel_config(backend="dask")`` it means the whole Dask
        cluster. With one job, everything runs in this process as described
        above. Otherwise this process hashes the images and reads the
        cache, each worker process loads the checkpoint once (on its own
        device: ``"auto"`` resolves there) and embeds chunks, and this
        process writes the cache as chunks return. The result is the same,
        row for row. See :doc:`/scaling`.
    chunk_size : int or None, default=None
        Images per parallel task, rounded up to whole batches so that the
        batches are those of a run in one process. ``None``: about four
        tasks per worker, of at most 256 images. Unused with one job.

    Attributes
    ----------
    n_features_out_ : int
        Size of the embeddings (set by :meth:`fit`).
    n_embedded_ : int
        Images run through the model by the last :meth:`transform`.
    n_cached_ : int
        Images of the last :meth:`transform` served without a forward pass:
        found in the cache, or repeats of an earlier image of the same call.
    read_errors_ : dict
        ``{index: message}`` of the images the last :meth:`transform` could
        not read (only with ``on_error="nan"``).
    cache_namespace_ : str or None
        Name of this checkpoint's namespace in the cache (for
        :meth:`EmbeddingCache.to_frame <skclipxray.cache.EmbeddingCache.to_frame>`),
        set by :meth:`transform` when a cache is used.

    See Also
    --------
    skclipxray.cache.EmbeddingCache : the store behind ``cache=``; read it back
        as a table indexed by path with ``to_frame()``.

    Notes
    -----
    Choosing the precision and the execution (measured figures, by machine,
    are in ``benchmarks/results/embedding.md``):

    * On a CPU, float32 is the default: CPUs without bfloat16 units (no AMX
      or AVX512-BF16) emulate bfloat16 and run it several times slower,
      while those with such units run it faster than float32. Reading and
      preprocessing run in threads beside the model and are hidden behind
      it. bfloat16 embeddings are very close to float32's, not equal.
    * ``compile`` runs faster after a one-off compilation on the first
      batch; ``compile=True, quantize="int8"`` runs faster still on CPUs
      with int8 dot-product instructions (VNNI). int8 embeddings are close
      to float32's, not equal, and trained weights lose more to it than
      random ones: fit and predict with the same setting.
    * On GPUs, ``"auto"`` picks bfloat16 (float16 where bfloat16 is not
      supported); use large batches and as many ``num_workers`` as there are
      CPU cores, since decoding becomes the bottleneck. ``preprocess="auto"``
      resizes on the GPU there, leaving the CPU cores only the decoding;
      ``preprocess="cpu"`` keeps the processor's exact pixels, at the cost
      of resizing on the CPU. ``benchmarks/bench_gpu.py`` measures both
      on a GPU, and their agreement.
    * On the CPU path, a grayscale radiograph (any file, array or DICOM
      whose RGB version has three equal channels) is resized in one plane
      and replicated after, for a third of the resizing time; the pixels
      are exactly those of the processor's RGB resize.

    A cache file can be read back without the model:
    ``EmbeddingCache(path).to_frame(embedder.cache_namespace_)``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skclipxray import ImageEmbedder
    >>> from skclipxray.testing import make_tiny_siglip
    >>> checkpoint = make_tiny_siglip(tempfile.mkdtemp())
    >>> images = [np.full((64, 64), v, dtype=np.uint8) for v in (0, 128, 255)]
    >>> embedder = ImageEmbedder(checkpoint, device="cpu", progress=False)
    >>> embedder.fit_transform(images).shape
    (3, 32)

    With a cache, a second call (or a clone) runs no forward pass:

    >>> cached = ImageEmbedder(checkpoint, device="cpu", progress=False,
    ...                        cache=f"{tempfile.mkdtemp()}/embeddings.sqlite")
    >>> first = cached.fit_transform(images)
    >>> cached.n_embedded_, cached.n_cached_
    (3, 0)
    >>> again = cached.transform(images)
    >>> cached.n_embedded_, cached.n_cached_
    (0, 3)
    >>> bool(np.array_equal(first, again))
    True
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        device="auto",
        dtype="auto",
        batch_size=16,
        num_workers=2,
        progress=None,
        normalize=False,
        cache=None,
        cache_timeout=60.0,
        on_error="raise",
        max_file_size=DEFAULT_MAX_FILE_SIZE,
        compile=False,
        quantize=None,
        preprocess="auto",
        n_jobs=None,
        chunk_size=None,
    ):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.normalize = normalize
        self.cache = cache
        self.cache_timeout = cache_timeout
        self.on_error = on_error
        self.max_file_size = max_file_size
        self.compile = compile
        self.quantize = quantize
        self.preprocess = preprocess
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    _parameter_constraints: dict = {
        "model": [str, PathLike],
        # A name or a torch device and dtype: checkpoint_info checks them and
        # says which it knows.
        "device": "no_validation",
        "dtype": "no_validation",
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "progress": [None, "boolean"],
        "normalize": ["boolean"],
        "cache": [None, str, PathLike],
        "cache_timeout": [Interval(Real, 0, float("inf"), closed="left")],
        "on_error": [StrOptions({"raise", "nan"})],
        "max_file_size": [Interval(Integral, 1, None, closed="left")],
        "compile": ["boolean", StrOptions(set(COMPILE_MODES))],
        "quantize": [None, StrOptions(set(QUANTIZE_MODES))],
        "preprocess": [StrOptions(set(PREPROCESS_MODES))],
        # joblib refuses n_jobs=0.
        "n_jobs": [
            None,
            Interval(Integral, None, -1, closed="right"),
            Interval(Integral, 1, None, closed="left"),
        ],
        "chunk_size": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.non_deterministic = False
        return tags

    def __setstate__(self, state):
        # Files saved before ``preprocess`` existed preprocessed on the CPU.
        super().__setstate__({"preprocess": "cpu", **state})

    def _backbone(self):
        return load_backbone(self.model, device=self.device, dtype=self.dtype)

    def _checkpoint(self):
        return checkpoint_info(self.model, device=self.device, dtype=self.dtype)

    def _check_params(self):
        """What the declared constraints cannot say: quantization needs compilation."""
        if self.quantize is not None and not self.compile:
            raise ValueError(
                f"quantize={self.quantize!r} needs compile=True (or a compile mode): "
                "run eagerly, int8 matrix products are slower than float32."
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Record the embedding size; no training happens, no image is read.

        Parameters
        ----------
        X : collection of images, optional
            With ``y``, only checked: its container must be one
            :meth:`transform` accepts, and its length that of ``y``.
        y : array-like, optional
            Only its length is checked, so that a pipeline given labels that
            do not match its images fails before any image is embedded.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``X`` and ``y`` have different lengths, or
            ``preprocess="device"`` is asked of a checkpoint whose image
            processor does more than a plain resize (the message names it).
        sklearn.utils._param_validation.InvalidParameterError
            If a parameter has a value it cannot take (a ``ValueError``).
        """
        self._check_params()
        # Not a generator: transform still needs its items.
        if y is not None and hasattr(X, "__len__"):
            n_images = len(_as_items(X))
            if len(y) != n_images:
                raise ValueError(
                    f"X has {n_images} images but y has {len(y)} rows; "
                    "give one row of y per image, in the same order."
                )
        checkpoint = self._checkpoint()
        preprocess_mode(checkpoint, self.preprocess)  # "device" where it cannot: raises
        self.n_features_out_ = checkpoint.embedding_dim
        return self

    #: Prefix of the output feature names.
    _feature_prefix = "embedding"

    def get_feature_names_out(self, input_features=None):
        """Names of the embedding dimensions: ``embedding0``, ``embedding1``, ...

        (``siglip0``, ... for :class:`SigLIPImageEmbedder`.)

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            The name of the input column (the images), as a
            :class:`~sklearn.compose.ColumnTransformer` passes it: ``None``
            or one name. It does not change the output names.

        Returns
        -------
        ndarray of str

        Raises
        ------
        ValueError
            If ``input_features`` does not name exactly one column.
        """
        check_is_fitted(self, "n_features_out_")
        check_input_features(input_features)
        return np.asarray(
            [f"{self._feature_prefix}{i}" for i in range(self.n_features_out_)], dtype=object
        )

    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : list, 1-D array, pandas Series or one-column DataFrame
            Paths (str or path-like), PIL images, or arrays of shape (H, W)
            or (H, W, C).

        Returns
        -------
        ndarray of shape (n_images, n_features_out), float32
            With ``on_error="nan"``, rows of images that could not be read
            are NaN.

        Raises
        ------
        skclipxray.images.ImageReadError
            If an image cannot be read and ``on_error="raise"``; the message
            names its index and path.
        ValueError
            If ``preprocess="device"`` is asked of a checkpoint whose image
            processor does more than a plain resize.
        skclipxray.cache.ReadOnlyCacheError
            If the cache is read-only, some images are not in it and
            ``on_error="raise"``; nothing is embedded.
        skclipxray.cache.EmbeddingCacheError
            If the cache file cannot be used; the message names it.

        Warns
        -----
        EmbeddingWarning
            Once, listing the images that could not be read, with
            ``on_error="nan"``; once if new embeddings could not be stored in
            a read-only cache; once if stored embeddings failed their
            integrity check and were embedded again.
        """
        # No fit needed, so the parameters are checked here too.
        self._validate_params()
        self._check_params()
        items = _as_items(X)
        if not items:
            raise ValueError("X is empty: there are no images to embed.")
        # joblib's reading of n_jobs=None: 1, unless a parallel_config sets
        # n_jobs, or a backend whose default is all its workers (Dask's).
        if effective_n_jobs(self.n_jobs) != 1:
            return _parallel.embed_in_chunks(self, items)
        checkpoint = self._checkpoint()
        preprocess_mode(checkpoint, self.preprocess)  # "device" where it cannot: raises
        self.n_features_out_ = checkpoint.embedding_dim
        if self.cache is None:
            self.cache_namespace_ = None
            return self._embed(items, checkpoint, cache=None, namespace=None)
        namespace = cache_namespace(checkpoint, self.quantize, self.preprocess)
        self.cache_namespace_ = namespace[0]
        with EmbeddingCache(self.cache, timeout=self.cache_timeout) as cache:
            if cache.read_only and self.on_error == "raise":
                return self._serve_read_only(items, cache, namespace)
            return self._embed(items, checkpoint, cache=cache, namespace=namespace)

    # Running --------------------------------------------------------------------

    def _serve_read_only(self, items, cache, namespace):
        """A call on a read-only cache with ``on_error="raise"``: hits only, or an error.

        Every item is read and looked up first, so that nothing is embedded
        (and lost) when some images cannot be stored.
        """
        n_rejected = cache.n_rejected
        out = np.full((len(items), self.n_features_out_), np.nan, dtype=np.float32)
        plan = plan_with_cache(RunSpec.of(self), items, cache, namespace, out, self.on_error)
        warn_rejected(cache, cache.n_rejected - n_rejected, stored=False)
        if plan.todo:
            raise ReadOnlyCacheError(read_only_message(cache, plan.todo, items))
        if plan.stop < len(items):
            raise ImageReadError(plan.errors[plan.stop])
        plan.repeats.copy(out)
        self.n_embedded_ = 0
        self.n_cached_ = len(plan.hits) + len(plan.repeats.pairs)
        self.read_errors_ = {}
        return normalized(out, self.normalize)

    def _embed(self, items, checkpoint, *, cache, namespace):
        out = np.full((len(items), checkpoint.embedding_dim), np.nan, dtype=np.float32)
        n_rejected = 0 if cache is None else cache.n_rejected
        run = embed(
            RunSpec.of(self), checkpoint, items, out, load=self._backbone, cache=cache,
            namespace=namespace, on_error=self.on_error, progress=self.progress,
        )
        self.n_embedded_ = run.n_embedded
        self.n_cached_ = run.n_cached
        self.read_errors_ = run.errors
        warn_outcome(run.errors, len(items), cache,
                     0 if cache is None else run.writer.n_unstored)
        if cache is not None:
            warn_rejected(cache, cache.n_rejected - n_rejected, stored=run.writer.store)
        return normalized(out, self.normalize)


class SigLIPImageEmbedder(ImageEmbedder):
    """Embed images with a frozen checkpoint: :class:`ImageEmbedder` under the method's name.

    The method embeds chest X-rays with XraySigLIP's vision tower, its
    default here as in :class:`ImageEmbedder`, which this class is in all
    but its name (and the prefix of its feature names, ``siglip0``, ...).
    It takes a checkpoint of any supported family too. Files saved with it
    load as it.

    Parameters
    ----------
    model, device, dtype, batch_size, num_workers, progress, normalize, cache, \
cache_timeout, on_error, max_file_size, compile, quantize, preprocess, n_jobs, \
chunk_size
        As for :class:`ImageEmbedder`.

    See Also
    --------
    ImageEmbedder : The same estimator; its documentation is the full one.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skclipxray import SigLIPImageEmbedder
    >>> from skclipxray.testing import make_tiny_siglip
    >>> checkpoint = make_tiny_siglip(tempfile.mkdtemp())
    >>> embedder = SigLIPImageEmbedder(checkpoint, device="cpu", progress=False)
    >>> embedder.fit_transform([np.zeros((64, 64), dtype=np.uint8)]).shape
    (1, 32)
    >>> embedder.get_feature_names_out()[:2].tolist()
    ['siglip0', 'siglip1']
    """

    _feature_prefix = "siglip"
