"""Tests for DICOM pixel data that needs care: Bits Stored, float pixel data."""

import contextlib
import re
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_images import DICOM_FILES, NIH_GRAY, min_max_reference, pixels, write_dicom

from skclipxray.images import ImageReadError, ImageReadWarning, read_image

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


@pytest.fixture(scope="module")
def cxr_dir(data_dir):
    return data_dir / "real-cxr"


@pytest.fixture(scope="module")
def twelve_bit(cxr_dir):
    """A real radiograph as 12-bit values (0..4095), with noise in the low bits."""
    with Image.open(cxr_dir / NIH_GRAY) as image:
        gray = np.asarray(image.resize((128, 96)), dtype=np.uint16)
    noise = np.random.default_rng(0).integers(0, 16, gray.shape, dtype=np.uint16)
    return gray * 16 + noise


def gray_of(path):
    return pixels(read_image(path))[..., 0]


def correlation(a, b):
    return np.corrcoef(np.ravel(a).astype(float), np.ravel(b).astype(float))[0, 1]


@contextlib.contextmanager
def no_image_read_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageReadWarning)
        yield


# Bits Stored ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype, low, high", [("uint16", 0, 4095), ("int16", -2048, 2047)])
def test_values_beyond_bits_stored_keep_all_bits_with_a_warning(tmp_path, twelve_bit, dtype,
                                                                low, high):
    true = (twelve_bit.astype(np.int32) + low).astype(dtype)
    true[0, :2] = low, high  # the full 12-bit range, for an exact message
    good = write_dicom(tmp_path / "good.dcm", true, bits_stored=12)
    bad = write_dicom(tmp_path / "bad.dcm", true, bits_stored=12, BitsStored=8, HighBit=7)
    message = (f"'{bad}': Bits Stored (0028,0101) is 8, but its pixel values range from "
               f"{low} to {high}, which needs 12 bits; the image is read with all 16 "
               "allocated bits, since masking it to 8 bits would change it")
    with pytest.warns(ImageReadWarning, match="^" + re.escape(message) + "$"):
        image = gray_of(bad)
    # Masked to 8 bits, the image correlates with the true one at about 0.05.
    assert correlation(image, true) > 0.99
    with no_image_read_warning():
        np.testing.assert_array_equal(image, gray_of(good))


def test_well_formed_files_give_no_warning(tmp_path, twelve_bit):
    path = write_dicom(tmp_path / "scan.dcm", twelve_bit, bits_stored=12)
    with no_image_read_warning():
        np.testing.assert_array_equal(gray_of(path), min_max_reference(twelve_bit))


@pytest.mark.parametrize("name", DICOM_FILES)
def test_bundled_dicom_files_give_no_warning(cxr_dir, name):
    with no_image_read_warning():
        read_image(cxr_dir / name)


def test_signed_values_without_sign_extension_are_masked_silently(tmp_path, twelve_bit):
    # The standard leaves the bits above High Bit undefined: a writer may leave
    # them zero in negative values instead of extending the sign.
    values = (twelve_bit.astype(np.int32) - 2048).astype(np.int16)
    extended = write_dicom(tmp_path / "extended.dcm", values, bits_stored=12)
    zero_filled = write_dicom(tmp_path / "zeros.dcm", values, bits_stored=12)
    dataset = pydicom.dcmread(zero_filled)
    dataset.PixelData = (values.view(np.uint16) & 0x0FFF).tobytes()
    dataset.save_as(zero_filled)
    with no_image_read_warning():
        np.testing.assert_array_equal(gray_of(zero_filled), gray_of(extended))
    assert correlation(gray_of(zero_filled), values) > 0.999


def test_overlay_in_the_unused_bits_is_masked_silently(tmp_path, twelve_bit):
    clean = write_dicom(tmp_path / "clean.dcm", twelve_bit, bits_stored=12)
    with_overlay = twelve_bit.copy()
    with_overlay[10:30, 20:60] |= 1 << 12  # the overlay plane, in bit 12
    rows, columns = twelve_bit.shape
    path = write_dicom(
        tmp_path / "overlay.dcm", with_overlay, bits_stored=16, BitsStored=12, HighBit=11
    )
    dataset = pydicom.dcmread(path)
    dataset.add_new(0x60000010, "US", rows)
    dataset.add_new(0x60000011, "US", columns)
    dataset.add_new(0x60000040, "CS", "G")
    dataset.add_new(0x60000050, "SS", [1, 1])
    dataset.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated
    dataset.add_new(0x60000102, "US", 12)  # Overlay Bit Position; no Overlay Data
    dataset.save_as(path)
    with no_image_read_warning():
        np.testing.assert_array_equal(gray_of(path), gray_of(clean))


# Float pixel data ------------------------------------------------------------------


def write_float_dicom(path, values, keyword):
    """Write a DICOM file whose pixels are in (Double) Float Pixel Data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = PARAMETRIC_MAP
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = PARAMETRIC_MAP
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = values.dtype.itemsize * 8
    setattr(ds, keyword, values.tobytes())
    ds.save_as(path, enforce_file_format=True)
    return path


FLOAT_KINDS = [("FloatPixelData", np.float32), ("DoubleFloatPixelData", np.float64)]


@pytest.mark.parametrize("keyword, dtype", FLOAT_KINDS)
def test_float_pixel_data_is_min_max_scaled(tmp_path, twelve_bit, keyword, dtype):
    values = (twelve_bit / 1000.0 - 1.5).astype(dtype)  # -1.5 .. 2.6: not intensities
    path = write_float_dicom(tmp_path / "map.dcm", values, keyword)
    with no_image_read_warning():
        image = gray_of(path)
    reference = min_max_reference(values)
    # Same rule, arithmetic in another order: a rounding tie may land either way.
    assert np.abs(image.astype(int) - reference).max() <= 1
    assert np.mean(image == reference) > 0.999


@pytest.mark.parametrize("keyword, dtype", FLOAT_KINDS)
@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (-np.inf, "infinite")])
def test_float_pixel_data_with_non_finite_values(tmp_path, keyword, dtype, bad, what):
    values = np.arange(12, dtype=dtype).reshape(3, 4)
    values[1, 2] = bad
    path = write_float_dicom(tmp_path / "map.dcm", values, keyword)
    message = f"X[2] '{path}': DICOM float pixel data contains {what} values"
    with pytest.raises(ImageReadError, match="^" + re.escape(message) + "$"):
        read_image(path, index=2)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
@pytest.mark.parametrize("keyword, tag", [("FloatPixelData", b"\xe0\x7f\x08\x00"),
                                          ("DoubleFloatPixelData", b"\xe0\x7f\x09\x00")])
def test_float_pixel_data_cut_in_its_header_is_truncated(tmp_path, keyword, tag):
    values = np.ones((4, 4), dtype=np.float32 if "Double" not in keyword else np.float64)
    data = write_float_dicom(tmp_path / "map.dcm", values, keyword).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: data.index(tag) + 6])
    message = f"'{path}': DICOM file is truncated or corrupt: its pixel data cannot be read"
    with pytest.raises(ImageReadError, match="^" + re.escape(message) + "$"):
        read_image(path)
