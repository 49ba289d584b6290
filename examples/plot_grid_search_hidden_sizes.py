"""
Grid search over hidden sizes
=============================

``GridSearchCV`` over the head's ``hidden_sizes``, scored by macro ROC AUC.
GridSearchCV's default score on multilabel targets is the exact match ratio,
which is near zero for 14 labels: always pass ``scoring=``.

The embedder's cache means each image is embedded once, however many fits
the grid search makes.
"""

import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline

from skclipxray import BaselineClassifier, SigLIPImageEmbedder
from skclipxray.cache import EmbeddingCache
from skclipxray.datasets import load_nih_chestxray14
from skclipxray.metrics import multilabel_scorers
from skclipxray.testing import demo_model, make_synthetic_nih

model, _ = demo_model()
root = tempfile.mkdtemp()
make_synthetic_nih(root, n_images=100)
data = load_nih_chestxray14(root)

pipe = Pipeline([
    ("embed", SigLIPImageEmbedder(model, cache=f"{root}/embeddings.sqlite", progress=False)),
    ("clf", BaselineClassifier(max_epochs=30, random_state=0)),
])
search = GridSearchCV(
    pipe,
    {"clf__hidden_sizes": [(64,), (128, 64)]},
    scoring=multilabel_scorers(),
    refit="roc_auc_macro",
    cv=GroupKFold(n_splits=3),
)
search.fit(data.paths, data.Y, groups=data.groups)
print("best:", search.best_params_, f"macro ROC AUC {search.best_score_:.3f}")
with EmbeddingCache(f"{root}/embeddings.sqlite") as cache:
    print(f"{len(data.paths)} images, {len(cache)} embeddings in the cache, "
          f"for {3 * 2 + 1} fits and {3 * 2} scorings")

# %%
# Each candidate's score on every fold (dots) and their mean (bar).
results = search.cv_results_
candidates = [str(params["clf__hidden_sizes"]) for params in results["params"]]
folds = np.array([results[f"split{k}_test_roc_auc_macro"] for k in range(3)])
figure, ax = plt.subplots(figsize=(5, 4), layout="constrained")
ax.bar(candidates, results["mean_test_roc_auc_macro"], color="lightgrey", label="mean")
for k, scores in enumerate(folds):
    ax.plot(candidates, scores, "o", label=f"fold {k}")
ax.set(xlabel="hidden_sizes", ylabel="macro ROC AUC (validation)", ylim=(0, 1))
ax.legend(loc="lower right")
plt.show()
