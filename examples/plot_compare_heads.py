"""
Compare the three heads and the zero-shot floor
===============================================

Embed once, then fit every head on the same embeddings: the zero-shot
classifier (SigLIP's own image-text scores, no training) is the floor each
trained head must beat. ROC curves of all four are drawn per pathology, then
the macro ROC AUC against the number of training images. A model keeps its
colour in both plots.
"""

import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.base import clone

from skclipxray import (
    BaselineClassifier,
    ConcatFusionClassifier,
    PromptEnsembleEmbedder,
    SigLIPImageEmbedder,
    WeightedSumClassifier,
    ZeroShotClassifier,
)
from skclipxray.datasets import load_nih_chestxray14, train_test_split_by_patient
from skclipxray.metrics import multilabel_report
from skclipxray.plotting import plot_roc_curves, plot_train_size_curves
from skclipxray.testing import demo_model, make_synthetic_nih

model, _ = demo_model()
root = tempfile.mkdtemp()
make_synthetic_nih(root, n_images=160)
data = load_nih_chestxray14(root)
X = SigLIPImageEmbedder(model, progress=False).fit_transform(data.paths)
train, test = train_test_split_by_patient(
    range(len(X)), groups=data.groups, test_size=0.3, random_state=0
)
prompts = PromptEnsembleEmbedder(model)
head_options = dict(hidden_sizes=(128,), max_epochs=40, random_state=0)
heads = {
    "zero-shot": ZeroShotClassifier(model),
    "baseline": BaselineClassifier(**head_options),
    "concat-fusion": ConcatFusionClassifier(prompts=prompts, **head_options),
    "weighted-sum": WeightedSumClassifier(prompts=prompts, **head_options),
}
Y_test = data.Y.iloc[test]
scores, rows = {}, {}
for name, head in heads.items():
    head.fit(X[train], data.Y.iloc[train])
    scores[name] = head.predict_proba(X[test])
    rows[name] = multilabel_report(Y_test, scores[name])[1]
print(pd.DataFrame(rows).T[["roc_auc_macro", "f1_macro", "hamming_loss"]].round(3))

# %%
# One panel per pathology, one line per model, its AUC in the legend. A
# pathology with no positive image in the test set has no curve.
plot_roc_curves(Y_test, scores)
plt.show()

# %%
# Refit each head on smaller random subsets of the training images; the last
# point is the fit above, on all of them. The zero-shot classifier learns
# nothing from them: its line is flat.
subset = np.random.default_rng(0).permutation(train)
curve = {
    n: {
        name: multilabel_report(
            Y_test, clone(head).fit(X[subset[:n]], data.Y.iloc[subset[:n]]).predict_proba(X[test])
        )[1]["roc_auc_macro"]
        for name, head in heads.items()
    }
    for n in (30, 60)
}
curve[len(train)] = {name: row["roc_auc_macro"] for name, row in rows.items()}
curve = pd.DataFrame.from_dict(curve, orient="index")
print(curve.round(3))
plot_train_size_curves(curve)
plt.show()
# sphinx_gallery_thumbnail_number = 2
