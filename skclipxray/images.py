"""Read radiographs from files, PIL images or arrays as 8-bit RGB images.

:func:`read_image` is the one entry point. Whatever the input, it returns a
:class:`PIL.Image.Image` in mode ``"RGB"`` with 8 bits per channel, which is
what SigLIP image processors expect. Every failure raises
:class:`ImageReadError`, whose message names the item (its index when one is
given, and its path) and says what is wrong.

Conversion rules
----------------
8-bit images are taken exactly as they are:

* ``L`` (grayscale) is replicated into the three channels; ``RGB`` is kept;
  ``RGBA``, ``LA`` and other images with alpha lose the alpha channel (it is
  dropped, not composited: NIH ChestX-ray14 RGBA files are opaque everywhere);
  palette (``P``) and other 8-bit modes go through Pillow's ``convert("RGB")``.
* ``uint8`` arrays are used as they are, so ``read_image(path)``,
  ``read_image(Image.open(path))`` and ``read_image(np.asarray(Image.open(path)))``
  give the same pixels. Boolean arrays map ``False``/``True`` to 0/255.

Deeper images (16-bit PNG or TIFF, Pillow modes ``I;16``, ``I`` and ``F``,
integer arrays other than ``uint8``) are scaled, not clipped: the image's own
minimum and maximum are mapped linearly to 0 and 255 (rounded to nearest).
A constant image maps to 0. Floating-point images whose values all lie in
[0, 1] are taken as intensities and multiplied by 255 instead; any other
floating-point image is min-max scaled. NaN or infinite values are an error.
Colour images are scaled with one minimum and maximum for all channels, so
hues are kept.

DICOM files need the ``dicom`` extra (``pip install "skclipxray[dicom]"``:
pydicom and the pylibjpeg / pyjpegls decoders for JPEG, JPEG 2000 and JPEG-LS
pixel data). They are recognised by content (the ``DICM`` marker after the
128-byte preamble, or a data set that starts right at byte 0 as in old
ACR-NEMA style files) or by a ``.dcm``/``.dicom`` suffix. A file without a
transfer syntax gets the one its encoding was read with (implicit VR little
endian for the usual preamble-less files). Grayscale pixel data then goes
through the standard display pipeline:

1. the modality LUT (*Rescale Slope* and *Intercept*, or a modality LUT
   sequence);
2. the first VOI LUT or window (*Window Center* / *Width*) when the file has
   one, so values outside the window saturate; an invalid window is ignored,
   as viewers do;
3. min-max scaling to 0..255, as for any deep image above;
4. inversion (``255 - x``) when the file says that low values are bright:
   *Photometric Interpretation* ``MONOCHROME1`` or *Presentation LUT Shape*
   ``INVERSE``. The DX standard requires ``INVERSE`` together with
   ``MONOCHROME1``: both describe the same single inversion, so such a file
   is inverted once. In every case bone comes out bright.

Colour DICOM (RGB, YBR, palette colour) is converted to RGB, then treated as a
colour array. Of a multi-frame file only the first frame is read. Float and
double float pixel data (7FE0,0008 / 7FE0,0009) are read like integer pixel
data; NaN or infinite values are an error. Values are masked to *Bits Stored*,
as the standard says, unless the pixel values need more bits: then masking
would return another image, so the file is read with all its allocated bits
and an :class:`ImageReadWarning` names it.

Files are decoded by Pillow otherwise (PNG, JPEG, TIFF, BMP, ...); of a
multi-frame file (GIF, TIFF stack) only the first frame is read. Pillow's
decompression-bomb limit (:data:`PIL.Image.MAX_IMAGE_PIXELS`) is kept, and a
larger image is an error rather than a warning; it applies to DICOM files too.
EXIF orientation is not applied, as for ``np.asarray(Image.open(path))``.

Files
-----
Only regular files are read. A directory, a FIFO (named pipe), a device or a
socket is an error found by ``stat`` before the path is opened, so nothing
can block waiting for a writer or read an endless stream such as
``/dev/zero``. A file larger than ``max_file_size`` bytes (by default
:data:`DEFAULT_MAX_FILE_SIZE`, 1 GiB: radiographs are a few megabytes, DICOM
files up to tens) is an error too, found before reading it; a file that grows
past the limit while it is read is refused as well. Each file is read once,
and decoded from those bytes in memory: :func:`read_file_bytes` and
:class:`FileBytes` let a caller derive something else from the same bytes
(the embedding cache hashes them) and be sure that it describes the pixels
decoded, even if the file is replaced meanwhile.
"""

import io
import os
import stat
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._dicom import (
    _DICOM_SUFFIXES,
    _has_dicom_marker,
    _NoPixelData,
    _read_dicom_pixels,
    _starts_like_dicom,
)
from ._pixels import ImageReadWarning, _array_to_image, _failure, _gray_if_equal, _Unreadable

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "ImageReadError",
    "ImageReadWarning",
    "read_image",
]

# Signatures of formats whose truncated copies Pillow may fail to identify.
_KNOWN_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# Pillow modes whose samples are 8-bit and which convert("RGB") handles.
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX",
                    "CMYK", "YCbCr", "HSV", "LAB"}
# Modes Pillow cannot convert to RGB directly.
_CONVERT_FIRST = {"La": "LA"}

#: Largest file read by default, in bytes (1 GiB); see ``max_file_size``.
DEFAULT_MAX_FILE_SIZE = 1 << 30
# Bytes read per call after the first read (which asks for the whole file).
_READ_CHUNK = 1 << 24
# O_NONBLOCK: a path that turns into a FIFO between stat and open cannot block
# the open. O_NOCTTY: a terminal is never made the controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | sum(
    getattr(os, flag, 0) for flag in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY")
)
# What a path that is not a regular file is, for error messages.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class ImageReadError(ValueError):
    """An image could not be read or converted to 8-bit RGB.

    The message names the item, as ``X[index] 'path': what is wrong``
    (without the ``X[index]`` part when no index was given).

    Examples
    --------
    >>> try:
    ...     read_image("missing.png", index=3)
    ... except ImageReadError as exc:
    ...     print(exc)
    X[3] 'missing.png': file not found
    """


def read_image(item, *, index=None, max_file_size=DEFAULT_MAX_FILE_SIZE):
    """Read one radiograph as an 8-bit RGB PIL image.

    Parameters
    ----------
    item : str, os.PathLike, FileBytes, PIL.Image.Image or numpy.ndarray
        A path to an image file (any format Pillow reads, or DICOM), a PIL
        image of any mode, or an array of shape ``(H, W)`` or ``(H, W, C)``
        with ``C`` in 1, 3 or 4 (a fourth channel is alpha and is dropped).
        A :class:`~skclipxray.images.FileBytes` (from
        :func:`~skclipxray.images.read_file_bytes`) is decoded from its bytes,
        without opening the file again.
    index : int, optional
        Position of the item in a collection; it is only used to name the
        item in error messages, as ``X[index]``.
    max_file_size : int, default=DEFAULT_MAX_FILE_SIZE
        Largest file read, in bytes (1 GiB by default). A larger file is an
        error, found by ``stat`` before anything is read; raise the limit
        for larger files you mean to read.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, same width and height as the input. An RGB PIL image
        is returned as it is, without a copy. See the module docstring for
        how other modes, bit depths and DICOM files are converted.

    Raises
    ------
    ImageReadError
        If the item cannot be read: missing or empty file, a path that is not
        a regular file (directory, FIFO, device, socket), a file above
        ``max_file_size``, unknown or corrupt format, truncated file, DICOM
        without pixel data or without an installed decoder, unsupported
        type, shape or values, or an image above Pillow's decompression-bomb
        limit.

    Examples
    --------
    >>> import numpy as np
    >>> image = read_image(np.array([[0, 1000], [3000, 4000]], dtype=np.uint16))
    >>> image.mode, image.size
    ('RGB', (2, 2))
    >>> np.asarray(image)[..., 0]
    array([[  0,  64],
           [191, 255]], dtype=uint8)
    >>> read_image(np.zeros((2, 2, 2)), index=0)
    Traceback (most recent call last):
    ...
    skclipxray.images.ImageReadError: X[0] <numpy.ndarray ...>: unsupported array shape ...
    """
    return _read_image(item, index=index, max_file_size=max_file_size)


def _read_image(item, *, index=None, max_file_size=DEFAULT_MAX_FILE_SIZE, grayscale=False):
    """:func:`read_image`, or with ``grayscale``, its image in mode ``"L"`` where it is gray.

    With ``grayscale=True`` the image is returned in mode ``"L"`` wherever
    the RGB image :func:`read_image` returns would have three equal
    channels (grayscale files, arrays and DICOM, and colour images whose
    channels are equal, such as the RGBA files of NIH ChestX-ray14), else in
    ``"RGB"``. The ``"L"`` image is then each channel of the RGB one, so
    that resizing one plane instead of three gives the same pixels, for a
    third of the work. Same errors as :func:`read_image`.
    """
    _check_max_file_size(max_file_size)
    try:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            return _decode_file(path, _read_bytes(path, max_file_size)[0], grayscale)
        if isinstance(item, FileBytes):
            return _decode_file(item.path, item.data, grayscale)
        if isinstance(item, Image.Image):
            return _pil_to_image(item, grayscale)
        if isinstance(item, np.ndarray):
            return _array_to_image(np.asarray(item), grayscale)
        raise _Unreadable(
            f"unsupported input type {type(item).__name__!r}; expected a file "
            "path (str or os.PathLike), a PIL.Image.Image or a numpy.ndarray"
        )
    except _Unreadable as exc:
        raise _named(exc, item, index) from exc.__cause__


@dataclass(frozen=True)
class FileBytes:
    """The bytes of an image file, read once, with the file's size and mtime.

    :func:`read_image` decodes a ``FileBytes`` from its bytes, without opening
    the file again: whatever else is derived from ``data`` (the embedding
    cache hashes it) describes the very pixels decoded, even if the file is
    replaced in between.

    Attributes
    ----------
    path : str
        The path the bytes were read from.
    data : bytes
        The file's content.
    size, mtime_ns : int
        Size and modification time (ns) of the opened file, by ``fstat``
        before it was read.
    """

    path: str
    data: bytes = field(repr=False)
    size: int
    mtime_ns: int


def read_file_bytes(path, *, index=None, max_file_size=DEFAULT_MAX_FILE_SIZE):
    """Read a regular file of at most ``max_file_size`` bytes, once.

    Parameters
    ----------
    path : str or os.PathLike
    index : int, optional
        As for :func:`read_image`.
    max_file_size : int, default=DEFAULT_MAX_FILE_SIZE
        As for :func:`read_image`.

    Returns
    -------
    FileBytes
        To give to :func:`read_image`.

    Raises
    ------
    ImageReadError
        If the path is missing, cannot be opened or read, is not a regular
        file, or holds more than ``max_file_size`` bytes. An empty file is
        returned (:func:`read_image` then says it is empty).
    """
    _check_max_file_size(max_file_size)
    path = os.fspath(path)
    try:
        data, info = _read_bytes(path, max_file_size)
    except _Unreadable as exc:
        raise _named(exc, path, index) from exc.__cause__
    return FileBytes(path, data, info.st_size, info.st_mtime_ns)


def _check_max_file_size(max_file_size):
    if (
        isinstance(max_file_size, (bool, np.bool_))
        or not isinstance(max_file_size, (int, np.integer))
        or max_file_size < 1
    ):
        raise ValueError(
            f"max_file_size must be a positive number of bytes, got {max_file_size!r}."
        )


def _named(exc, item, index):
    """The ImageReadError for ``exc``, naming the item (and its index)."""
    prefix = "" if index is None else f"X[{index}] "
    return ImageReadError(f"{prefix}{_describe(item)}: {exc}")


def _describe(item):
    """Name an item in an error message: its path, or its type and shape."""
    if isinstance(item, (str, os.PathLike)):
        return f"'{os.fspath(item)}'"
    if isinstance(item, FileBytes):
        return f"'{item.path}'"
    if isinstance(item, Image.Image):
        if getattr(item, "filename", ""):
            return f"'{item.filename}'"
        return f"<PIL.Image.Image mode={item.mode} size={item.width}x{item.height}>"
    if isinstance(item, np.ndarray):
        return f"<numpy.ndarray shape={item.shape} dtype={item.dtype}>"
    return f"<{type(item).__name__}>"


# Files ---------------------------------------------------------------------


def _read_bytes(path, limit):
    """``(data, fstat)`` of a regular file of at most ``limit`` bytes, read once."""
    try:
        # Refused before opening: opening a FIFO waits for a writer, and
        # opening a device may act on it. fstat checks the file opened again.
        _check_regular(os.stat(path), limit)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise _Unreadable("file not found") from exc
    except OSError as exc:
        raise _failure("file cannot be opened", exc) from exc
    with open(fd, "rb", buffering=0) as fh:
        try:
            info = os.fstat(fd)
            _check_regular(info, limit)
            # The first read asks for the whole file, plus one byte to see
            # whether it grew; later reads, if it did, take chunks.
            parts, n_read, size = [], 0, info.st_size + 1
            while n_read <= limit:
                part = fh.read(min(size, limit + 1 - n_read))
                if not part:
                    break
                parts.append(part)
                n_read += len(part)
                size = _READ_CHUNK
        except OSError as exc:
            raise _failure("file cannot be read", exc) from exc
    if n_read > limit:
        raise _Unreadable(
            f"file grew while being read, past the limit of max_file_size={limit} bytes; "
            "pass a larger max_file_size to read larger files"
        )
    return (parts[0] if len(parts) == 1 else b"".join(parts)), info


def _check_regular(info, limit):
    """Refuse what is not a regular file, or is larger than ``limit`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((kind for test, kind in _FILE_KINDS if test(info.st_mode)),
                    f"a special file (mode {oct(info.st_mode)})")
        raise _Unreadable(f"is {kind}, not a regular file; only regular files are read")
    if info.st_size > limit:
        raise _Unreadable(
            f"file is too large: {info.st_size} bytes, above the limit of "
            f"max_file_size={limit} bytes; pass a larger max_file_size to read it"
        )


def _decode_file(path, data, grayscale=False):
    """Decode the bytes of an image file: DICOM, or any format Pillow reads."""
    if not data:
        raise _Unreadable("file is empty (0 bytes)")
    head = data[:132]
    with io.BytesIO(data) as fh:
        fh.name = path  # named in the DICOM reader's warnings
        if _has_dicom_marker(head):
            return _array_to_image(_read_dicom_pixels(fh), grayscale)
        try:
            return _open_with_pillow(fh, grayscale)
        except UnidentifiedImageError as exc:
            for signature, name in _KNOWN_SIGNATURES.items():
                if head.startswith(signature):
                    raise _Unreadable(
                        f"{name} file is truncated or corrupt: Pillow cannot parse its header"
                    ) from exc
            not_an_image = _Unreadable(
                "not an image file: Pillow cannot identify its format and it is not DICOM"
            )
            maybe_dicom = _starts_like_dicom(head)
            if not (maybe_dicom or path.lower().endswith(_DICOM_SUFFIXES)):
                raise not_an_image from exc
        # DICOM without preamble, or a file that only has a DICOM suffix.
        fh.seek(0)
        try:
            return _array_to_image(_read_dicom_pixels(fh), grayscale)
        except _NoPixelData as exc:
            if maybe_dicom:
                raise
            raise not_an_image from exc


def _open_with_pillow(fh, grayscale=False):
    try:
        image = Image.open(fh)  # reads the header only
        # Pillow merely warns between its limit and twice its limit; checking
        # the header size first refuses every decompression bomb before any
        # decoding, without touching the (process-wide) warning filters.
        width, height = image.size
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"{width * height} pixels ({width}x{height})"
            )
        image.load()
    except UnidentifiedImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _failure(
            "image is too large: above Pillow's decompression-bomb limit "
            f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}; raise it only "
            "for files you trust",
            exc,
        ) from exc
    except Exception as exc:  # Pillow raises many types on corrupt data
        if "truncated" in str(exc).lower():
            raise _failure("file is truncated", exc) from exc
        raise _failure("file is corrupt or cannot be decoded", exc) from exc
    return _pil_to_image(image, grayscale)


# PIL images and arrays ---------------------------------------------------------


def _pil_to_image(image, grayscale=False):
    """The RGB image of a PIL image (see :func:`_read_image` for ``grayscale``)."""
    if image.mode == "RGB":
        try:
            image.load()
        except Exception as exc:
            raise _failure("image cannot be loaded", exc) from exc
        return _gray_if_equal(image) if grayscale else image
    if image.mode in _EIGHT_BIT_MODES:
        try:
            if grayscale and image.mode == "L":
                image.load()
                return image
            if image.mode in _CONVERT_FIRST:
                image = image.convert(_CONVERT_FIRST[image.mode])
            image = image.convert("RGB")
        except Exception as exc:
            raise _failure(f"image of mode {image.mode!r} cannot be converted", exc) from exc
        return _gray_if_equal(image) if grayscale else image
    # I;16*, I and F: deeper than 8 bits, which Pillow's convert() would clip.
    try:
        array = np.asarray(image)
    except Exception as exc:
        raise _failure(f"image of mode {image.mode!r} cannot be read", exc) from exc
    return _array_to_image(array, grayscale)
