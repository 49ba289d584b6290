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
"""

import os
import zipfile

__all__ = ["TRUSTED_TYPES", "load", "save"]

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
    "skclipxray.classifiers.BaselineClassifier",
    "skclipxray.classifiers.ConcatFusionClassifier",
    "skclipxray.classifiers.WeightedSumClassifier",
    "skclipxray.embedders.SigLIPImageEmbedder",
    "skclipxray.prompts.PromptEnsembleEmbedder",
    "skclipxray.zeroshot.ZeroShotClassifier",
)

_INSTALL_HINT = 'pip install skops'


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


def load(path, *, trusted=None):
    """Load an estimator saved by :func:`save`, refusing unknown types.

    Before anything is built, the types the file would create are checked:
    skops' own trusted types (scikit-learn estimators, numpy arrays,
    builtins), :data:`TRUSTED_TYPES` and the types in ``trusted`` are
    allowed; any other type stops the load.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save` (or :func:`skops.io.dump`).
    trusted : list of str or type, optional
        Further types to allow, e.g. ``["mypackage.MyTransformer"]`` for a
        pipeline that holds your own estimator. Review each one: a type that
        runs code when it is built can be abused by whoever wrote the file.
        :func:`skops.io.get_untrusted_types` lists the types a file holds.

    Returns
    -------
    object
        The estimator, as it was saved. A head fitted on a GPU is loaded on
        the CPU when that GPU is not available here (with a warning).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a skops file (for instance a joblib or pickle
        file, which this function never loads).
    TypeError
        If the file holds types that are not trusted; the message lists
        them and says how to allow them.

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
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r}.")
    allowed = [*TRUSTED_TYPES, *_type_names(trusted)]
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(allowed))
    except zipfile.BadZipFile as exc:
        raise ValueError(
            f"{path!r} is not a skops file ({exc}). skclipxray.persistence.load "
            "reads files written by skclipxray.persistence.save; it never loads "
            "joblib or pickle files, which can run arbitrary code. Load those "
            "with joblib.load only if you trust their origin."
        ) from exc
    if untrusted:
        raise TypeError(
            f"Refusing to load {path!r}: it holds types that are not trusted: "
            f"{untrusted}. Building them could run code from the file. If you "
            "trust the file's origin and have reviewed these types, allow them "
            f"with load({path!r}, trusted={untrusted})."
        )
    return sio.load(path, trusted=allowed)
