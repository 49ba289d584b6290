"""Cache keys: what an embedding depends on, hashed.

A key hashes the cache namespace and the image's content; the namespace
hashes everything else that changes an embedding: the checkpoint's weights
(by content, wherever they lie), the precision and quantization, the image
processor's configuration and the version of the pixels the reader produces.
None of it needs the model's weights in memory.
"""

import hashlib
import json
import os
import threading
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from ._preprocessing import namespace_identity as device_namespace_identity, preprocess_mode
from ._quantize import quantization_identity
from .images import DEFAULT_MAX_FILE_SIZE, read_file_bytes, read_image

__all__ = ["READER_VERSION", "cache_namespace", "load_item"]

#: Version of the pixels the reader and preprocessing produce; part of every
#: cache key, so that a change in how images are decoded invalidates old entries.
READER_VERSION = 1

_FILE_DIGESTS = {}
_KEYS_LOCK = threading.Lock()


def file_digest(path):
    """blake2b of a file's bytes, computed once per (path, size, mtime) in a process."""
    stat = os.stat(path)
    memo_key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(memo_key)
    if digest is None:
        hasher = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                hasher.update(chunk)
        digest = _FILE_DIGESTS[memo_key] = hasher.hexdigest()
    return digest


def folder_identity(folder):
    """Content identity of a checkpoint folder: its config and weight files."""
    hasher = hashlib.blake2b(digest_size=16)
    config = folder / "config.json"
    hasher.update(config.read_bytes() if config.is_file() else b"")
    for weights in sorted(folder.glob("*.safetensors")):
        hasher.update(f"\0{weights.name}\0{weights.stat().st_size}\0".encode())
        hasher.update(file_digest(weights).encode())
    return hasher.hexdigest()


def checkpoint_identity(backbone):
    """What makes this checkpoint's weights these weights, independent of where they lie."""
    folder = Path(backbone.name)
    if folder.is_dir():
        return {"weights": folder_identity(folder)}
    # A hub id: hash the snapshot it was loaded from, found in the local HF cache.
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(backbone.name, "config.json")
    except Exception:  # an old or absent huggingface_hub: fall back to the id
        config = None
    identity = {"model": backbone.name}
    if isinstance(config, str):
        snapshot = Path(config).parent
        identity.update(revision=snapshot.name, weights=folder_identity(snapshot))
    return identity


def cache_namespace(backbone, quantize=None, preprocess="cpu"):
    """(name, info) of the cache namespace of a checkpoint, memoised.

    The name hashes everything that changes an embedding besides the image:
    the checkpoint's weights, the precision and quantization, the image
    processor's configuration, where it runs (``preprocess``, resolved by
    :func:`~skclipxray._preprocessing.preprocess_mode`: device-side resizing
    gives other pixels than Pillow's) and the reader version. Preprocessing
    on the CPU keeps the names namespaces had before device-side
    preprocessing existed, since its pixels are unchanged (grayscale images,
    resized in one plane, give exactly the RGB resize's pixels). ``info`` is
    what it stands for, stored in the cache for people to read. ``backbone``
    is a loaded :class:`~skclipxray._backbone.Backbone` or a
    :class:`~skclipxray._backbone.CheckpointInfo` (its ``name``, ``device``,
    ``dtype`` and ``image_processor`` are all that is used): both give the
    same name.
    """
    where = preprocess_mode(backbone, preprocess)
    memo = ("cache_namespace", quantize, where)
    with _KEYS_LOCK:
        found = backbone.derived.get(memo)
    if found is not None:
        return found
    identity = {
        "checkpoint": checkpoint_identity(backbone),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "image_processor": json.loads(backbone.image_processor.to_json_string()),
        "reader_version": READER_VERSION,
        "output": backbone.architecture.image_output,
    }
    info = {"model": backbone.name, "dtype": identity["dtype"]}
    if quantize is not None:
        # Only quantized namespaces say so: float ones keep their earlier names.
        identity["quantization"] = quantization_identity(quantize)
        info["quantize"] = quantize
    if where != "cpu":
        # Likewise, only device-side preprocessing says so.
        identity["preprocessing"] = device_namespace_identity()
        info["preprocess"] = where
    text = json.dumps(identity, sort_keys=True)
    name = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    info["identity"] = text
    with _KEYS_LOCK:
        backbone.derived[memo] = (name, info)
    return name, info


def load_item(item, index, namespace=None, max_file_size=DEFAULT_MAX_FILE_SIZE):
    """Read one item once: what to decode, and the cache key of that very content.

    A file is read whole, once (:func:`~skclipxray.images.read_file_bytes`):
    its key is the hash of those bytes, and the image is decoded from the
    same bytes, so that a file replaced in between can never store one
    content's embedding under another's key. PIL images are hashed by mode,
    size and pixels, arrays by dtype, shape and values.

    Parameters
    ----------
    item : path, PIL image, array or other
    index : int
        Position in X, for error messages.
    namespace : str or None
        The cache namespace; ``None``: no key is computed.
    max_file_size : int

    Returns
    -------
    source : FileBytes or the item
        What :func:`~skclipxray.images.read_image` decodes.
    key : bytes or None
        ``None`` without a namespace, or for an item with no hashable content
        (it is embedded, never cached).
    path : str or None
    stamp : (size, mtime_ns) or None
        From the ``fstat`` of the file as it was read.

    Raises
    ------
    ImageReadError
        If a file cannot be read, or the item is of an unsupported type.
    """
    if isinstance(item, (str, PathLike)):
        source = read_file_bytes(item, index=index, max_file_size=max_file_size)
        stamp = (source.size, source.mtime_ns)
        if namespace is None:
            return source, None, source.path, stamp
        hasher = hashlib.blake2b(namespace.encode(), digest_size=32)
        hasher.update(b"\0file\0")
        hasher.update(source.data)
        return source, hasher.digest(), source.path, stamp
    if isinstance(item, Image.Image):
        if namespace is None:
            return item, None, None, None
        try:
            pixels = item.tobytes()
            palette = item.getpalette() if item.mode in ("P", "PA") else None
        except Exception:
            read_image(item, index=index)  # raises the reader's own message
            return item, None, None, None
        hasher = hashlib.blake2b(namespace.encode(), digest_size=32)
        hasher.update(f"\0pil\0{item.mode}\0{item.size}\0".encode())
        hasher.update(pixels)
        if palette is not None:  # palette images: same indices, other colours
            hasher.update(bytes(palette))
        return item, hasher.digest(), None, None
    if isinstance(item, np.ndarray) and not item.dtype.hasobject:
        if namespace is None:
            return item, None, None, None
        array = np.ascontiguousarray(item)
        hasher = hashlib.blake2b(namespace.encode(), digest_size=32)
        hasher.update(f"\0array\0{array.dtype.str}\0{array.shape}\0".encode())
        hasher.update(array.data)
        return item, hasher.digest(), None, None
    read_image(item, index=index)  # unsupported types raise here
    return item, None, None, None
