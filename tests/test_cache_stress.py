"""One cache under concurrent embedding runs, writer processes and files swapped mid-run.

After a bounded time of such traffic, every stored row must be the embedding
of the content its key names, and SQLite must find the file intact.
"""

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
from PIL import Image

from skclipxray import SigLIPImageEmbedder
from skclipxray.embedders import EmbeddingWarning

#: Seconds of concurrent traffic.
DURATION = 8.0
N_CONTENTS = 6
N_PATHS = 4

# A writer in another process: embeds the shared files into the shared cache
# until the deadline, ignoring the files that are mid-swap.
_WRITER = """
import sys, time, warnings
from skclipxray import SigLIPImageEmbedder
model, cache, deadline, *paths = sys.argv[1:]
embedder = SigLIPImageEmbedder(model, cache=cache, device="cpu", dtype="float32", progress=False,
                               on_error="nan", batch_size=2)
warnings.simplefilter("ignore")
while time.time() < float(deadline):
    embedder.transform(paths)
"""


def _png_bytes(seed):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(40, 36), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _rows(cache_path):
    with sqlite3.connect(cache_path) as connection:
        return connection.execute("SELECT key, dim, vector FROM embeddings").fetchall()


def _swapper(paths, contents, deadline, rng):
    """Replace the files again and again: atomically, or rewritten in place."""
    while time.time() < deadline:
        path = paths[rng.integers(len(paths))]
        data = contents[rng.integers(len(contents))]
        if rng.random() < 0.5:
            temporary = f"{path}.{threading.get_ident()}.tmp"
            with open(temporary, "wb") as fh:
                fh.write(data)
            os.replace(temporary, path)
        else:
            with open(path, "wb") as fh:  # readers may see it half-written
                fh.write(data[: len(data) // 2])
                fh.flush()
                fh.write(data[len(data) // 2:])
        time.sleep(rng.random() * 0.002)


def _embedding_loop(model, cache, paths, deadline, errors):
    embedder = SigLIPImageEmbedder(model, cache=cache, device="cpu", progress=False,
                                   on_error="nan", batch_size=2)
    try:
        while time.time() < deadline:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmbeddingWarning)
                embedder.transform(paths)
    except Exception as exc:  # reported by the test
        errors.append(exc)


def test_concurrent_runs_and_swapped_files_leave_only_true_rows(
    tiny_model_dir, tmp_path, one_torch_thread
):
    contents = [_png_bytes(seed) for seed in range(N_CONTENTS)]
    paths = [str(tmp_path / f"scan_{i}.png") for i in range(N_PATHS)]
    for path, data in zip(paths, contents):
        with open(path, "wb") as fh:
            fh.write(data)
    cache = tmp_path / "shared.sqlite"

    deadline = time.time() + DURATION
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tiny_model_dir), str(cache), str(deadline), *paths],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
    )
    errors = []
    threads = [
        threading.Thread(target=_swapper,
                         args=(paths, contents, deadline, np.random.default_rng(0))),
        *(threading.Thread(target=_embedding_loop,
                           args=(tiny_model_dir, cache, paths, deadline, errors))
          for _ in range(2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DURATION + 120)
    _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr.decode()[-2000:]
    assert not errors, errors

    # The truth: each content embedded alone, in its own fresh cache.
    truth = {}
    for i, data in enumerate(contents):
        folder = tmp_path / f"truth_{i}"
        folder.mkdir()
        (folder / "scan.png").write_bytes(data)
        SigLIPImageEmbedder(tiny_model_dir, cache=folder / "one.sqlite", device="cpu",
                            progress=False, batch_size=2).transform([str(folder / "scan.png")])
        ((key, dim, vector),) = _rows(folder / "one.sqlite")
        truth[key] = np.frombuffer(vector, dtype="<f4")

    rows = _rows(cache)
    assert len(rows) >= N_PATHS  # the traffic stored something
    for key, dim, vector in rows:
        assert key in truth, "a row whose key names none of the contents"
        stored = np.frombuffer(vector, dtype="<f4")
        assert dim == len(stored)
        np.testing.assert_allclose(stored, truth[key], rtol=1e-5, atol=1e-6)
    with sqlite3.connect(cache) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
