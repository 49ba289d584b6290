"""Tests for skclipxray.images: reading radiographs as 8-bit RGB."""

import re
import shutil
import sys
import warnings

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from skclipxray.images import ImageReadError, read_image

SIIM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NIH_GRAY = "00000001_000.png"  # 512x512, mode L
NIH_RGBA = "00004934_000.png"  # 1024x1024, mode RGBA
DICOM_FILES = [SIIM, "Fake_MONOHR1.dcm", "CR-MONO1-10-chest.dcm",
               "highdicom_dx_image_canine.dcm", "RG1_J2KI.dcm"]
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def cxr_dir(data_dir):
    return data_dir / "real-cxr"


def pixels(image):
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    return np.asarray(image)


def min_max_reference(values):
    """The documented rule, written independently: min..max -> 0..255, rounded."""
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) / (high - low) * 255).astype(np.uint8)


def write_dicom(path, array, photometric="MONOCHROME2", bits_stored=None, **attributes):
    """Write a small uncompressed DICOM file (with preamble and file meta)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if array is not None:
        bits = bits_stored or array.dtype.itemsize * 8
        ds.set_pixel_data(array, photometric, bits)
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# Real files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [NIH_GRAY, NIH_RGBA] + DICOM_FILES)
def test_every_bundled_radiograph_reads_at_its_own_size(cxr_dir, name):
    path = cxr_dir / name
    if name.endswith(".dcm"):
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        size = (ds.Columns, ds.Rows)
    else:
        with Image.open(path) as image:
            size = image.size
    array = pixels(read_image(path))
    assert array.shape == (size[1], size[0], 3)
    assert array.dtype == np.uint8
    # Radiographs are grayscale: all three channels carry the same values.
    assert np.array_equal(array[..., 0], array[..., 1])
    assert np.array_equal(array[..., 0], array[..., 2])
    assert array.min() < 30 and array.max() > 225


@pytest.mark.parametrize(
    "name, to_reference",
    [
        (NIH_GRAY, lambda a: np.repeat(a[..., None], 3, axis=2)),
        (NIH_RGBA, lambda a: a[..., :3]),  # alpha is dropped
    ],
)
def test_path_pil_image_and_array_give_identical_pixels(cxr_dir, name, to_reference):
    path = cxr_dir / name
    with Image.open(path) as image:
        image.load()
    raw = np.asarray(image)
    expected = to_reference(raw)
    assert np.array_equal(pixels(read_image(path)), expected)
    assert np.array_equal(pixels(read_image(str(path))), expected)
    assert np.array_equal(pixels(read_image(image)), expected)
    assert np.array_equal(pixels(read_image(raw)), expected)


def test_nih_rgba_file_is_opaque_gray(cxr_dir):
    with Image.open(cxr_dir / NIH_RGBA) as image:
        assert image.mode == "RGBA"
        raw = np.asarray(image)
    assert (raw[..., 3] == 255).all()
    assert np.array_equal(pixels(read_image(cxr_dir / NIH_RGBA))[..., 1], raw[..., 0])


def test_monochrome1_twin_reads_as_exact_inverse(cxr_dir):
    normal = pixels(read_image(cxr_dir / SIIM))
    fake = pixels(read_image(cxr_dir / "Fake_MONOHR1.dcm"))
    assert np.array_equal(fake, 255 - normal)
    # The MONOCHROME2 original is pydicom's decoded JPEG, min-max scaled.
    decoded = pydicom.dcmread(cxr_dir / SIIM).pixel_array
    assert np.array_equal(normal[..., 0], min_max_reference(decoded))


@pytest.mark.parametrize(
    "name, window",
    [
        ("RG1_J2KI.dcm", (15000, 30000)),  # JPEG 2000, 15-bit
        ("highdicom_dx_image_canine.dcm", (128, 256)),  # MONOCHROME1 + INVERSE
    ],
)
def test_monochrome1_is_inverted_once(cxr_dir, name, window):
    # Both windows cover the whole stored range, so they are linear here and
    # the image must be the inverse of the min-max scaled stored values.
    ds = pydicom.dcmread(cxr_dir / name)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == window
    expected = 255 - min_max_reference(ds.pixel_array).astype(np.int16)
    difference = pixels(read_image(cxr_dir / name))[..., 0].astype(np.int16) - expected
    assert np.abs(difference).max() <= 1


def test_dicom_without_preamble_or_suffix_reads_like_a_complete_file(cxr_dir, tmp_path):
    original = cxr_dir / "CR-MONO1-10-chest.dcm"
    with open(original, "rb") as fh:
        assert fh.read(132)[128:] != b"DICM"
    no_suffix = tmp_path / "CR-MONO1-10-chest"
    shutil.copyfile(original, no_suffix)
    # The same data set written with a preamble and file meta.
    ds = pydicom.dcmread(original, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    complete = tmp_path / "complete.dcm"
    ds.save_as(complete, enforce_file_format=True)

    expected = pixels(read_image(complete))
    assert expected.shape == (440, 440, 3)
    assert np.array_equal(pixels(read_image(original)), expected)
    assert np.array_equal(pixels(read_image(no_suffix)), expected)
    # MONOCHROME1: bright where the stored values are low.
    correlation = np.corrcoef(expected[..., 0].ravel(), ds.pixel_array.ravel())[0, 1]
    assert correlation < -0.9


# Generated files ----------------------------------------------------------------


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(1000, 4000, 64 * 48).round().astype(np.uint16).reshape(48, 64)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        image.load()
    result = pixels(read_image(path))
    assert result.min() == 0 and result.max() == 255
    assert len(np.unique(result)) == 256
    assert np.array_equal(result[..., 0], min_max_reference(ramp))
    assert np.array_equal(pixels(read_image(image)), result)
    assert np.array_equal(pixels(read_image(ramp)), result)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_reads_like_pillow_decodes_it(cxr_dir, tmp_path, mode):
    path = tmp_path / "nih.jpg"
    with Image.open(cxr_dir / NIH_GRAY) as image:
        image.convert(mode).save(path, quality=90)
    with Image.open(path) as image:
        assert image.mode == mode
        expected = np.asarray(image.convert("RGB"))
    assert np.array_equal(pixels(read_image(path)), expected)


def test_voi_window_after_rescale_saturates_outside_the_window(tmp_path):
    stored = np.arange(0, 1100, dtype=np.uint16)[:1024].reshape(32, 32)
    # Modality LUT first: values become 2 * stored - 1000, i.e. -1000..1046.
    # Window 0 +- 200 in those units, so stored values below 400 saturate to
    # black and those above 600 to white.
    path = write_dicom(
        tmp_path / "window.dcm", stored, bits_stored=12,
        RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=400,
    )
    result = pixels(read_image(path))[..., 0]
    modality = 2.0 * stored - 1000
    assert (result[modality <= -200] == 0).all()
    assert (result[modality >= 200] == 255).all()
    inside = (modality > -199) & (modality < 199)
    assert np.all(np.diff(result[inside].astype(int)) >= 0)
    assert 0 < result[inside].min() and result[inside].max() < 255
    assert len(np.unique(result[inside])) > 150


def test_invalid_window_is_ignored(tmp_path):
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8) * 10
    path = write_dicom(tmp_path / "w0.dcm", stored, bits_stored=12,
                       WindowCenter=100, WindowWidth=0)
    assert np.array_equal(pixels(read_image(path))[..., 0], min_max_reference(stored))


@pytest.mark.parametrize(
    "photometric, lut_shape, inverted",
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),  # one inversion, stated twice (DX)
    ],
)
def test_photometric_and_presentation_lut_shape(tmp_path, photometric, lut_shape, inverted):
    stored = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 37) % 3000
    extra = {} if lut_shape is None else {"PresentationLUTShape": lut_shape}
    path = write_dicom(tmp_path / "p.dcm", stored, photometric, bits_stored=12, **extra)
    expected = min_max_reference(stored)
    if inverted:
        expected = 255 - expected
    assert np.array_equal(pixels(read_image(path))[..., 0], expected)


def test_multi_frame_dicom_reads_the_first_frame(tmp_path):
    frames = np.stack([np.arange(16, dtype=np.uint8).reshape(4, 4) * k for k in (1, 5, 9)])
    path = write_dicom(tmp_path / "frames.dcm", frames)
    assert pydicom.dcmread(path).NumberOfFrames == 3
    assert np.array_equal(pixels(read_image(path))[..., 0], min_max_reference(frames[0]))


def test_rgb_dicom_keeps_its_colours(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", colour, "RGB")
    assert np.array_equal(pixels(read_image(path)), colour)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.array([[7]], dtype=np.uint8),
        lambda: np.array([[1234]], dtype=np.uint16),
        lambda: np.array([[0.5]]),
        lambda: Image.new("L", (1, 1), 9),
        lambda: Image.new("I;16", (1, 1), 300),
    ],
)
def test_one_pixel_images_are_valid(make):
    assert pixels(read_image(make())).shape == (1, 1, 3)


def test_one_pixel_png_file(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 200).save(path)
    assert pixels(read_image(path)).tolist() == [[[200, 200, 200]]]


# Conversion rules for arrays and PIL modes --------------------------------------


def test_uint8_arrays_are_taken_as_they_are():
    rng = np.random.default_rng(1)
    gray = rng.integers(10, 20, size=(5, 7), dtype=np.uint8)
    assert np.array_equal(pixels(read_image(gray)), np.repeat(gray[..., None], 3, 2))
    assert np.array_equal(pixels(read_image(gray[..., None]))[..., 2], gray)
    colour = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    assert np.array_equal(pixels(read_image(colour)), colour)
    assert np.array_equal(pixels(read_image(colour[:, ::-1])), colour[:, ::-1])
    rgba = np.concatenate([colour, np.zeros((5, 7, 1), np.uint8)], axis=2)
    assert np.array_equal(pixels(read_image(rgba)), colour)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0.0, 0.5], [0.25, 1.0]]), [[0, 128], [64, 255]]),  # [0, 1]: * 255
        (np.array([[0.2, 0.2], [0.2, 0.2]], np.float32), [[51, 51], [51, 51]]),
        (np.array([[-1.0, 0.0], [1.0, 3.0]]), [[0, 64], [128, 255]]),  # min-max
        (np.array([[-500, 0], [250, 500]], np.int16), [[0, 128], [191, 255]]),
        (np.full((2, 2), 4000, np.uint16), [[0, 0], [0, 0]]),  # constant -> 0
        (np.array([[False, True], [True, False]]), [[0, 255], [255, 0]]),
    ],
)
def test_array_scaling_rules(array, expected):
    assert pixels(read_image(array))[..., 0].tolist() == expected


def test_colour_arrays_share_one_scale():
    colour = np.zeros((2, 2, 3), np.uint16)
    colour[..., 0] = 1000
    colour[0, 0] = (0, 2000, 4000)
    result = pixels(read_image(colour))
    assert result[0, 0].tolist() == [0, 128, 255]
    assert result[1, 1].tolist() == [64, 0, 0]


@pytest.mark.parametrize(
    "make_image, expected",
    [
        (lambda a: Image.fromarray(a.astype(np.uint8)), lambda a: a),
        (lambda a: Image.fromarray(a.astype(np.uint8)).convert("LA"), lambda a: a),
        (lambda a: Image.fromarray(a.astype(np.uint8)).convert("LA").convert("La"), lambda a: a),
        (lambda a: Image.fromarray(a.astype(np.uint8)).convert("P"), lambda a: a),
        (lambda a: Image.fromarray(a.astype(np.uint8)).convert("RGBA"), lambda a: a),
        (lambda a: Image.fromarray(a.astype(np.uint16) * 100), min_max_reference),
        (lambda a: Image.fromarray(a.astype(np.int32) - 77), min_max_reference),
        (lambda a: Image.fromarray(a.astype(np.float32) * 3.5), min_max_reference),
        (lambda a: Image.fromarray(a.astype(np.float32) / 255), lambda a: a),
    ],
    ids=["L", "LA", "La", "P", "RGBA", "I;16", "I", "F", "F-unit"],
)
def test_pil_modes(make_image, expected):
    gray = (np.arange(120).reshape(10, 12) * 2 + 3).astype(np.int64)
    image = make_image(gray)
    result = pixels(read_image(image))
    assert result.shape == (10, 12, 3)
    assert np.array_equal(result[..., 1], np.asarray(expected(gray), np.uint8))


def test_rgb_pil_image_is_returned_without_a_copy():
    image = Image.new("RGB", (4, 3), (1, 2, 3))
    assert read_image(image) is image


# Errors ---------------------------------------------------------------------------


def _png_bytes(cxr_dir):
    return (cxr_dir / NIH_GRAY).read_bytes()


def _jpeg_bytes(cxr_dir, tmp_path):
    path = tmp_path / "source.jpg"
    with Image.open(cxr_dir / NIH_GRAY) as image:
        image.save(path)
    return path.read_bytes()


BAD_FILES = {
    "missing": (lambda d, t: t / "missing.png", "file not found"),
    "directory": (lambda d, t: t, "is a directory"),
    "empty": (lambda d, t: _write(t / "empty.png", b""), "file is empty (0 bytes)"),
    "truncated PNG": (
        lambda d, t: _write(t / "cut.png", _png_bytes(d)[:50_000]), "file is truncated"
    ),
    "truncated PNG header": (
        lambda d, t: _write(t / "cut.png", _png_bytes(d)[:60]), "PNG file is truncated or corrupt"
    ),
    "truncated JPEG": (
        lambda d, t: _write(t / "cut.jpg", _jpeg_bytes(d, t)[:5_000]), "file is truncated"
    ),
    "random bytes": (
        lambda d, t: _write(t / "noise.png", np.random.default_rng(0).bytes(4096)),
        "not an image file",
    ),
    "text": (lambda d, t: _write(t / "notes.txt", b"not an image\n"), "not an image file"),
    "text with DICOM suffix": (
        lambda d, t: _write(t / "notes.dcm", b"not an image\n"), "not an image file"
    ),
    "DICOM without pixel data": (
        lambda d, t: write_dicom(t / "header.dcm", None), "DICOM file has no pixel data"
    ),
    "truncated DICOM": (
        lambda d, t: _write(t / "cut.dcm", (d / SIIM).read_bytes()[:60_000]),
        "DICOM file is truncated or corrupt",
    ),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_name_index_and_path(cxr_dir, tmp_path, case):
    make, reason = BAD_FILES[case]
    path = make(cxr_dir, tmp_path)
    with pytest.raises(ImageReadError, match="^" + re.escape(f"X[7] '{path}': {reason}")):
        read_image(path, index=7)
    # Without an index, the message starts with the path.
    with pytest.raises(ValueError, match="^" + re.escape(f"'{path}': {reason}")):
        read_image(str(path))


@pytest.mark.parametrize(
    "item, description, reason",
    [
        (5, "<int>", "unsupported input type 'int'"),
        ({"a": 1}, "<dict>", "unsupported input type 'dict'"),
        (b"\x89PNG", "<bytes>", "unsupported input type 'bytes'"),
        (np.zeros((2, 3, 4, 3), np.uint8), "<numpy.ndarray shape=(2, 3, 4, 3) dtype=uint8>",
         "unsupported array shape (2, 3, 4, 3)"),
        (np.zeros((4, 4, 2)), "<numpy.ndarray shape=(4, 4, 2) dtype=float64>",
         "unsupported array shape (4, 4, 2)"),
        (np.zeros(5), "<numpy.ndarray shape=(5,) dtype=float64>", "unsupported array shape (5,)"),
        (np.zeros((0, 4), np.uint8), "<numpy.ndarray shape=(0, 4) dtype=uint8>",
         "empty image of shape (0, 4)"),
        (np.array([[0.5, np.nan]]), "<numpy.ndarray shape=(1, 2) dtype=float64>",
         "array contains NaN values"),
        (np.array([[0.5, -np.inf]], np.float32), "<numpy.ndarray shape=(1, 2) dtype=float32>",
         "array contains infinite values"),
        (np.zeros((2, 2), complex), "<numpy.ndarray shape=(2, 2) dtype=complex128>",
         "unsupported array dtype complex128"),
    ],
)
def test_bad_objects_name_index_and_what_is_wrong(item, description, reason):
    with pytest.raises(ImageReadError, match="^" + re.escape(f"X[3] {description}: {reason}")):
        read_image(item, index=3)


def test_nan_in_float_pil_image():
    image = Image.fromarray(np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(ImageReadError, match=re.escape("mode=F size=2x1>: array contains NaN")):
        read_image(image, index=0)


def test_truncated_file_opened_by_the_caller_names_its_path(cxr_dir, tmp_path):
    path = _write(tmp_path / "cut.png", _png_bytes(cxr_dir)[:50_000])
    with Image.open(path) as image:
        with pytest.raises(ImageReadError, match=re.escape(f"X[2] '{path}': ")):
            read_image(image, index=2)


@pytest.mark.parametrize("side", [12, 16])  # above the limit, and above twice the limit
def test_images_above_the_decompression_bomb_limit(tmp_path, monkeypatch, side):
    path = tmp_path / "big.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters = list(warnings.filters)
    with pytest.raises(ImageReadError, match=re.escape(f"X[1] '{path}': image is too large")):
        read_image(path, index=1)
    assert warnings.filters == filters
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert pixels(read_image(path)).shape == (side, side, 3)


def test_dicom_above_the_decompression_bomb_limit(cxr_dir, monkeypatch):
    path = cxr_dir / "highdicom_dx_image_canine.dcm"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 211 * 169 - 1)
    with pytest.raises(ImageReadError, match=re.escape(f"X[0] '{path}': image is too large")):
        read_image(path, index=0)


def test_missing_dicom_decoder_says_which_extra_to_install(cxr_dir, monkeypatch):
    decoder = get_decoder(JPEGBaseline8Bit)
    monkeypatch.setattr(decoder, "_available", {})
    path = cxr_dir / SIIM
    message = re.escape(f"X[4] '{path}': no decoder is installed for JPEG Baseline")
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path, index=4)
    assert 'pip install "skclipxray[dicom]"' in str(info.value)
    # Uncompressed DICOM still reads.
    assert read_image(cxr_dir / "highdicom_dx_image_canine.dcm").size == (211, 169)


def test_missing_pydicom_says_which_extra_to_install(cxr_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    path = cxr_dir / SIIM
    expected = (
        f"X[0] '{path}': reading DICOM files needs pydicom; "
        'install the DICOM extra: pip install "skclipxray[dicom]"'
    )
    with pytest.raises(ImageReadError, match="^" + re.escape(expected)):
        read_image(path, index=0)
    assert pixels(read_image(cxr_dir / NIH_GRAY)).shape == (512, 512, 3)


# Corrupt files never escape as another exception type ----------------------------


@pytest.fixture(scope="module")
def seed_files(data_dir):
    folder = data_dir / "real-cxr"
    return {
        "png": (folder / NIH_GRAY).read_bytes(),
        "dicom": (folder / "highdicom_dx_image_canine.dcm").read_bytes(),
        "jpeg dicom": (folder / SIIM).read_bytes(),
    }


@st.composite
def corrupted(draw, seeds):
    kind = draw(st.sampled_from(["random"] + sorted(seeds)))
    suffix = draw(st.sampled_from([".png", ".dcm", ".jpg", ""]))
    if kind == "random":
        return draw(st.binary(max_size=2048)), suffix
    data = bytearray(seeds[kind])
    # Favour the headers, where a flipped byte changes how the rest is read.
    position = st.one_of(st.integers(0, 1023), st.integers(0, len(data) - 1))
    for index, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=6)):
        data[index] = value
    length = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return bytes(data[:length]), suffix


def test_corrupt_files_raise_only_image_read_error(seed_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corrupt")

    @settings(max_examples=60, deadline=None)
    @given(corrupted(seed_files))
    def check(example):
        data, suffix = example
        path = folder / f"item{suffix}"
        path.write_bytes(data)
        try:
            image = read_image(path, index=9)
        except ImageReadError as exc:
            assert str(exc).startswith(f"X[9] '{path}': ")
        else:
            assert image.mode == "RGB" and image.width > 0 and image.height > 0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what it repairs
        check()
