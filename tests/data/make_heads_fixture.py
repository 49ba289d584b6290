"""Write ``heads-0.1.skops`` and ``heads-0.1.npz``: fitted estimators as skclipxray 0.1 saved them.

``tests/test_classifiers.py`` loads the skops file with the current code
and compares its predictions with those recorded in the ``.npz``: a file saved
by an earlier version must keep loading, and predict the same.

The skops file holds one dict, written as :func:`skclipxray.persistence.save`
writes it, but with its members deflated (:func:`skclipxray.persistence.load`
reads both; deflated, the file takes a tenth of the space):

- ``"baseline"``: :class:`~skclipxray.BaselineClassifier`, multilabel y (a
  DataFrame of 3 labels), ``pos_weight="balanced"``;
- ``"baseline_multiclass"``: :class:`~skclipxray.BaselineClassifier`, 1-D y of
  3 string classes, per-class weights, ``lr_schedule="plateau"``;
- ``"concat"``: :class:`~skclipxray.ConcatFusionClassifier` with an array of
  prompts, early stopping;
- ``"weighted_sum"``: :class:`~skclipxray.WeightedSumClassifier` with a
  :class:`~skclipxray.PromptEnsembleEmbedder` as prompts, binary 1-D y;
- ``"zero_shot"``: :class:`~skclipxray.ZeroShotClassifier` with negative
  templates;
- ``"prompts"``: a fitted :class:`~skclipxray.PromptEnsembleEmbedder`.

The checkpoint is the tiny random one of :func:`skclipxray.testing.make_tiny_siglip`
(``seed=0``), written to a temporary folder and named by the relative path
``tiny-siglip``; the fitted estimators do not need it to predict.

The ``.npz`` holds the inputs (``X``: 48 x 8 for the heads, ``X_zero_shot``:
48 x 32 for the zero-shot classifier) and, for each estimator, the outputs of
the code that saved it: ``<name>_proba`` (``predict_proba``), ``<name>_predict``
(``predict``), and ``prompts_embeddings`` (``transform(None)``).

Run from the repository root, with the version of skclipxray whose files the
fixture stands for::

    python tests/data/make_heads_fixture.py [OUTPUT_FOLDER]

Never regenerate ``heads-0.1.*`` with a later version: the files record what
0.1 wrote, and their point is that later code reads them.
"""

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from skclipxray import (
    BaselineClassifier,
    ConcatFusionClassifier,
    PromptEnsembleEmbedder,
    WeightedSumClassifier,
    ZeroShotClassifier,
)
from skclipxray.prompts import NEGATIVE_TEMPLATES
from skclipxray.testing import make_tiny_siglip

VERSION = "0.1"
LABELS = ["Mass", "Nodule", "Effusion"]
CHECKPOINT = "tiny-siglip"  # relative: the files hold no path of this machine


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 8)).astype(np.float32)
    Y = pd.DataFrame(
        np.column_stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] < 0]).astype(int),
        columns=LABELS,
    )
    classes = np.array(["clear", "effusion", "mass"])[np.digitize(X[:, 3], [-0.4, 0.4])]
    binary = np.where(X[:, 4] + 0.3 * X[:, 5] > 0, "sick", "healthy")
    X_zero_shot = rng.normal(size=(48, 32)).astype(np.float32)
    return X, Y, classes, binary, X_zero_shot


def make_fixture(out):
    import skops.io as skops_io
    import torch

    torch.set_num_threads(1)
    out = Path(out).resolve()
    X, Y, classes, binary, X_zero_shot = _data()
    small = dict(hidden_sizes=(8,), max_epochs=3, batch_size=16, device="cpu")
    prompts = np.random.default_rng(1).normal(size=(3, 6))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            make_tiny_siglip(CHECKPOINT, seed=0)
            fitted = {
                "baseline": BaselineClassifier(
                    **small, pos_weight="balanced", random_state=0
                ).fit(X, Y),
                "baseline_multiclass": BaselineClassifier(
                    **{**small, "hidden_sizes": (8, 4)}, pos_weight="balanced",
                    lr_schedule="plateau", random_state=1,
                ).fit(X, classes),
                "concat": ConcatFusionClassifier(
                    prompts, **small, fusion_hidden_sizes=(4,), early_stopping=True,
                    validation_fraction=0.25, random_state=2,
                ).fit(X, Y),
                "weighted_sum": WeightedSumClassifier(
                    PromptEnsembleEmbedder(CHECKPOINT, device="cpu"), **small,
                    random_state=3,
                ).fit(X, binary),
                "zero_shot": ZeroShotClassifier(
                    CHECKPOINT, labels=LABELS, negative_templates=NEGATIVE_TEMPLATES,
                    device="cpu",
                ).fit(X_zero_shot),
                "prompts": PromptEnsembleEmbedder(CHECKPOINT, device="cpu").fit(LABELS),
            }
        finally:
            os.chdir(here)
    outputs = {"X": X, "X_zero_shot": X_zero_shot}
    for name, estimator in fitted.items():
        if name == "prompts":
            outputs["prompts_embeddings"] = estimator.transform(None)
            continue
        inputs = X_zero_shot if name == "zero_shot" else X
        outputs[f"{name}_proba"] = estimator.predict_proba(inputs)
        outputs[f"{name}_predict"] = np.asarray(estimator.predict(inputs))
    # persistence.save, deflated.
    skops_io.dump(fitted, out / f"heads-{VERSION}.skops", compression=zipfile.ZIP_DEFLATED)
    np.savez_compressed(out / f"heads-{VERSION}.npz", **outputs)
    return out / f"heads-{VERSION}.skops", out / f"heads-{VERSION}.npz"


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent
    for path in make_fixture(target):
        print(f"{path}: {path.stat().st_size} bytes")
