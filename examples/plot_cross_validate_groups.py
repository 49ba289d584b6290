"""
Cross-validation by patient with Hamming loss
=============================================

Images of one patient look alike: they must never sit on both sides of a
split. ``GroupKFold`` with patient ids as ``groups`` keeps them together.
Hamming loss is negated (``neg_hamming_loss``), as scikit-learn does for every
loss, so that greater is better.
"""

import tempfile

import matplotlib.pyplot as plt
from sklearn.model_selection import GroupKFold, cross_validate
from sklearn.pipeline import Pipeline

from skclipxray import SigLIPImageEmbedder, WeightedSumClassifier, PromptEnsembleEmbedder
from skclipxray.datasets import load_nih_chestxray14
from skclipxray.metrics import multilabel_scorers
from skclipxray.testing import demo_model, make_synthetic_nih

model, _ = demo_model()
root = tempfile.mkdtemp()
make_synthetic_nih(root, n_images=100)
data = load_nih_chestxray14(root)

pipe = Pipeline([
    ("embed", SigLIPImageEmbedder(model, cache=f"{root}/embeddings.sqlite", progress=False)),
    ("clf", WeightedSumClassifier(prompts=PromptEnsembleEmbedder(model),
                                  hidden_sizes=(64,), max_epochs=30, random_state=0)),
])
scorers = multilabel_scorers()
scores = cross_validate(
    pipe, data.paths, data.Y, groups=data.groups, cv=GroupKFold(n_splits=4),
    scoring={name: scorers[name] for name in ("neg_hamming_loss", "roc_auc_macro", "f1_macro")},
)
for name in ("test_neg_hamming_loss", "test_roc_auc_macro", "test_f1_macro"):
    print(f"{name:>24}: {scores[name].mean():.3f} +/- {scores[name].std():.3f}")

# %%
# The score of each fold: how much they vary says how far to trust the mean.
figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name in ("test_neg_hamming_loss", "test_roc_auc_macro", "test_f1_macro"):
    ax.plot(range(1, 5), scores[name], marker="o", label=name.removeprefix("test_"))
ax.set(xlabel="fold (test patients)", ylabel="score", xticks=range(1, 5))
ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
plt.show()
