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
colour array. Of a multi-frame file only the first frame is read.

Files are decoded by Pillow otherwise (PNG, JPEG, TIFF, BMP, ...); of a
multi-frame file (GIF, TIFF stack) only the first frame is read. Pillow's
decompression-bomb limit (:data:`PIL.Image.MAX_IMAGE_PIXELS`) is kept, and a
larger image is an error rather than a warning; it applies to DICOM files too.
EXIF orientation is not applied, as for ``np.asarray(Image.open(path))``.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image"]

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


def read_image(item, *, index=None):
    """Read one radiograph as an 8-bit RGB PIL image.

    Parameters
    ----------
    item : str, os.PathLike, PIL.Image.Image or numpy.ndarray
        A path to an image file (any format Pillow reads, or DICOM), a PIL
        image of any mode, or an array of shape ``(H, W)`` or ``(H, W, C)``
        with ``C`` in 1, 3 or 4 (a fourth channel is alpha and is dropped).
    index : int, optional
        Position of the item in a collection; it is only used to name the
        item in error messages, as ``X[index]``.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, same width and height as the input. An RGB PIL image
        is returned as it is, without a copy. See the module docstring for
        how other modes, bit depths and DICOM files are converted.

    Raises
    ------
    ImageReadError
        If the item cannot be read: missing or empty file, unknown or corrupt
        format, truncated file, DICOM without pixel data or without an
        installed decoder, unsupported type, shape or values, or an image
        above Pillow's decompression-bomb limit.

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
    try:
        if isinstance(item, (str, os.PathLike)):
            return _read_file(os.fspath(item))
        if isinstance(item, Image.Image):
            return _pil_to_rgb(item)
        if isinstance(item, np.ndarray):
            return _array_to_rgb(np.asarray(item))
        raise _Unreadable(
            f"unsupported input type {type(item).__name__!r}; expected a file "
            "path (str or os.PathLike), a PIL.Image.Image or a numpy.ndarray"
        )
    except _Unreadable as exc:
        prefix = "" if index is None else f"X[{index}] "
        raise ImageReadError(f"{prefix}{_describe(item)}: {exc}") from exc.__cause__


def _describe(item):
    """Name an item in an error message: its path, or its type and shape."""
    if isinstance(item, (str, os.PathLike)):
        return f"'{os.fspath(item)}'"
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


def _read_file(path):
    if os.path.isdir(path):
        raise _Unreadable("is a directory, not an image file")
    try:
        fh = open(path, "rb")
    except FileNotFoundError as exc:
        raise _Unreadable("file not found") from exc
    except OSError as exc:
        raise _failure("file cannot be opened", exc) from exc
    with fh:
        head = fh.read(132)
        fh.seek(0)
        if not head:
            raise _Unreadable("file is empty (0 bytes)")
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


def _dicom_to_rgb(fh):
    return _array_to_rgb(_read_dicom_pixels(fh))


def _read_dicom_pixels(fh):
    """Decode the first frame of a DICOM file, after its display transforms."""
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
    if "PixelData" not in dataset:
        fh.seek(0)
        if _PIXEL_DATA_TAG in fh.read():
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
        array = pixels.pixel_array(dataset, index=0)
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


def _dicom_grayscale_to_uint8(array, dataset, photometric, pixels):
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
