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
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "ImageReadError",
    "ImageReadWarning",
    "read_image",
]

_DICOM_INSTALL_HINT = 'pip install "skclipxray[dicom]"'
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
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


class _Unreadable(Exception):
    """Internal: what is wrong with the item, before the item is named."""


class _NoPixelData(_Unreadable):
    """Internal: a DICOM data set without a pixel data element."""


class ImageReadWarning(UserWarning):
    """An image was read, but its file contradicts itself.

    The message names the file, says what is inconsistent and how the image
    was read. For example, a DICOM file whose pixel values need more bits
    than its *Bits Stored* says is read with all its allocated bits, rather
    than masked to a different image.
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
    _check_max_file_size(max_file_size)
    try:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            return _decode_file(path, _read_bytes(path, max_file_size)[0])
        if isinstance(item, FileBytes):
            return _decode_file(item.path, item.data)
        if isinstance(item, Image.Image):
            return _pil_to_rgb(item)
        if isinstance(item, np.ndarray):
            return _array_to_rgb(np.asarray(item))
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


def _failure(what, exc):
    """An _Unreadable for a library exception, keeping its type and message."""
    return _Unreadable(f"{what} ({type(exc).__name__}: {exc})")


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


def _decode_file(path, data):
    """Decode the bytes of an image file: DICOM, or any format Pillow reads."""
    if not data:
        raise _Unreadable("file is empty (0 bytes)")
    head = data[:132]
    with io.BytesIO(data) as fh:
        fh.name = path  # named in the DICOM reader's warnings
        if _has_dicom_marker(head):
            return _dicom_to_rgb(fh)
        try:
            return _open_with_pillow(fh)
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
            return _dicom_to_rgb(fh)
        except _NoPixelData as exc:
            if maybe_dicom:
                raise
            raise not_an_image from exc


def _has_dicom_marker(head):
    return head[128:132] == b"DICM"


def _starts_like_dicom(head):
    """Whether the file opens with a DICOM data element, without preamble.

    Old ACR-NEMA style files (such as the classic CR-MONO1-10-chest sample)
    start directly with a group 0x0008 element, or with the file meta group
    0x0002, in little endian.
    """
    return len(head) >= 8 and head[1] == 0 and head[0] in (0x02, 0x08) and head[3] == 0


def _open_with_pillow(fh):
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
    return _pil_to_rgb(image)


# PIL images and arrays ---------------------------------------------------------


def _pil_to_rgb(image):
    if image.mode == "RGB":
        try:
            image.load()
        except Exception as exc:
            raise _failure("image cannot be loaded", exc) from exc
        return image
    if image.mode in _EIGHT_BIT_MODES:
        try:
            if image.mode in _CONVERT_FIRST:
                image = image.convert(_CONVERT_FIRST[image.mode])
            return image.convert("RGB")
        except Exception as exc:
            raise _failure(f"image of mode {image.mode!r} cannot be converted", exc) from exc
    # I;16*, I and F: deeper than 8 bits, which Pillow's convert() would clip.
    try:
        array = np.asarray(image)
    except Exception as exc:
        raise _failure(f"image of mode {image.mode!r} cannot be read", exc) from exc
    return _array_to_rgb(array)


def _array_to_rgb(array):
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., 0] if array.shape[-1] == 1 else array[..., :3]
    elif array.ndim != 2:
        raise _Unreadable(
            f"unsupported array shape {array.shape}; expected (H, W) or (H, W, C) "
            "with C in 1, 3 or 4"
        )
    if array.size == 0:
        raise _Unreadable(f"empty image of shape {array.shape}")
    image = Image.fromarray(_to_uint8(array))
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_uint8(array):
    """Map an array of any real dtype to uint8 following the module's rules."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.view(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.integer):
        return _min_max_to_uint8(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "infinite"
            raise _Unreadable(f"array contains {what} values")
        if array.min() >= 0 and array.max() <= 1:
            scaled = np.multiply(array, 255, dtype=np.float32 if array.itemsize <= 4 else None)
            return np.rint(scaled, out=scaled).astype(np.uint8)
        return _min_max_to_uint8(array)
    raise _Unreadable(
        f"unsupported array dtype {array.dtype}; expected integers, floats or booleans"
    )


def _min_max_to_uint8(array):
    """Linearly map the array's min..max to 0..255; a constant array gives 0."""
    low, high = float(array.min()), float(array.max())
    if high == low:
        return np.zeros(array.shape, dtype=np.uint8)
    # float32 is exact for 16-bit data and halves the memory traffic.
    work_dtype = np.float32 if array.itemsize <= 2 else np.float64
    scaled = np.subtract(array, low, dtype=work_dtype)
    scaled *= 255.0 / (high - low)
    return np.rint(scaled, out=scaled).astype(np.uint8)


# DICOM -------------------------------------------------------------------------


# Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009), little endian.
_FLOAT_PIXEL_DATA_TAGS = (b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _dicom_to_rgb(fh):
    return _array_to_rgb(_read_dicom_pixels(fh))


def _read_dicom_pixels(fh):
    """Decode the first frame of a DICOM file, after its display transforms.

    Integer pixel data and float or double float pixel data are read (pydicom
    decodes all three); the pixels are then taken through the same display
    pipeline.
    """
    try:
        import pydicom
        from pydicom import pixels
    except ImportError as exc:
        raise _Unreadable(
            f"reading DICOM files needs pydicom; install the DICOM extra: {_DICOM_INSTALL_HINT}"
        ) from exc

    try:
        dataset = pydicom.dcmread(fh, force=True)
    except Exception as exc:
        raise _failure("not a readable DICOM file", exc) from exc
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        fh.seek(0)
        data = fh.read()
        if any(tag in data for tag in (_PIXEL_DATA_TAG, *_FLOAT_PIXEL_DATA_TAGS)):
            raise _Unreadable("DICOM file is truncated or corrupt: its pixel data cannot be read")
        raise _NoPixelData("DICOM file has no pixel data")
    try:
        _set_missing_transfer_syntax(dataset)
        n_pixels = int(dataset.Rows) * int(dataset.Columns)
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
    except Exception as exc:
        raise _failure("DICOM header is incomplete or invalid", exc) from exc
    if Image.MAX_IMAGE_PIXELS is not None and n_pixels > Image.MAX_IMAGE_PIXELS:
        raise _Unreadable(
            f"image is too large: {n_pixels} pixels, above Pillow's decompression-bomb "
            f"limit PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}"
        )
    _check_decoder(pixels, transfer_syntax)

    try:
        # Unmasked, so that values beyond Bits Stored can be seen (see below).
        array = pixels.pixel_array(dataset, index=0, correct_unused_bits=False)
        array = _apply_bits_stored(array, dataset, getattr(fh, "name", None))
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
        photometric = photometric.strip().upper()
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            return _dicom_grayscale_to_uint8(array, dataset, photometric, pixels)
        if photometric == "PALETTE COLOR":
            array = pixels.apply_color_lut(array, dataset)
    except _Unreadable:
        raise
    except Exception as exc:
        raise _failure("DICOM pixel data cannot be decoded", exc) from exc
    # RGB, and YBR which pydicom has already converted to RGB.
    return array


def _set_missing_transfer_syntax(dataset):
    """Give a file without file meta the transfer syntax it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in dataset.file_meta:
        return
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr is False:
        syntax = ExplicitVRLittleEndian if little_endian is not False else ExplicitVRBigEndian
    else:
        syntax = ImplicitVRLittleEndian
    dataset.file_meta.TransferSyntaxUID = syntax


def _check_decoder(pixels, transfer_syntax):
    """Fail with an install hint when no decoder plugin for the pixel data is installed."""
    try:
        decoder = pixels.get_decoder(transfer_syntax)
    except Exception as exc:
        raise _failure(
            f"DICOM transfer syntax {transfer_syntax} is not supported", exc
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin available"
        raise _Unreadable(
            f"no decoder is installed for {transfer_syntax.name} pixel data ({missing}); "
            f"install the DICOM extra: {_DICOM_INSTALL_HINT}"
        )


def _apply_bits_stored(array, dataset, path):
    """Keep the low *Bits Stored* bits of each value, unless the image needs more.

    The bits of a pixel cell above *High Bit* are not part of the value
    (DICOM PS3.5, section 8.1.1), so pydicom masks unsigned values and
    sign-extends signed ones, and so does this function. But when values use
    those bits (12-bit data declared with 8 bits stored, say), masking would
    silently return a different image: the file's header is then wrong, and
    its pixels are kept with all their allocated bits, with an
    :class:`ImageReadWarning`. Bits that the file declares as an overlay in
    the pixel data (a retired use of the unused bits) are masked, as the
    standard says.
    """
    if array.dtype.kind not in "iu":
        return array  # float pixel data has no unused bits
    bits_stored = int(dataset.get("BitsStored") or 0)
    cell_bits = array.dtype.itemsize * 8
    if not 0 < bits_stored < cell_bits:
        return array
    signed = array.dtype.kind == "i"
    low, high = int(array.min()), int(array.max())
    limit = 1 << (bits_stored - 1 if signed else bits_stored)
    if (-limit if signed else 0) <= low and high < limit:
        return array  # masking would change nothing
    shift = cell_bits - bits_stored
    masked = (array << shift) >> shift
    fits = masked == array
    if signed:  # a negative value whose unused bits are zero, not its sign
        fits |= (array.view(f"u{array.itemsize}") >> bits_stored) == 0
    if fits.all() or _has_embedded_overlay(dataset):
        return masked

    needed = max(high.bit_length(), (~low).bit_length()) + 1 if signed else high.bit_length()
    name = f"'{path}'" if isinstance(path, str) else "DICOM file"
    warnings.warn(
        f"{name}: Bits Stored (0028,0101) is {bits_stored}, but its pixel values range "
        f"from {low} to {high}, which needs {needed} bits; the image is read with all "
        f"{cell_bits} allocated bits, since masking it to {bits_stored} bits would "
        "change it",
        ImageReadWarning,
    )
    return array


def _has_embedded_overlay(dataset):
    """Whether an overlay group (60xx) has no Overlay Data, so lives in the pixel data."""
    groups = {tag.group for tag in dataset.keys()
              if 0x6000 <= tag.group <= 0x601E and tag.group % 2 == 0}
    return any((group << 16 | 0x3000) not in dataset for group in groups)


def _dicom_grayscale_to_uint8(array, dataset, photometric, pixels):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        what = "NaN" if np.isnan(array).any() else "infinite"
        raise _Unreadable(f"DICOM float pixel data contains {what} values")
    array = pixels.apply_modality_lut(array, dataset)
    try:
        array = pixels.apply_voi_lut(array, dataset)
    except Exception:
        pass  # An invalid window is a display hint gone wrong; the pixels are fine.
    gray = _min_max_to_uint8(array)
    shape = str(dataset.get("PresentationLUTShape", "")).strip().upper()
    # MONOCHROME1 and INVERSE state the same single inversion (DX files carry both).
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        np.subtract(255, gray, out=gray)
    return gray
