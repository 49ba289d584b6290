"""Pixel conversions and internal errors shared by the image and DICOM readers.

:mod:`skclipxray.images` documents the conversion rules. This module holds
what both it and :mod:`skclipxray._dicom` need, so that the DICOM reader
does not import the module that calls it.
"""

import numpy as np
from PIL import Image


class _Unreadable(Exception):
    """Internal: what is wrong with the item, before the item is named."""


class ImageReadWarning(UserWarning):
    """An image was read, but its file contradicts itself.

    The message names the file, says what is inconsistent and how the image
    was read. For example, a DICOM file whose pixel values need more bits
    than its *Bits Stored* says is read with all its allocated bits, rather
    than masked to a different image.
    """


def _failure(what, exc):
    """An _Unreadable for a library exception, keeping its type and message."""
    return _Unreadable(f"{what} ({type(exc).__name__}: {exc})")


def _array_to_image(array, grayscale=False):
    """The 8-bit image of an array: RGB, or ``"L"`` if ``grayscale`` and it has one plane."""
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
    if grayscale:
        return _gray_if_equal(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _gray_if_equal(image):
    """An ``"L"`` or ``"RGB"`` image as ``"L"`` when its RGB version has three equal channels.

    The ``"L"`` image is then each channel of the RGB one, so that any
    per-channel operation on it (Pillow's resampling filters are) gives each
    channel of the RGB result; other images are returned in ``"RGB"``.
    """
    if image.mode == "L":
        return image
    pixels = np.asarray(image)
    red = pixels[..., 0]
    if np.array_equal(red, pixels[..., 1]) and np.array_equal(red, pixels[..., 2]):
        return Image.fromarray(red)
    return image


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
