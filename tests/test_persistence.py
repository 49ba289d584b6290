"""Saving fitted estimators: joblib and skops round trips, what the files hold,
loading a GPU-fitted head on the CPU, and refusing files that could run code,
damaged files and decompression bombs."""

import io
import json
import os
import pickle
import re
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from PIL import Image
from skorch.exceptions import DeviceWarning
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skclipxray import (
    BaselineClassifier,
    ConcatFusionClassifier,
    ImageEmbedder,
    PromptEnsembleEmbedder,
    PromptSimilarity,
    SigLIPImageEmbedder,
    TextAnchoredClassifier,
    TipAdapterClassifier,
    WeightedSumClassifier,
    ZeroShotClassifier,
)
from skclipxray.calibration import MultilabelCalibratedClassifierCV
from skclipxray.persistence import TRUSTED_TYPES, PersistenceError, load, save
from skclipxray.thresholds import MultilabelTunedThresholdClassifierCV

SMALL = dict(hidden_sizes=(16,), max_epochs=4, batch_size=32, random_state=0, device="cpu")
LABELS = ["Mass", "Nodule", "Effusion"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 32)).astype(np.float32)
    Y = pd.DataFrame(
        np.column_stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] < 0]).astype(int),
        columns=LABELS,
    )
    return X, Y


def _heads(model_dir):
    prompts = PromptEnsembleEmbedder(model_dir, device="cpu")
    return {
        "baseline": BaselineClassifier(**SMALL, pos_weight="balanced"),
        "concat": ConcatFusionClassifier(prompts, fusion_hidden_sizes=(8,), **SMALL),
        "weighted_sum": WeightedSumClassifier(prompts, **SMALL),
    }


@pytest.fixture(scope="module")
def fitted_heads(tiny_model_dir, data):
    X, Y = data
    return {name: head.fit(X, Y) for name, head in _heads(tiny_model_dir).items()}


def _joblib_round_trip(estimator, folder):
    joblib.dump(estimator, folder / "model.joblib")
    return joblib.load(folder / "model.joblib")


def _skops_round_trip(estimator, folder):
    save(estimator, folder / "model.skops")
    return load(folder / "model.skops")


ROUND_TRIPS = {"joblib": _joblib_round_trip, "skops": _skops_round_trip}


def _modules_in_pickle(payload):
    """Every (module, name) the pickle asks the unpickler to import."""
    found = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(payload)).load()
    return found


# Round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
@pytest.mark.parametrize("name", ["baseline", "concat", "weighted_sum"])
def test_heads_round_trip_with_identical_predictions_and_history(
    fitted_heads, data, tmp_path, name, fmt
):
    X, _ = data
    head = fitted_heads[name]
    loaded = ROUND_TRIPS[fmt](head, tmp_path)
    assert type(loaded) is type(head)
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    assert list(loaded.labels_) == LABELS and loaded.task_ == "multilabel"
    assert loaded.get_params(deep=False).keys() == head.get_params(deep=False).keys()
    # The history survives: per-epoch losses, per-batch entries, learning rates.
    assert len(loaded.net_.history) == len(head.net_.history) == loaded.n_iter_ == 4
    assert loaded.net_.history[:, "train_loss"] == head.net_.history[:, "train_loss"]
    assert loaded.net_.history[:, "event_lr"] == head.net_.history[:, "event_lr"]
    assert (loaded.net_.history[-1, "batches", -1, "train_batch_size"]
            == head.net_.history[-1, "batches", -1, "train_batch_size"])
    # The rebuilt module is the same network with the same weights.
    original = head.net_.module_.state_dict()
    restored = loaded.net_.module_.state_dict()
    assert restored.keys() == original.keys()
    for key in original:
        assert torch.equal(restored[key], original[key]), key


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
@pytest.mark.parametrize("target", ["binary", "multiclass"])
def test_class_weights_and_1d_targets_survive(data, tmp_path, fmt, target):
    X, Y = data
    y = Y["Mass"].to_numpy() if target == "binary" else Y.to_numpy().argmax(axis=1)
    head = BaselineClassifier(**SMALL, pos_weight="balanced").fit(X, y)
    loaded = ROUND_TRIPS[fmt](head, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    criterion = dict(head.net_.criterion_.state_dict())
    assert criterion  # the balanced weights are a buffer of the loss
    for key, value in loaded.net_.criterion_.state_dict().items():
        assert torch.equal(value, criterion[key])


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
def test_pipeline_from_image_paths_round_trips(tiny_model_dir, tmp_path, fmt):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(24):
        path = tmp_path / f"image_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
        paths.append(str(path))
    Y = pd.DataFrame(rng.integers(0, 2, (24, 2)), columns=LABELS[:2])
    pipe = Pipeline([
        ("embed", SigLIPImageEmbedder(tiny_model_dir, device="cpu", progress=False)),
        ("clf", ConcatFusionClassifier(
            PromptEnsembleEmbedder(tiny_model_dir, device="cpu"), **SMALL)),
    ]).fit(paths, Y)
    loaded = ROUND_TRIPS[fmt](pipe, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(paths), pipe.predict_proba(paths))


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
def test_zero_shot_and_prompt_embedder_round_trip(tiny_model_dir, data, tmp_path, fmt):
    X, Y = data
    zero_shot = ZeroShotClassifier(tiny_model_dir, device="cpu").fit(X, Y)
    loaded = ROUND_TRIPS[fmt](zero_shot, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(X), zero_shot.predict_proba(X))
    prompts = PromptEnsembleEmbedder(tiny_model_dir, device="cpu").fit(LABELS)
    loaded = ROUND_TRIPS[fmt](prompts, tmp_path)
    np.testing.assert_array_equal(loaded.transform(None), prompts.transform(None))
    np.testing.assert_array_equal(loaded.transform(["Edema"]), prompts.transform(["Edema"]))


def test_loading_leaves_the_global_torch_rng_untouched(fitted_heads, tmp_path):
    state = torch.random.get_rng_state()
    _skops_round_trip(fitted_heads["weighted_sum"], tmp_path)
    pickle.loads(pickle.dumps(fitted_heads["baseline"]))
    assert torch.equal(torch.random.get_rng_state(), state)


# What the files hold ------------------------------------------------------------------


def test_pickles_of_fitted_heads_hold_no_torch_objects(fitted_heads, tiny_model_dir, data):
    X, Y = data
    prompts = PromptEnsembleEmbedder(tiny_model_dir, device="cpu")
    estimators = [
        *fitted_heads.values(), ZeroShotClassifier(tiny_model_dir).fit(X, Y),
        TextAnchoredClassifier(prompts, device="cpu").fit(X, Y),
        TipAdapterClassifier(prompts, device="cpu").fit(X, Y),
    ]
    for estimator in estimators:
        modules = {module.split(".")[0] for module, _ in _modules_in_pickle(
            pickle.dumps(estimator))}
        assert modules <= {"builtins", "numpy", "pathlib", "skclipxray", "sklearn"}, modules
    # A fitted head holds its weights, not a second copy of skorch's machinery.
    head = fitted_heads["baseline"]
    n_weights = sum(v.numel() for v in head.net_.module_.state_dict().values())
    assert len(pickle.dumps(head)) < 4 * n_weights + 20_000


def test_trusted_types_are_exactly_what_the_estimators_need(fitted_heads, tiny_model_dir, data):
    """TRUSTED_TYPES lists each type skops does not trust that some estimator
    needs, and nothing else (but the other platforms' spellings of paths)."""
    X, Y = data
    prompts = PromptEnsembleEmbedder(tiny_model_dir, device="cpu")
    estimators = [
        *fitted_heads.values(),
        ZeroShotClassifier(tiny_model_dir).fit(X, Y),
        TextAnchoredClassifier(prompts, device="cpu").fit(X, Y),
        TipAdapterClassifier(prompts, device="cpu").fit(X, Y),
        MultilabelCalibratedClassifierCV(TextAnchoredClassifier(device="cpu"), cv=3).fit(X, Y),
        MultilabelTunedThresholdClassifierCV(TextAnchoredClassifier(device="cpu"), cv=3).fit(X, Y),
        PromptSimilarity(prompts).fit(X, Y),
        PromptEnsembleEmbedder(tiny_model_dir).fit(LABELS),
        SigLIPImageEmbedder(tiny_model_dir).fit(),
        ImageEmbedder(tiny_model_dir).fit(),
    ]
    needed = set()
    for estimator in estimators:
        needed.update(sio.get_untrusted_types(data=sio.dumps(estimator)))
    assert needed <= set(TRUSTED_TYPES)
    path_types = {name for name in TRUSTED_TYPES if name.startswith("pathlib.")}
    assert set(TRUSTED_TYPES) - needed <= path_types
    this_platform = f"{type(Path()).__module__}.{type(Path()).__name__}"
    assert this_platform in needed  # tiny_model_dir is a Path


# Devices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
def test_a_head_fitted_on_a_gpu_loads_and_predicts_on_the_cpu(
    tiny_model_dir, data, tmp_path, monkeypatch, fmt
):
    X, Y = data
    head = WeightedSumClassifier(PromptEnsembleEmbedder(tiny_model_dir, device="cpu"), **SMALL)
    expected = head.fit(X, Y).predict_proba(X)
    head.net_.device = "cuda"  # as after a fit on a GPU
    dump = {"joblib": joblib.dump, "skops": save}[fmt]
    reader = {"joblib": joblib.load, "skops": load}[fmt]
    dump(head, tmp_path / "head")
    # This machine has no GPU (simulated where it has one).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="fitted on device 'cuda'.*loaded on the CPU"):
        loaded = reader(tmp_path / "head")
    assert loaded.net_.device == "cpu"
    assert loaded.net_.module_.prompt_vector.device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_a_head_loads_on_its_own_device_without_warning(fitted_heads, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = _skops_round_trip(fitted_heads["concat"], tmp_path)
    assert loaded.net_.device == "cpu"


# Refusals ------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this writes a file: what a malicious pickle would do, harmlessly."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (Path(self.marker), "unpickled")


def test_load_refuses_types_that_could_run_code_and_says_how_to_allow_them(tmp_path):
    pipe = Pipeline([("shell", FunctionTransformer(func=os.system))])
    save(pipe, tmp_path / "pipe.skops")
    function = f"{os.system.__module__}.system"
    with pytest.raises(TypeError, match=(
        re.escape(f"Refusing to load '{tmp_path / 'pipe.skops'}'") + ".*"
        + re.escape(f"not trusted: ['{function}']") + ".*trusted="
    )):
        load(tmp_path / "pipe.skops")
    loaded = load(tmp_path / "pipe.skops", trusted=[function])
    assert loaded.named_steps["shell"].func is os.system


def test_load_never_unpickles(tmp_path):
    marker = tmp_path / "marker.txt"
    joblib.dump(_RunsCode(marker), tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="is not a skops file.*never loads joblib or pickle"):
        load(tmp_path / "model.joblib")
    assert not marker.exists()
    # What load refuses, joblib would have run:
    joblib.load(tmp_path / "model.joblib")
    assert marker.read_text() == "unpickled"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.skops"))):
        load(tmp_path / "none.skops")


# Damaged files and decompression bombs ----------------------------------------------------


@pytest.fixture(scope="module")
def saved_head(data, tmp_path_factory):
    """A fitted head, and the skops file it was saved to."""
    X, Y = data
    head = BaselineClassifier(**SMALL).fit(X, Y)
    path = tmp_path_factory.mktemp("saved") / "head.skops"
    save(head, path)
    return head, path


def _schema(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("schema.json"))


def _net_state(schema):
    """The saved net's entries (device, weights, history) in a head's schema."""
    return schema["content"]["content"]["_net_state"]["content"]


def _weight_member(path, key="body.0.weight"):
    """The archive member holding one of the module's weights."""
    return _net_state(_schema(path))["module_state"]["content"][key]["file"]


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape, descr="<f4"):
    """The header of a ``.npy`` array of ``shape``, without the array."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def _rewrite(source, target, replace=(), compression=zipfile.ZIP_STORED):
    """Copy the skops file ``source`` to ``target``, with the members named in
    ``replace`` given new bytes (or dropped, for None)."""
    replace = dict(replace)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", compression) as new:
        for info in old.infolist():
            content = replace.get(info.filename, old.read(info.filename))
            if content is not None:
                new.writestr(info.filename, content)
    return target


def _with_schema(source, target, edit):
    schema = _schema(source)
    edit(schema)
    return _rewrite(source, target, {"schema.json": json.dumps(schema)})


def _flip_a_byte(source, target, member):
    with zipfile.ZipFile(source) as archive:
        offset = archive.getinfo(member).header_offset
    content = bytearray(Path(source).read_bytes())
    content[offset + 200] ^= 0xFF  # inside the member's data, past its local header
    target.write_bytes(bytes(content))
    return target


def _cut(source, target, n_bytes):
    target.write_bytes(Path(source).read_bytes()[:n_bytes])
    return target


# Each case: how to damage a good file, and what load says (after the file's name).
DAMAGED = {
    "weight of the wrong shape": (
        lambda good, bad: _rewrite(good, bad, {
            _weight_member(good): _npy(np.zeros((16, 33), np.float32))}),
        r"is damaged: its content cannot be rebuilt \(RuntimeError: Error\(s\) in "
        r"loading state_dict for BaselineMLP:\s+size mismatch for body\.0\.weight: "
        r"copying a param with shape torch\.Size\(\[16, 33\]\)"),
    "missing member": (
        lambda good, bad: _rewrite(good, bad, {_weight_member(good): None}),
        r"is damaged: schema\.json refers to 1 member\(s\) the archive does not "
        r"hold: \['{member}'\]\.$"),
    "schema that is not valid JSON": (
        lambda good, bad: _rewrite(good, bad, {
            "schema.json": b"schema"}),
        r"is damaged: its schema\.json is not valid JSON \(JSONDecodeError: Expecting "
        r"value: line 1 column 1 \(char 0\)\)\.$"),
    "schema cut short": (
        lambda good, bad: _rewrite(good, bad, {
            "schema.json": json.dumps(_schema(good))[:5000]}),
        r"is damaged: its schema\.json is not valid JSON \(JSONDecodeError: "),
    "head without its history": (
        lambda good, bad: _with_schema(good, bad, lambda s: _net_state(s).pop("history")),
        r"is damaged: its content cannot be rebuilt \(missing entry 'history' "
        r"\(KeyError\)\)\.$"),
    "no schema.json": (
        lambda good, bad: _rewrite(good, bad, {"schema.json": None}),
        r"is damaged: it has no schema\.json, so it is not a skops file\.$"),
    "array header larger than its data": (
        lambda good, bad: _rewrite(good, bad, {
            _weight_member(good): _npy_header((2**30,)) + bytes(512)}),
        r"is damaged: member '{member}' declares an array of shape \(1073741824,\) "
        r"and dtype float32 \(4294967296 bytes\), but holds 512 bytes of data\.$"),
    "flipped byte in a stored member": (
        lambda good, bad: _flip_a_byte(good, bad, _weight_member(good)),
        r"is damaged: member '{member}' fails its CRC check: its data was altered\.$"),
    "bzip2-compressed members": (
        lambda good, bad: _rewrite(good, bad, compression=zipfile.ZIP_BZIP2),
        r"Refusing to load '{path}': member '[0-9]+\.npy' is compressed with method "
        r"12; only stored and deflated members are read"),
    "file cut short": (
        lambda good, bad: _cut(good, bad, 3000),
        r"is not a skops file \(File is not a zip file\)\. "),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_file_raises_one_error_naming_it_and_what_is_wrong(
    saved_head, tmp_path, case
):
    _, good = saved_head
    damage, message = DAMAGED[case]
    bad = damage(good, tmp_path / "bad.skops")
    member = re.escape(_weight_member(good))
    with pytest.raises(PersistenceError, match=re.escape(repr(str(bad)))) as info:
        load(bad)
    assert re.search(message.format(member=member, path=re.escape(str(bad))),
                     str(info.value)), str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_deflated_file_loads(saved_head, data, tmp_path):
    """Compressed members are checked, then loaded as usual."""
    head, _ = saved_head
    path = tmp_path / "deflated.skops"
    sio.dump(head, path, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    np.testing.assert_array_equal(load(path).predict_proba(data[0]),
                                  head.predict_proba(data[0]))


def test_max_bytes_bounds_what_the_members_declare(saved_head, data, tmp_path):
    head, path = saved_head
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    with pytest.raises(PersistenceError, match=(
        re.escape(f"Refusing to load {str(path)!r}: its members would take {total} "
                  f"bytes once decompressed, above max_bytes={total - 1} (the largest, "
                  "'schema.json', ") + ".*If you trust the file, pass a larger max_bytes"
    )):
        load(path, max_bytes=total - 1)
    for max_bytes in [total, None]:
        np.testing.assert_array_equal(load(path, max_bytes=max_bytes).predict_proba(
            data[0]), head.predict_proba(data[0]))
    for wrong in [-1, 1.5, True, "1"]:
        with pytest.raises(ValueError, match=re.escape(
            f"max_bytes must be a non-negative integer or None, got {wrong!r}."
        )):
            load(path, max_bytes=wrong)


def _write_zeros(member, n_bytes, chunk=1 << 24):
    """Stream ``n_bytes`` zero bytes into an open member, never all in memory."""
    zeros = bytes(chunk)
    for _ in range(n_bytes // chunk):
        member.write(zeros)
    member.write(bytes(n_bytes % chunk))


def test_a_member_longer_than_it_declares_is_not_read_past_its_size(saved_head, tmp_path):
    """A weight whose directory entry declares the real array, with its CRC,
    but whose deflated stream goes on for 256 MiB of zeros: zipfile alone
    would decompress them all, and load the array as if nothing were wrong."""
    _, good = saved_head
    name = _weight_member(good)
    bad = tmp_path / "longer.skops"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(
        bad, "w", zipfile.ZIP_DEFLATED, compresslevel=1
    ) as new:
        for info in old.infolist():
            content = old.read(info.filename)
            if info.filename != name:
                new.writestr(info.filename, content)
                continue
            with new.open(name, "w") as member:
                member.write(content)
                _write_zeros(member, 256 << 20)
            # The directory declares only the real array, with its CRC.
            declared = new.getinfo(name)
            declared.file_size, declared.CRC = len(content), zlib.crc32(content)
    tracemalloc.start()
    try:
        with pytest.raises(PersistenceError, match=re.escape(
            f"{str(bad)!r} is damaged: member {name!r} holds more than the "
            f"{declared.file_size} bytes it declares."
        )):
            load(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak


@pytest.fixture(scope="module")
def bomb(saved_head, tmp_path_factory):
    """A valid file whose first weight is (2**30,) float32 zeros: 4 GiB, deflated
    to a few megabytes, written in chunks."""
    _, good = saved_head
    name = _weight_member(good)
    path = tmp_path_factory.mktemp("bomb") / "bomb.skops"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(
        path, "w", zipfile.ZIP_DEFLATED, compresslevel=1
    ) as new:
        for info in old.infolist():
            if info.filename != name:
                new.writestr(info.filename, old.read(info.filename))
                continue
            with new.open(name, "w", force_zip64=True) as member:
                member.write(_npy_header((2**30,)))
                _write_zeros(member, 4 * 2**30)
    return path


_LOAD_AND_MEASURE = r"""
import resource, sys, time
import skops.io  # imported by load: not part of what is measured
from skclipxray.persistence import PersistenceError, load

def peak():
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss in bytes or KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

before = peak()
try:  # should the check fail, stop at 2 GiB more address space rather than at 12 GB
    with open("/proc/self/statm") as statm:
        limit = int(statm.read().split()[0]) * resource.getpagesize() + 2**31
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
except (OSError, ValueError):
    pass
start = time.perf_counter()
try:
    load(sys.argv[1])
except PersistenceError as exc:
    print(exc)
print(time.perf_counter() - start, peak() - before)
"""


def test_a_decompression_bomb_is_refused_at_once_in_little_memory(bomb):
    assert bomb.stat().st_size < 32 << 20  # a few megabytes on disk
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, str(bomb)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    message, figures = done.stdout.strip().splitlines()
    assert re.fullmatch(
        re.escape(f"Refusing to load {str(bomb)!r}: its members would take ")
        + r"[0-9]+ bytes once decompressed, above max_bytes=1073741824 \(the "
        r"largest, '[0-9]+\.npy', 4294967424 bytes\)\. Nothing was decompressed\. .*",
        message), message
    seconds, grown = map(float, figures.split())
    assert seconds < 10, seconds
    assert grown < 200 << 20, grown
