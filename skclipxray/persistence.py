"""Save and load fitted estimators safely, with :mod:`skops.io`.

Loading a pickle (what :func:`joblib.load` and :func:`pickle.load` read) runs
whatever code the file tells it to: a pickle names functions to call, with
their arguments, to rebuild its objects, and any importable function will do
(``os.system`` included). A model file from a colleague, a download or a
shared drive is therefore a program. Load joblib and pickle files only when
you made them yourself or trust whoever did.

:func:`save` writes a skops file instead: a zip archive of JSON describing
each object, and ``.npy`` arrays. :func:`load` first lists the types the file
would create and refuses to load it if any is not trusted, before anything is
built. skclipxray's estimators, scikit-learn's estimators, numpy arrays and
builtin containers are trusted (:data:`TRUSTED_TYPES` lists what skops does
not already trust); any other type must be named by the caller.

This is safe for skclipxray's heads because a fitted head does not save its
skorch net (skorch would embed a nested pickle of its torch module, loaded
with pickle, inside the skops file): it saves the module's weights as numpy
arrays, the training history as lists and dicts, and rebuilds the net when
loaded. The SigLIP checkpoint is never saved with an estimator; it is loaded
again from its model id or folder, from safetensors weights only, and remote
code is never run.

A file from others may also be damaged, or built to exhaust memory: a few
megabytes of zip can declare gigabytes of zeros. :func:`load` therefore checks
the archive before it builds anything: the uncompressed sizes its members
declare (against ``max_bytes``); that each member holds what it declares,
no more, and passes its CRC check (read in bounded chunks, never past its
declared size); and that each array's ``.npy`` header agrees with its
member's size. Every file it cannot load, for any of
these reasons or because its content cannot be rebuilt, raises
:class:`PersistenceError` naming the file and what is wrong.
"""

import copy
import json
import math
import numbers
import os
import zipfile
import zlib

import numpy as np

__all__ = ["PersistenceError", "TRUSTED_TYPES", "load", "save"]

#: Types that skclipxray's fitted estimators and pipelines hold and that
#: :mod:`skops.io` does not trust by default. Each is rebuilt without running
#: code from the file: the estimators from their attributes, ``numpy.dtype``
#: from an empty ``.npy`` array, paths (model folders, cache files) from
#: their strings. scikit-learn estimators, numpy arrays and builtins are
#: trusted by skops itself.
TRUSTED_TYPES = (
    "numpy.dtype",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib._local.PosixPath",  # Python >= 3.13 spells the module so
    "pathlib._local.WindowsPath",
    "skclipxray.calibration.MultilabelCalibratedClassifierCV",
    "skclipxray.classifiers.BaselineClassifier",
    "skclipxray.classifiers.ConcatFusionClassifier",
    "skclipxray.classifiers.WeightedSumClassifier",
    "skclipxray.embedders.ImageEmbedder",
    "skclipxray.embedders.SigLIPImageEmbedder",
    "skclipxray.prompts.PromptEnsembleEmbedder",
    "skclipxray.similarity.PromptSimilarity",
    "skclipxray.text_anchored.TextAnchoredClassifier",
    "skclipxray.thresholds.MultilabelTunedThresholdClassifierCV",
    "skclipxray.tip_adapter.TipAdapterClassifier",
    "skclipxray.zeroshot.ZeroShotClassifier",
)

_INSTALL_HINT = 'pip install skops'

#: Compression methods :func:`load` reads. Python's zipfile decompresses a
#: deflated member in steps of bounded output, so reading one can be
#: stopped at its declared size; bzip2 and LZMA members are decompressed
#: a whole read at a time, which a small member can turn into gigabytes.
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

#: Bytes read (and decompressed) at a time when checking a member.
_CHUNK = 1 << 20

#: What reading or rebuilding a damaged file raises, in zipfile, json, numpy,
#: skops, torch or the estimators' ``__setstate__``.
_DAMAGE = (
    zipfile.BadZipFile, zlib.error, EOFError, KeyError, IndexError, ValueError,
    TypeError, AttributeError, RuntimeError, NotImplementedError, RecursionError,
)


class PersistenceError(ValueError):
    """A file :func:`load` refuses: not a skops file, damaged, or too large.

    The message names the file and says what is wrong. A subclass of
    :class:`ValueError`. Files that hold untrusted types raise
    :class:`TypeError` instead, which says how to allow them.
    """


def _skops_io():
    try:
        import skops.io
    except ImportError as exc:
        raise ImportError(
            f"Saving and loading skops files needs skops: {_INSTALL_HINT}"
        ) from exc
    return skops.io


def _type_names(types):
    """Type names as skops spells them: ``module.Name``."""
    if types is None:
        return []
    if isinstance(types, (str, type)):
        types = [types]
    return [t if isinstance(t, str) else f"{t.__module__}.{t.__name__}" for t in types]


def _reason(exc):
    """What an exception from reading or rebuilding says, in one line."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return f"missing entry {exc.args[0]!r} (KeyError)"
    return f"{type(exc).__name__}: {exc}"


def _members_named_by(schema):
    """The archive members the schema refers to (``"file"`` of its nodes)."""
    found, stack = set(), [schema]
    while stack:  # iterative: the schema nests as deep as the estimator
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node and isinstance(node.get("file"), str):
                found.add(node["file"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _check_member(archive, info):
    """Why a member's data is not what it declares (size, CRC), or None.

    The member is decompressed in chunks of bounded size and never more than
    one byte past its declared size, however long its stream: zipfile
    alone would decompress up to a gigabyte past it in one step.
    """
    probe = copy.copy(info)
    probe.file_size += 1  # lets one byte past the declared size be seen
    probe.CRC = None  # checked below, over the declared bytes only
    size, crc = 0, 0
    with archive.open(probe) as member:
        while chunk := member.read(_CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    if size != info.file_size:
        more_or_fewer = "more" if size > info.file_size else "fewer"
        return (f"member {info.filename!r} holds {more_or_fewer} than the "
                f"{info.file_size} bytes it declares")
    if crc != info.CRC:
        return f"member {info.filename!r} fails its CRC check: its data was altered"
    return None


def _check_array(archive, info):
    """Why an ``.npy`` member's header disagrees with its size, or None."""
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:  # format 3.0: numpy reads its own header
                return None
            shape, _, dtype = read_header(member)
        except ValueError as exc:
            return f"member {info.filename!r} is not a valid .npy array ({exc})"
        offset = member.tell()
    if dtype.hasobject:
        return (f"member {info.filename!r} holds Python objects, which would "
                "need unpickling")
    n_bytes = math.prod(shape) * dtype.itemsize
    if offset + n_bytes != info.file_size:
        return (f"member {info.filename!r} declares an array of shape {shape} "
                f"and dtype {dtype} ({n_bytes} bytes), but holds "
                f"{info.file_size - offset} bytes of data")
    return None


def _check_schema(archive, infos):
    """Why ``schema.json`` is unreadable or names missing members, or None."""
    names = {info.filename for info in infos}
    if "schema.json" not in names:
        return "it has no schema.json, so it is not a skops file"
    try:
        schema = json.loads(archive.read("schema.json"))
    except (ValueError, RecursionError) as exc:
        return f"its schema.json is not valid JSON ({type(exc).__name__}: {exc})"
    if not isinstance(schema, dict):
        return f"its schema.json holds a {type(schema).__name__}, not an object"
    missing = sorted(_members_named_by(schema) - names)
    if missing:
        return (f"schema.json refers to {len(missing)} member(s) the archive "
                f"does not hold: {missing[:5]}")
    return None


def _find_damage(archive, infos):
    """The first thing wrong in the archive, in words, or None."""
    for info in infos:
        if problem := _check_member(archive, info):
            return problem
    if problem := _check_schema(archive, infos):
        return problem
    for info in infos:
        if info.filename.endswith(".npy"):
            if problem := _check_array(archive, info):
                return problem
    return None


def _check_archive(file, path, max_bytes):
    """Refuse a damaged or oversized skops file before anything is built.

    The zip directory comes first: a file too large is refused before any
    member is read. Then each member is read through in bounded chunks, and
    ``schema.json`` and the arrays' headers are parsed.
    """
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise PersistenceError(
            f"{path!r} is not a skops file ({exc}). skclipxray.persistence.load "
            "reads files written by skclipxray.persistence.save; it never loads "
            "joblib or pickle files, which can run arbitrary code. Load those "
            "with joblib.load only if you trust their origin."
        ) from exc
    with archive:
        infos = archive.infolist()
        total = sum(info.file_size for info in infos)
        if max_bytes is not None and total > max_bytes:
            largest = max(infos, key=lambda info: info.file_size)
            raise PersistenceError(
                f"Refusing to load {path!r}: its members would take {total} bytes "
                f"once decompressed, above max_bytes={max_bytes} (the largest, "
                f"{largest.filename!r}, {largest.file_size} bytes). Nothing was "
                "decompressed. If you trust the file, pass a larger max_bytes."
            )
        for info in infos:
            if info.compress_type not in _READABLE_METHODS:
                raise PersistenceError(
                    f"Refusing to load {path!r}: member {info.filename!r} is "
                    f"compressed with method {info.compress_type}; only stored "
                    "and deflated members are read, whose decompression can be "
                    "bounded. Save it again with skclipxray.persistence.save."
                )
        try:
            problem = _find_damage(archive, infos)
        except _DAMAGE as exc:
            problem = f"it cannot be read ({_reason(exc)})"
    if problem is not None:
        raise PersistenceError(f"{path!r} is damaged: {problem}.")


def save(estimator, path):
    """Save a fitted estimator or pipeline to a skops file.

    The file can be loaded with :func:`load` without running code from it.
    Neither the SigLIP checkpoint nor any torch object is saved: a fitted
    head stores its weights as numpy arrays, and embedders record the model
    id or folder, loaded again when they are next used.

    Parameters
    ----------
    estimator : object
        Usually a fitted :class:`~sklearn.pipeline.Pipeline` or skclipxray
        estimator; anything :func:`skops.io.dump` can save.
    path : str or path-like
        File to write, by convention with the suffix ``.skops``.

    See Also
    --------
    load : read the file back.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skclipxray import BaselineClassifier
    >>> from skclipxray.persistence import load, save
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 8)).astype("float32")
    >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    >>> head = BaselineClassifier(hidden_sizes=(16,), max_epochs=3, random_state=0)
    >>> path = f"{tempfile.mkdtemp()}/head.skops"
    >>> save(head.fit(X, Y), path)
    >>> bool(np.array_equal(load(path).predict_proba(X), head.predict_proba(X)))
    True
    """
    _skops_io().dump(estimator, os.fspath(path))


def load(path, *, trusted=None, max_bytes=2**30):
    """Load an estimator saved by :func:`save`, refusing unknown types.

    Before anything is built, the archive is checked (the sizes its members
    declare, their data and the arrays' headers, without decompressing more
    than they declare), then the types the file would create: skops' own
    trusted types (scikit-learn estimators, numpy arrays, builtins),
    :data:`TRUSTED_TYPES` and the types in ``trusted`` are allowed; any other
    type stops the load.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save` (or :func:`skops.io.dump`, stored or
        with ``compression=zipfile.ZIP_DEFLATED``).
    trusted : list of str or type, optional
        Further types to allow, e.g. ``["mypackage.MyTransformer"]`` for a
        pipeline that holds your own estimator. Review each one: a type that
        runs code when it is built can be abused by whoever wrote the file.
        :func:`skops.io.get_untrusted_types` lists the types a file holds.
    max_bytes : int or None, default=2**30
        Most bytes the file's members may take once decompressed, all
        together (1 GiB by default; a fitted head takes a few megabytes).
        A larger file is refused from its zip directory, before anything is
        decompressed: a small compressed file can declare gigabytes, and
        loading takes a few times the decompressed size in memory. ``None``
        removes the limit, for files you trust; members are still never read
        past the size they declare.

    Returns
    -------
    object
        The estimator, as it was saved. A head fitted on a GPU is loaded on
        the CPU when that GPU is not available here (with a warning).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or is not a regular file.
    PersistenceError
        If the file cannot be loaded; the message names it and says why:
        it is not a skops file (for instance a joblib or pickle file, which
        this function never loads); its members would take more than
        ``max_bytes`` once decompressed; a member is compressed with another
        method than deflate, or holds more or less data than it declares;
        ``schema.json`` is missing or not valid JSON; a member it names is
        missing; an array's header disagrees with its size; or the content
        cannot be rebuilt (a weight of the wrong shape, a missing entry such
        as a head's history). A subclass of :class:`ValueError`.
    TypeError
        If the file holds types that are not trusted; the message lists
        them and says how to allow them.
    ValueError
        If ``max_bytes`` is not a non-negative integer or None.

    See Also
    --------
    save : write the file.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skclipxray.persistence import load, save
    >>> path = f"{tempfile.mkdtemp()}/transformer.skops"
    >>> save(FunctionTransformer(func=print), path)
    >>> load(path)
    Traceback (most recent call last):
    ...
    TypeError: Refusing to load ...: it holds types that are not trusted: ['builtins.print']. ...
    >>> load(path, trusted=["builtins.print"])
    FunctionTransformer(func=<built-in function print>)
    """
    sio = _skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    path = os.fspath(path)
    if max_bytes is not None and (
        not isinstance(max_bytes, numbers.Integral) or isinstance(max_bytes, bool)
        or max_bytes < 0
    ):
        raise ValueError(
            f"max_bytes must be a non-negative integer or None, got {max_bytes!r}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r}.")
    allowed = [*TRUSTED_TYPES, *_type_names(trusted)]
    # One open file for the checks and the load: what is checked is what loads.
    with open(path, "rb") as file:
        _check_archive(file, path, max_bytes)
        try:
            found = sio.get_untrusted_types(file=file)
        except _DAMAGE as exc:
            raise PersistenceError(
                f"{path!r} is damaged: its content cannot be read ({_reason(exc)})."
            ) from exc
        untrusted = sorted(set(found) - set(allowed))
        if untrusted:
            raise TypeError(
                f"Refusing to load {path!r}: it holds types that are not trusted: "
                f"{untrusted}. Building them could run code from the file. If you "
                "trust the file's origin and have reviewed these types, allow them "
                f"with load({path!r}, trusted={untrusted})."
            )
        try:
            return sio.load(file, trusted=allowed)
        except UntrustedTypesFoundException:
            raise
        except _DAMAGE as exc:
            raise PersistenceError(
                f"{path!r} is damaged: its content cannot be rebuilt ({_reason(exc)})."
            ) from exc
