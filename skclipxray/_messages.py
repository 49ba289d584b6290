"""What an embedding call tells its user: :class:`EmbeddingWarning` and its messages."""

import sys
import warnings

from .images import _describe

__all__ = ["EmbeddingWarning"]

# Packages whose frames stand between a user's call and the warning.
_LIBRARY_PACKAGES = ("skclipxray", "sklearn", "joblib")


class EmbeddingWarning(UserWarning):
    """A transform call returned its embeddings, but not all went as asked.

    Emitted by :meth:`SigLIPImageEmbedder.transform
    <skclipxray.SigLIPImageEmbedder.transform>`, at most once per cause and
    call:

    * with ``on_error="nan"``, some images could not be read and were given
      NaN rows: the message lists every failed item (index, path, reason),
      which are also kept in the embedder's ``read_errors_``;
    * with ``on_error="nan"``, the cache is read-only, so the new embeddings
      were returned but not stored;
    * stored embeddings failed their integrity check when read (counted in
      ``n_rejected`` of :class:`~skclipxray.cache.EmbeddingCache`): they were
      not used, and their images were embedded again.
    """


def warn(message):
    """Emit an :class:`EmbeddingWarning` attributed to the user's line of code.

    How many frames of scikit-learn (its output wrappers, ``fit_transform``,
    a Pipeline) stand between the user and the embedder depends on the call,
    so a fixed ``stacklevel`` would often name scikit-learn's source instead:
    the level is that of the first frame outside these libraries.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and (
        frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARY_PACKAGES
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, EmbeddingWarning, stacklevel=level)


def failure_message(errors, n_items, shown=50):
    """The images of a call that could not be read, the first ``shown`` of them listed."""
    lines = [f"  {message}" for message in list(errors.values())[:shown]]
    if len(errors) > shown:
        lines.append(f"  ... and {len(errors) - shown} more (see read_errors_).")
    return (
        f"{len(errors)} of {n_items} images could not be read; their embeddings "
        "are NaN (on_error='nan'):\n" + "\n".join(lines)
    )


def read_only_message(cache, missing, items):
    """Why a read-only cache cannot serve a call: what is missing, and what to do."""
    first = missing[0]
    return (
        f"The embedding cache {str(cache.path)!r} is read-only (see "
        f"EmbeddingCache.read_only), and {len(missing)} of the {len(items)} images "
        f"are not in it (the first: X[{first}] {_describe(items[first])}), so their "
        "embeddings could not be stored; nothing was embedded. Use a copy of the "
        "cache in a folder you can write to, or on_error='nan' to embed them "
        "without storing them (with a warning; unreadable images then get NaN "
        "rows), or cache=None."
    )


def unstored_message(cache, n_unstored):
    """New embeddings that a read-only cache could not take."""
    return (
        f"The embedding cache {str(cache.path)!r} is read-only (see "
        f"EmbeddingCache.read_only): {n_unstored} new embeddings were returned but "
        "not stored, so a later run embeds those images again. To keep them, use "
        "a cache in a folder you can write to."
    )


def warn_outcome(errors, n_items, cache=None, n_unstored=0):
    """The end-of-call warnings, both paths alike: images not read, embeddings not stored."""
    if errors:
        warn(failure_message(errors, n_items))
    if n_unstored:
        warn(unstored_message(cache, n_unstored))


def warn_rejected(cache, n_rejected, *, stored):
    """One warning for the stored embeddings that failed their integrity check."""
    if n_rejected > 0:
        again = "embedded again" + (" and stored" if stored else " (not stored: read-only)")
        warn(
            f"{n_rejected} stored embeddings in the cache {str(cache.path)!r} failed "
            "their integrity check (wrong length, non-finite values or a checksum "
            f"mismatch); they were not used, and their images were {again}."
        )
