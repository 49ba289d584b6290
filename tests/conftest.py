"""Shared fixtures: a tiny random SigLIP checkpoint, the bundled data, one torch thread,
read-only files."""

import math
import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a tiny random SigLIP checkpoint (32 px, 32-d embeddings)."""
    from skclipxray.testing import make_tiny_siglip

    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), seed=0)


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
