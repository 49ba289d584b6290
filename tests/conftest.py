"""Shared fixtures: a tiny random SigLIP checkpoint, the bundled data, one torch thread,
read-only files."""

import math
import os
import shutil
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(autouse=True, scope="session")
def float32_checkpoints():
    """``dtype="auto"`` is float32 on the CPU in this suite, whatever the CPU.

    The suite compares embeddings with transformers' own float32 forward
    passes; on a CPU with bfloat16 units, ``"auto"`` would run the
    checkpoints in bfloat16 (tests/test_backbone.py tests that choice, with
    the CPU's features mocked both ways).
    """
    import skclipxray._device

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skclipxray._device, "_BFLOAT16_PROBES", ())
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a tiny random SigLIP checkpoint (32 px, 32-d embeddings)."""
    from skclipxray.testing import make_tiny_siglip

    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), seed=0)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP checkpoint (32 px, 16-d projected embeddings)."""
    from skclipxray.testing import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_siglip2_dir(tmp_path_factory):
    """A tiny random SigLIP 2 checkpoint (NaFlex patches of 16 px, 32-d embeddings)."""
    from skclipxray.testing import make_tiny_siglip2

    return make_tiny_siglip2(tmp_path_factory.mktemp("tiny-siglip2") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory):
    """A tiny random image-only DINOv2 checkpoint (28 px, 32-d CLS token)."""
    from skclipxray.testing import make_tiny_dinov2

    return make_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2") / "checkpoint")


@pytest.fixture(scope="session")
def data_dir():
    """Folder of the real radiographs and metadata excerpts bundled with the tests."""
    from pathlib import Path

    return Path(DATA_DIR)


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread, restoring the previous count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def _unwritable(path):
    """Make a file or folder unwritable by this process, root included."""
    if getattr(os, "geteuid", lambda: -1)() == 0:  # root ignores permission bits
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("as root, a file is made read-only with chattr +i, which failed")
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: E731
    else:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        undo = lambda: os.chmod(path, mode)  # noqa: E731
    try:
        assert not os.access(path, os.W_OK)
        yield
    finally:
        undo()


@pytest.fixture
def unwritable():
    """``with unwritable(path):`` makes a file or folder read-only for its duration."""
    return _unwritable


#: logit_scale and logit_bias of the ``scored_model_dir`` checkpoint.
LOGIT_SCALE, LOGIT_BIAS = math.log(8.0), -1.5


@pytest.fixture(scope="session")
def scored_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint with a non-trivial logit scale and bias.

    A freshly initialised SiglipModel has logit_scale = logit_bias = 0, which
    would leave both untested.
    """
    import torch
    from transformers import SiglipModel

    folder = tmp_path_factory.mktemp("scored-siglip") / "checkpoint"
    shutil.copytree(tiny_model_dir, folder)
    model = SiglipModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)
    model.save_pretrained(folder)
    return folder


class FixedScoreClassifier(ClassifierMixin, BaseEstimator):
    """A multilabel "classifier" whose probabilities are ``sigmoid(sharpness * X + shift)``.

    Column ``k`` of ``X`` is label ``k``'s logit. With labels drawn at
    ``sigmoid(X)``, a sharpness other than 1 or a shift other than 0 makes
    deliberately miscalibrated probabilities whose ranking is exact. ``fit``
    learns nothing, so every fold gives the same map.
    """

    def __init__(self, sharpness=4.0, shift=0.0):
        self.sharpness = sharpness
        self.shift = shift

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def fit(self, X, y):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def decision_function(self, X):
        return self.sharpness * np.asarray(X, dtype=np.float64) + self.shift

    def predict_proba(self, X):
        return expit(self.decision_function(X))


def calibration_world(n_samples, n_labels=3, random_state=0):
    """Logits ``X`` and labels drawn at ``sigmoid(X)``: scores calibrated by construction."""
    rng = np.random.default_rng(random_state)
    X = rng.normal(scale=1.5, size=(n_samples, n_labels))
    Y = (rng.random(X.shape) < expit(X)).astype(np.int64)
    return X, Y


class GroupRecorder(ClassifierMixin, BaseEstimator):
    """Records the patients (column 0 of X) each clone is trained on and asked about."""

    log = []

    def fit(self, X, y):
        self.trained_on_ = set(np.asarray(X)[:, 0].astype(int))
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict_proba(self, X):
        GroupRecorder.log.append((self.trained_on_, set(np.asarray(X)[:, 0].astype(int))))
        return np.full((len(X), 2), 0.5) + 0.01 * np.asarray(X)[:, 1:3]
