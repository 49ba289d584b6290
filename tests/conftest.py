"""Shared fixtures: a tiny random SigLIP checkpoint, the bundled data, one torch thread."""

import os

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
