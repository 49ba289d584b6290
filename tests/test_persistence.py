"""Saving fitted estimators: joblib and skops round trips, what the files hold,
loading a GPU-fitted head on the CPU, and refusing files that could run code."""

import io
import os
import pickle
import re
import warnings
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
    PromptEnsembleEmbedder,
    SigLIPImageEmbedder,
    WeightedSumClassifier,
    ZeroShotClassifier,
)
from skclipxray.persistence import TRUSTED_TYPES, load, save

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
    estimators = [*fitted_heads.values(), ZeroShotClassifier(tiny_model_dir).fit(X, Y)]
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
    estimators = [
        *fitted_heads.values(),
        ZeroShotClassifier(tiny_model_dir).fit(X, Y),
        PromptEnsembleEmbedder(tiny_model_dir).fit(LABELS),
        SigLIPImageEmbedder(tiny_model_dir).fit(),
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
