"""The catalogue of bad inputs: each one, through the public API, gets an
exception of a documented type whose message names the item.

Every row of ``CATALOGUE`` is one input, the exception it must raise (``None``:
it is valid and must give finite output) and a regex its message must match.
``{path}`` in a regex stands for the row's file or folder. The same table is
in ``docs/reliability.rst``. Every case is bounded (no case reads more than a
few kilobytes or decodes a large image), and no input may run code: rows that
carry code (pickles, custom model code) point it at a marker file that must
never appear.

Related tests elsewhere: ``test_images.py`` (the reader alone, and
property-based fuzzing of it with random and mutated real files),
``test_cache.py`` (resuming after a killed run, ``on_error="nan"`` with a
cache), ``test_persistence.py`` (loading files that could run code).
"""

import io
import json
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skclipxray import (
    DEFAULT_MODEL,
    BaselineClassifier,
    ConcatFusionClassifier,
    ImageReadError,
    ModelNotAvailableError,
    PromptEnsembleEmbedder,
    SigLIPImageEmbedder,
    ZeroShotClassifier,
)
from skclipxray.cache import EmbeddingCache, EmbeddingCacheError
from skclipxray.embedders import EmbeddingWarning
from skclipxray.persistence import load, save

NIH_PNG = "00000001_000.png"  # a real 512x512 radiograph, 8-bit grayscale
SIIM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # JPEG DICOM
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
LABELS = ["Mass", "Nodule", "Effusion"]


@pytest.fixture
def ctx(tiny_model_dir, data_dir, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 32)).astype(np.float32)
    Y = pd.DataFrame(rng.integers(0, 2, (40, 3)), columns=LABELS)
    return SimpleNamespace(
        model=tiny_model_dir,
        tmp=tmp_path,
        png=data_dir / "real-cxr" / NIH_PNG,
        marker=tmp_path / "code-ran.txt",
        X=X,
        Y=Y,
    )


def _write(path, data):
    path.write_bytes(data)
    return path


def _sparse(path, size):
    """A file of ``size`` bytes that takes no disk space (a hole)."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _embed_after_a_good_image(ctx, item, **params):
    """The item goes through the image embedder at index 1, after a valid image."""
    embedder = SigLIPImageEmbedder(ctx.model, device="cpu", progress=False, **params)
    return embedder.transform([ctx.png, item])


def _head(**params):
    return BaselineClassifier(**{"hidden_sizes": (8,), "max_epochs": 1, "device": "cpu",
                                 **params})


# Inputs ----------------------------------------------------------------------------


def _jpeg_bytes(ctx):
    buffer = io.BytesIO()
    with Image.open(ctx.png) as image:
        image.save(buffer, "JPEG")
    return buffer.getvalue()


def _png_claiming(width, height):
    """A valid PNG header saying width x height, with one pixel of data:
    Pillow reads the size from the header, so no pixel is allocated."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = bytearray(data[12:29])  # "IHDR" and its 13 bytes
    header[4:12] = struct.pack(">II", width, height)
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(header)))
    return bytes(data)


def _dicom(path, rows=None, columns=None, pixel_data=None):
    """A DICOM file with the given header; pixel data only if given."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if rows is not None:
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
    if pixel_data is not None:
        ds.PixelData = pixel_data
    ds.save_as(path, enforce_file_format=True)
    return path


class _RunsCode:
    """Unpickling this writes the marker file, as a malicious pickle would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (Path(self.marker), "unpickled")


def _checkpoint_config_only(ctx):
    folder = ctx.tmp / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((Path(ctx.model) / "config.json").read_text())
    return folder


def _checkpoint_with_pickle_weights(ctx):
    """config.json and a pytorch_model.bin that runs code if it is ever unpickled."""
    folder = _checkpoint_config_only(ctx)
    joblib.dump(_RunsCode(ctx.marker), folder / "pytorch_model.bin")
    return folder


def _checkpoint_with_custom_code(ctx, monkeypatch):
    """A checkpoint whose configuration class is custom code (``auto_map``)."""
    folder = ctx.tmp / f"custom-code-{ctx.tmp.name}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom_siglip",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"},
    }))
    (folder / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(ctx.marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'custom_siglip'\n"
    )
    # transformers asks on the terminal whether to run such code; say yes, as a
    # user might: the code must still not run.
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    # Where transformers would copy the code to import it: not the user's cache.
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE",
                        str(ctx.tmp / "modules"), raising=False)
    return folder


def _with_nan(X, value=np.nan):
    X = X.copy()
    X[3, 2] = value
    return X


# The catalogue ---------------------------------------------------------------------
# (id, setup(ctx, monkeypatch) -> (action, path), exception type, regex)

def image(make):
    """A row whose input is one image, given to SigLIPImageEmbedder.transform at index 1."""
    def setup(ctx, monkeypatch):
        item = make(ctx)
        return (lambda: _embed_after_a_good_image(ctx, item)), item
    setup.make_image = make
    return setup


CATALOGUE = [
    # Images: the message starts with the index and the path.
    ("missing path", image(lambda c: c.tmp / "missing.png"),
     ImageReadError, r"^X\[1\] '{path}': file not found"),
    ("directory instead of file", image(lambda c: c.tmp),
     ImageReadError, r"^X\[1\] '{path}': is a directory, not a regular file"),
    ("FIFO (named pipe)", image(lambda c: (os.mkfifo(c.tmp / "scan.png"), c.tmp / "scan.png")[1]),
     ImageReadError, r"^X\[1\] '{path}': is a FIFO \(named pipe\), not a regular file"),
    ("character device (/dev/zero)", image(lambda c: Path("/dev/zero")),
     ImageReadError, r"^X\[1\] '{path}': is a character device, not a regular file"),
    ("file of 2 GiB (sparse)", image(lambda c: _sparse(c.tmp / "disk.img", 2 << 30)),
     ImageReadError, r"^X\[1\] '{path}': file is too large: 2147483648 bytes, above the "
                     r"limit of max_file_size=1073741824 bytes"),
    ("zero-byte file", image(lambda c: _write(c.tmp / "empty.png", b"")),
     ImageReadError, r"^X\[1\] '{path}': file is empty \(0 bytes\)"),
    ("truncated PNG", image(lambda c: _write(c.tmp / "cut.png", c.png.read_bytes()[:50_000])),
     ImageReadError, r"^X\[1\] '{path}': file is truncated"),
    ("truncated PNG header", image(lambda c: _write(c.tmp / "cut.png", c.png.read_bytes()[:60])),
     ImageReadError, r"^X\[1\] '{path}': PNG file is truncated or corrupt"),
    ("truncated JPEG", image(lambda c: _write(c.tmp / "cut.jpg", _jpeg_bytes(c)[:5_000])),
     ImageReadError, r"^X\[1\] '{path}': file is truncated"),
    ("random bytes named .png", image(
        lambda c: _write(c.tmp / "noise.png", np.random.default_rng(0).bytes(4096))),
     ImageReadError, r"^X\[1\] '{path}': not an image file"),
    ("random bytes named .dcm", image(
        lambda c: _write(c.tmp / "noise.dcm", np.random.default_rng(1).bytes(4096))),
     ImageReadError, r"^X\[1\] '{path}': not an image file"),
    ("text file", image(lambda c: _write(c.tmp / "report.txt", b"No finding.\n")),
     ImageReadError, r"^X\[1\] '{path}': not an image file"),
    ("DICOM without pixel data", image(lambda c: _dicom(c.tmp / "header.dcm")),
     ImageReadError, r"^X\[1\] '{path}': DICOM file has no pixel data"),
    ("truncated DICOM", image(
        lambda c: _write(c.tmp / "cut.dcm", (c.png.parent / SIIM).read_bytes()[:60_000])),
     ImageReadError, r"^X\[1\] '{path}': DICOM file is truncated or corrupt"),
    ("PNG of 20000x20000 px (header only)", image(
        lambda c: _write(c.tmp / "huge.png", _png_claiming(20_000, 20_000))),
     ImageReadError, r"^X\[1\] '{path}': image is too large: above Pillow's "
                     r"decompression-bomb limit"),
    ("DICOM of 20000x20000 px (header only)", image(
        lambda c: _dicom(c.tmp / "huge.dcm", 20_000, 20_000, b"\0\0")),
     ImageReadError, r"^X\[1\] '{path}': image is too large: 400000000 pixels"),
    ("array with NaN", image(lambda c: np.array([[0.5, np.nan]])),
     ImageReadError, r"^X\[1\] <numpy.ndarray shape=\(1, 2\) dtype=float64>: "
                     r"array contains NaN values"),
    ("unsupported object", image(lambda c: {"image": "chest.png"}),
     ImageReadError, r"^X\[1\] <dict>: unsupported input type 'dict'"),
    ("image of 1x1 px", image(
        lambda c: (Image.new("L", (1, 1), 128).save(c.tmp / "dot.png"), c.tmp / "dot.png")[1]),
     None, None),
    # Embeddings and targets: the message names the argument, row or column.
    ("NaN in embeddings (fit)", lambda c, m: (lambda: _head().fit(_with_nan(c.X), c.Y), None),
     ValueError, r"Input X contains NaN"),
    ("inf in embeddings (predict)", lambda c, m: (
        lambda: _head().fit(c.X, c.Y).predict_proba(_with_nan(c.X, np.inf)), None),
     ValueError, r"Input X contains infinity"),
    ("NaN in embeddings (zero-shot)", lambda c, m: (
        lambda: ZeroShotClassifier(c.model, device="cpu").fit(c.X, c.Y).predict(
            _with_nan(c.X)), None),
     ValueError, r"Input X contains NaN"),
    ("NaN embedding stored in the cache", lambda c, m: (
        lambda: EmbeddingCache(c.tmp / "cache.sqlite").put_many(
            ["a", "b"], _with_nan(c.X[:4])[2:4]), None),
     ValueError, r"vectors\[1\] has non-finite values"),
    ("embeddings of another size", lambda c, m: (
        lambda: ZeroShotClassifier(c.model, device="cpu").fit(c.X[:, :16], c.Y), None),
     ValueError, r"X has 16 features but the checkpoint .* embeds into 32 dimensions"),
    ("folder given as X", lambda c, m: (
        lambda: SigLIPImageEmbedder(c.model, device="cpu").fit_transform(c.tmp), c.tmp),
     TypeError, r"X is a folder \('{path}'\), not a collection of images.*glob"),
    ("Y with a wrong row count (embedding pipeline)", lambda c, m: (
        lambda: Pipeline([("embed", SigLIPImageEmbedder(c.model, device="cpu")),
                          ("head", _head())]).fit([c.tmp / "missing.png"] * 3, c.Y[:2]),
        None),
     ValueError, r"^X has 3 images but y has 2 rows"),
    ("Y with a wrong row count", lambda c, m: (lambda: _head().fit(c.X, c.Y[:-1]), None),
     ValueError, r"inconsistent numbers of samples: \[40, 39\]"),
    ("Y with a wrong row count (zero-shot)", lambda c, m: (
        lambda: ZeroShotClassifier(c.model, device="cpu").fit(c.X, c.Y[:-1]), None),
     ValueError, r"y has 39 rows but X has 40 samples"),
    ("Y with non-binary values", lambda c, m: (
        lambda: _head().fit(c.X, c.Y.replace({"Nodule": {1: 2}})), None),
     ValueError, r"only 0 and 1.*column 'Nodule' holds \[0, 2\]"),
    ("label names that do not match the prompts", lambda c, m: (
        lambda: ConcatFusionClassifier(np.ones((2, 32)), hidden_sizes=(8,), max_epochs=1,
                                       device="cpu").fit(c.X, c.Y), None),
     ValueError, r"prompts has 2 rows but y has 3 labels"),
    ("labels= that do not match Y's columns", lambda c, m: (
        lambda: ZeroShotClassifier(c.model, labels=LABELS[:2], device="cpu").fit(
            c.X, c.Y.to_numpy()), None),
     ValueError, r"y has 3 columns but there are 2 labels"),
    ("empty label name", lambda c, m: (
        lambda: PromptEnsembleEmbedder(c.model, device="cpu").fit(["Mass", " "]), None),
     ValueError, r"X\[1\] = ' ' is not a label name"),
    # Devices.
    ("unknown device", lambda c, m: (
        lambda: SigLIPImageEmbedder(c.model, device="tpu").fit(), None),
     ValueError, r"device='tpu' is not a device name"),
    ("unavailable device", lambda c, m: (
        lambda: _head(device="cuda:7").fit(c.X, c.Y), None),
     ValueError, r"device='cuda:7' was requested but"),
    # Checkpoints: the message names the folder; no pickle or custom code is run.
    ("checkpoint folder without weights", lambda c, m: (
        (folder := _checkpoint_config_only(c)),
        lambda: SigLIPImageEmbedder(folder, device="cpu").fit(), folder)[1:],
     ModelNotAvailableError, r"'{path}' is not a usable checkpoint.*model\.safetensors"),
    ("checkpoint with only a pickle (.bin)", lambda c, m: (
        (folder := _checkpoint_with_pickle_weights(c)),
        lambda: SigLIPImageEmbedder(folder, device="cpu").fit(), folder)[1:],
     ModelNotAvailableError, r"'{path}' holds its weights only as a pickle.*safetensors only"),
    ("empty checkpoint folder", lambda c, m: (
        (folder := c.tmp / "empty-folder", folder.mkdir()),
        lambda: SigLIPImageEmbedder(folder, device="cpu").fit(), folder)[1:],
     ModelNotAvailableError, r"'{path}' is not a usable checkpoint"),
    ("hub model id, offline", lambda c, m: (
        lambda: SigLIPImageEmbedder(DEFAULT_MODEL, device="cpu").fit(), None),
     ModelNotAvailableError,
     re.escape(f"Could not load the checkpoint '{DEFAULT_MODEL}'") + ".*could not be downloaded"),
    ("checkpoint with custom code (auto_map)", lambda c, m: (
        (folder := _checkpoint_with_custom_code(c, m)),
        lambda: SigLIPImageEmbedder(folder, device="cpu").fit(), folder)[1:],
     ModelNotAvailableError, r"'{path}' .*custom code"),
    # Files given to the library.
    ("pickle given to persistence.load", lambda c, m: (
        (path := c.tmp / "model.joblib", joblib.dump(_RunsCode(c.marker), path)),
        lambda: load(path), path)[1:],
     ValueError, r"'{path}' is not a skops file"),
    ("skops file holding a type that could run code", lambda c, m: (
        (path := c.tmp / "pipe.skops",
         save(Pipeline([("shell", FunctionTransformer(func=os.system))]), path)),
        lambda: load(path), path)[1:],
     TypeError, r"Refusing to load '{path}': it holds types that are not trusted: "
                r"\['(posix|nt)\.system'\]"),
    ("cache file that is not a cache", lambda c, m: (
        (path := _write(c.tmp / "notes.sqlite", b"not a database\n" * 10)),
        lambda: _embed_after_a_good_image(c, c.png, cache=path), path)[1:],
     EmbeddingCacheError, r"'{path}' is not a usable embedding cache"),
]

IMAGE_ROWS = [row for row in CATALOGUE if hasattr(row[1], "make_image")]


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
@pytest.mark.parametrize(
    "setup, error, pattern", [pytest.param(*row[1:], id=row[0]) for row in CATALOGUE]
)
def test_catalogue(ctx, monkeypatch, setup, error, pattern):
    action, path = setup(ctx, monkeypatch)
    if error is None:
        out = action()
        assert out.shape == (2, 32) and np.isfinite(out).all()
    else:
        pattern = pattern.replace("{path}", re.escape(str(path)))
        with pytest.raises(error, match=pattern):
            action()
    assert not ctx.marker.exists(), "code carried by the input was run"


def test_on_error_nan_gives_nan_rows_and_one_warning_naming_every_bad_image(ctx):
    """All bad images of the catalogue in one run: a long run is not thrown away."""
    bad = [setup.make_image(ctx) for _, setup, error, _ in IMAGE_ROWS if error is not None]
    X = [ctx.png, *bad, ctx.png]
    embedder = SigLIPImageEmbedder(ctx.model, device="cpu", progress=False, on_error="nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = embedder.transform(X)
    ours = [w for w in caught if issubclass(w.category, EmbeddingWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert f"{len(bad)} of {len(X)} images could not be read" in message
    for index, item in enumerate(bad, start=1):
        named = f"'{item}'" if isinstance(item, Path) else "<"
        assert re.search(r"^  " + re.escape(f"X[{index}] {named}"), message, re.M), index
    assert sorted(embedder.read_errors_) == list(range(1, len(bad) + 1))
    assert np.isnan(out[1:-1]).all()
    assert np.isfinite(out[[0, -1]]).all()
    np.testing.assert_array_equal(out[0], out[-1])
