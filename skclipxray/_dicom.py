"""Read DICOM files as 8-bit RGB images (the ``dicom`` extra).

The rules (recognition, transfer syntax, display pipeline, *Bits Stored*) are
documented in :mod:`skclipxray.images`, whose :func:`~skclipxray.images.read_image`
calls this module.
"""

import warnings

import numpy as np
from PIL import Image

from ._pixels import ImageReadWarning, _failure, _min_max_to_uint8, _Unreadable

_DICOM_INSTALL_HINT = 'pip install "skclipxray[dicom]"'
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
# Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009), little endian.
_FLOAT_PIXEL_DATA_TAGS = (b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class _NoPixelData(_Unreadable):
    """Internal: a DICOM data set without a pixel data element."""


def _has_dicom_marker(head):
    return head[128:132] == b"DICM"


def _starts_like_dicom(head):
    """Whether the file opens with a DICOM data element, without preamble.

    Old ACR-NEMA style files (such as the classic CR-MONO1-10-chest sample)
    start directly with a group 0x0008 element, or with the file meta group
    0x0002, in little endian.
    """
    return len(head) >= 8 and head[1] == 0 and head[0] in (0x02, 0x08) and head[3] == 0


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
