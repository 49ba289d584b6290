"""Same inputs and random_state, two fresh processes: byte-identical results."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

# Embeds the images, the label prompts, fits two heads with random_state=0 and
# the zero-shot classifier, and writes every result as .npy.
_CHILD = """
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skclipxray import (BaselineClassifier, ConcatFusionClassifier,
                        PromptEnsembleEmbedder, SigLIPImageEmbedder, ZeroShotClassifier)

model, images, out = sys.argv[1:]
out = Path(out)
paths = sorted(str(path) for path in Path(images).glob("*.png"))
Y = pd.read_csv(Path(images) / "labels.csv")
embeddings = SigLIPImageEmbedder(model, device="cpu", progress=False).fit_transform(paths)
prompts = PromptEnsembleEmbedder(model, device="cpu")
head = dict(hidden_sizes=(16,), max_epochs=5, batch_size=16, random_state=0, device="cpu",
            early_stopping=True, validation_fraction=0.2)
results = {
    "embeddings": embeddings,
    "prompts": prompts.fit_transform(list(Y.columns)),
    "baseline": BaselineClassifier(**head).fit(embeddings, Y).predict_proba(embeddings),
    "concat": ConcatFusionClassifier(prompts, **head).fit(embeddings, Y)
              .predict_proba(embeddings),
    "zero_shot": ZeroShotClassifier(model, device="cpu").fit(embeddings, Y)
                 .predict_proba(embeddings),
}
for name, values in results.items():
    np.save(out / f"{name}.npy", values)
"""

RESULTS = ["embeddings", "prompts", "baseline", "concat", "zero_shot"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(
            folder / f"image_{i:02d}.png")
    labels = rng.integers(0, 2, (40, 3))
    np.savetxt(folder / "labels.csv", labels, fmt="%d", delimiter=",",
               header="Mass,Nodule,Effusion", comments="")
    return folder


def test_two_processes_give_byte_identical_embeddings_and_predictions(
    tiny_model_dir, images, tmp_path
):
    outputs = [tmp_path / "first", tmp_path / "second"]
    children = []
    for hash_seed, out in zip(["1", "2"], outputs):
        out.mkdir()
        # Different hash seeds: nothing may depend on the order of a set or dict.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": hash_seed,
               "OMP_NUM_THREADS": "1"}  # the two run side by side
        children.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_CHILD), str(tiny_model_dir),
             str(images), str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    for child in children:
        try:
            _, stderr = child.communicate(timeout=300)
        finally:
            child.kill()
        assert child.returncode == 0, stderr.decode()[-3000:]

    for name in RESULTS:
        first, second = ((out / f"{name}.npy").read_bytes() for out in outputs)
        assert first == second, name
    # The results are not trivially equal: they vary across images and heads.
    embeddings = np.load(outputs[0] / "embeddings.npy")
    assert embeddings.shape == (40, 32) and np.isfinite(embeddings).all()
    assert len(np.unique(embeddings.round(4), axis=0)) == 40
    baseline, concat = (np.load(outputs[0] / f"{name}.npy") for name in ["baseline", "concat"])
    assert baseline.shape == concat.shape == (40, 3)
    assert not np.array_equal(baseline, concat)
    assert baseline.std(axis=0).min() > 0
